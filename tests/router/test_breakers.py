"""Circuit breakers per provider instance and per (provider, model), through RouterService."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh

OPEN_SECONDS = 0.6
MOCK_CONFIG = {
    "models": [
        {"name": "fragile"},
        {"name": "locked", "failures": [{"code": "UNAUTHENTICATED", "rate": 1, "message": "invalid api key"}]},
        {"name": "sibling"},
        {"name": "backup"},
    ]
}
ROUTING = {
    "providers": {
        "mock": {"kind": "mock"},
        "vault": {"kind": "mock", "service": "llmmesh-provider-mock"},
        "spare": {"kind": "mock", "service": "llmmesh-provider-mock"},
    },
    "defaults": {
        "max_retries": 0,
        "breaker": {"consecutive_failures": 3, "failure_rate": 1.0, "min_calls": 1000, "open_s": OPEN_SECONDS},
        "provider_breaker": {"consecutive_failures": 50, "failure_rate": 1.0, "min_calls": 1000},
    },
    "models": {
        "fragile": {"provider": "mock"},
        "locked": {"provider": "vault", "fallbacks": ["backup"]},
        "sibling": {"provider": "vault"},
        "backup": {"provider": "spare"},
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("breakers")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _request(model: str, **mock: object) -> rpb.ChatRequest:
    extensions = struct_pb2.Struct()
    if mock:
        extensions.update({"mock": mock})
    return rpb.ChatRequest(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])],
        extensions=extensions,
    )


async def _error(stub, request) -> MeshError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(request, timeout=5)
    return MeshError.from_rpc_error(caught.value)


def _calls(mesh, model: str) -> int:
    return len([e for e in mesh.events("start") if e["model"] == model])


class TestBreakerLifecycle:
    async def test_opens_skips_half_opens_and_closes(self, stub, mesh) -> None:
        """3 failures open the breaker; calls are skipped without reaching the mock; after the open time
        one probe goes through and its success closes the breaker."""
        mesh.clear_events()
        for _ in range(3):
            assert (
                await _error(stub, _request("fragile", fail_code="UNAVAILABLE"))
            ).code == grpc.StatusCode.UNAVAILABLE
        skipped = await _error(stub, _request("fragile"))
        assert skipped.reason == "CIRCUIT_OPEN"
        assert "circuit open for mock/fragile" in skipped.message
        assert _calls(mesh, "fragile") == 3
        await asyncio.sleep(OPEN_SECONDS + 0.1)
        probe = await stub.Chat(_request("fragile"), timeout=5)
        assert probe.attempts[0].outcome == rpb.ATTEMPT_OUTCOME_SUCCEEDED
        after = await stub.Chat(_request("fragile"), timeout=5)
        assert after.model == "fragile"
        assert _calls(mesh, "fragile") == 5

    async def test_failed_probe_reopens(self, stub, mesh) -> None:
        """A failing half-open probe opens the breaker again at once."""
        for _ in range(3):
            await _error(stub, _request("fragile", fail_code="UNAVAILABLE"))
        await asyncio.sleep(OPEN_SECONDS + 0.1)
        mesh.clear_events()
        assert (await _error(stub, _request("fragile", fail_code="UNAVAILABLE"))).reason == "MOCK_UNAVAILABLE"
        assert (await _error(stub, _request("fragile"))).reason == "CIRCUIT_OPEN"
        assert _calls(mesh, "fragile") == 1

    async def test_caller_errors_do_not_count(self, stub) -> None:
        """INVALID_ARGUMENT from the provider (the caller's mistake) never opens the breaker."""
        for _ in range(5):
            assert (
                await _error(stub, _request("backup", fail_code="INVALID_ARGUMENT"))
            ).code == grpc.StatusCode.INVALID_ARGUMENT
        assert (await stub.Chat(_request("backup"), timeout=5)).model == "backup"


class TestCredentialErrors:
    async def test_bad_key_opens_the_provider_breaker_for_every_model(self, stub, mesh) -> None:
        """UNAUTHENTICATED opens the provider's breaker at once: its other models are skipped too,
        and fallbacks on another provider still answer."""
        mesh.clear_events()
        first = await stub.Chat(_request("locked"), timeout=5)
        assert first.model == "backup"
        assert first.attempts[0].moved_on_because == "vault rejected its credentials"
        error = await _error(stub, _request("sibling"))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
        assert "circuit open for provider vault" in error.message
        assert _calls(mesh, "sibling") == 0

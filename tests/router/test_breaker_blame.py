"""Breakers count by blame, and every attempt releases what it took, through RouterService.

A cancelled stream that was a half-open probe frees the probe (issue 15,
finding 1); the caller's own short deadline never counts against the
provider (finding 2); a probe out past its budget is lost and the next
probe may go (item 2).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh

OPEN_SECONDS = 0.5
MOCK_CONFIG = {"models": [{"name": "probed"}, {"name": "slowish"}, {"name": "hung"}]}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "defaults": {
        "max_retries": 0,
        "min_attempt_budget_ms": 20,
        "breaker": {"consecutive_failures": 3, "failure_rate": 1.0, "min_calls": 1000, "open_s": OPEN_SECONDS},
        "provider_breaker": {"consecutive_failures": 1000, "failure_rate": 1.0, "min_calls": 1000},
    },
    "models": {
        "probed": {"provider": "mock"},
        "slowish": {"provider": "mock"},
        "hung": {"provider": "mock", "per_attempt_timeout_s": 0.3},
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("blame")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _mock(**options: object) -> struct_pb2.Struct:
    extensions = struct_pb2.Struct()
    if options:
        extensions.update({"mock": options})
    return extensions


def _messages() -> list[chat_pb2.Message]:
    return [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi there")])]


async def _error(call) -> MeshError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return MeshError.from_rpc_error(caught.value)


async def _open_breaker(stub, model: str) -> None:
    for _ in range(3):
        request = rpb.ChatRequest(model=model, messages=_messages(), extensions=_mock(fail_code="UNAVAILABLE"))
        assert (await _error(stub.Chat(request, timeout=5))).code == grpc.StatusCode.UNAVAILABLE
    assert (await _error(stub.Chat(rpb.ChatRequest(model=model, messages=_messages()), timeout=5))).reason == (
        "CIRCUIT_OPEN"
    )


class TestCancelledProbe:
    async def test_cancelled_stream_probe_frees_the_breaker(self, stub, mesh) -> None:
        """A caller cancelling the half-open probe's stream lets the next request probe (not CIRCUIT_OPEN)."""
        await _open_breaker(stub, "probed")
        await asyncio.sleep(OPEN_SECONDS + 0.1)
        mesh.clear_events()
        call = stub.StreamChat(
            rpb.StreamChatRequest(model="probed", messages=_messages(), extensions=_mock(delay_ms=3000)), timeout=10
        )
        for _ in range(100):  # the probe has reached the mock
            if mesh.events("start"):
                break
            await asyncio.sleep(0.02)
        call.cancel()
        for _ in range(100):
            if mesh.events("cancelled"):
                break
            await asyncio.sleep(0.02)
        answer = await stub.Chat(rpb.ChatRequest(model="probed", messages=_messages()), timeout=5)
        assert answer.model == "probed"
        assert answer.attempts[0].outcome == rpb.ATTEMPT_OUTCOME_SUCCEEDED


class TestCallerDeadline:
    async def test_impatient_callers_do_not_open_the_breaker(self, stub) -> None:
        """Five calls whose own 0.3 s deadline ends before a 1 s answer do not make the next caller see CIRCUIT_OPEN."""
        for _ in range(5):
            request = rpb.ChatRequest(model="slowish", messages=_messages(), extensions=_mock(delay_ms=1000))
            error = await _error(stub.Chat(request, timeout=0.3))
            assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        answer = await stub.Chat(rpb.ChatRequest(model="slowish", messages=_messages()), timeout=20)
        assert answer.model == "slowish"
        assert [a.outcome for a in answer.attempts] == [rpb.ATTEMPT_OUTCOME_SUCCEEDED]

    async def test_own_attempt_timeout_still_counts(self, stub) -> None:
        """An attempt that uses up its own per-attempt budget is the provider's fault: three open the breaker."""
        for _ in range(3):
            request = rpb.ChatRequest(model="hung", messages=_messages(), extensions=_mock(delay_ms=2000))
            assert (await _error(stub.Chat(request, timeout=10))).code == grpc.StatusCode.DEADLINE_EXCEEDED
        error = await _error(stub.Chat(rpb.ChatRequest(model="hung", messages=_messages()), timeout=5))
        assert error.reason == "CIRCUIT_OPEN"

    async def test_cancelled_unary_callers_do_not_open_the_breaker(self, stub) -> None:
        """Callers that give up (cancel) on a slow unary call do not count against the provider."""
        for _ in range(4):
            call = stub.Chat(
                rpb.ChatRequest(model="slowish", messages=_messages(), extensions=_mock(delay_ms=1000)), timeout=10
            )
            await asyncio.sleep(0.2)
            call.cancel()
        answer = await stub.Chat(rpb.ChatRequest(model="slowish", messages=_messages()), timeout=20)
        assert answer.model == "slowish"


class TestLostProbe:
    def test_probe_out_past_its_budget_frees_the_way(self) -> None:
        """A half-open probe that never reports back is taken for lost once its budget (and grace) is over."""
        from services.router import breakers
        from services.router.config import Breaker

        now = [100.0]
        breaker = breakers.CircuitBreaker("test", Breaker(consecutive_failures=1, open_s=1.0), clock=lambda: now[0])
        breaker.record(grpc.StatusCode.UNAVAILABLE)
        now[0] += 1.5
        assert breaker.allow(2.0)  # the probe
        assert not breaker.allow(2.0)  # one probe at a time
        now[0] += 2.0 + breakers.PROBE_GRACE_SECONDS + 0.1
        assert breaker.allow(2.0)  # the first probe is lost: a new one may go
        breaker.record(grpc.StatusCode.OK)
        assert breaker.state is breakers.State.CLOSED

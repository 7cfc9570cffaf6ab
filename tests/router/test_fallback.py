"""Fallback across models when the primary fails with a class that allows it."""

from __future__ import annotations

import grpc
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh

MOCK_CONFIG = {
    "models": [
        {
            "name": "limited",
            "context_window": 100000,
            "failures": [{"code": "RESOURCE_EXHAUSTED", "rate": 1, "retry_after_s": 7}],
        },
        {"name": "broken-request", "failures": [{"code": "INVALID_ARGUMENT", "rate": 1}]},
        {"name": "bad-key", "failures": [{"code": "UNAUTHENTICATED", "rate": 1, "message": "invalid x-api-key"}]},
        {"name": "tiny", "context_window": 10},
        {"name": "roomy", "context_window": 100000},
        {"name": "tiny-too", "context_window": 10},
    ]
}
ROUTING = {
    # Three provider instances on one mock service, so one's breaker does not skip the others.
    "providers": {
        "mock": {"kind": "mock"},
        "other": {"kind": "mock", "service": "llmmesh-provider-mock"},
        "keyless": {"kind": "mock", "service": "llmmesh-provider-mock"},
    },
    "models": {
        "limited": {"provider": "mock", "fallbacks": ["roomy"]},
        "broken-request": {"provider": "mock", "fallbacks": ["roomy"]},
        "bad-key": {"provider": "keyless"},
        "tiny": {"provider": "mock", "context_window": 10, "fallbacks": ["tiny-too", "roomy"]},
        "tiny-too": {"provider": "mock", "context_window": 10},
        "roomy": {"provider": "other", "context_window": 100000},
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("fallback")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _request(model: str, text: str = "hello", **routing: object) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])],
        routing=rpb.RoutingPolicy(**routing),
    )


class TestFallback:
    async def test_rate_limited_primary_is_answered_by_fallback(self, stub) -> None:
        """429 on the primary → the fallback answers; the response names it and lists both attempts."""
        response = await stub.Chat(_request("limited"), timeout=5)
        assert response.model == "roomy"
        assert [(a.model, a.outcome, a.code) for a in response.attempts] == [
            ("limited", rpb.ATTEMPT_OUTCOME_FAILED, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]),
            ("roomy", rpb.ATTEMPT_OUTCOME_SUCCEEDED, 0),
        ]
        assert response.attempts[0].moved_on_because == "rate limited or overloaded"

    async def test_invalid_argument_is_never_retried(self, stub, mesh) -> None:
        """INVALID_ARGUMENT from the primary goes straight back; the fallback is never called."""
        mesh.clear_events()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_request("broken-request"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [e["model"] for e in mesh.events("start")] == ["broken-request"]

    async def test_provider_auth_failure_surfaces_as_failed_precondition(self, stub) -> None:
        """A provider's bad key is the operator's problem: callers see FAILED_PRECONDITION."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_request("bad-key"), timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_AUTH_FAILED")

    async def test_context_window_falls_back_only_to_larger_window(self, stub, mesh) -> None:
        """Context window exceeded skips same-size fallbacks and goes to the larger model."""
        mesh.clear_events()
        response = await stub.Chat(_request("tiny", "many words " * 20), timeout=5)
        assert response.model == "roomy"
        outcomes = [(a.model, rpb.AttemptOutcome.Name(a.outcome)) for a in response.attempts]
        assert outcomes == [
            ("tiny", "ATTEMPT_OUTCOME_FAILED"),
            ("tiny-too", "ATTEMPT_OUTCOME_SKIPPED"),
            ("roomy", "ATTEMPT_OUTCOME_SUCCEEDED"),
        ]
        assert [e["model"] for e in mesh.events("start")] == ["tiny", "roomy"]

    async def test_request_policy_overrides_routing_file_chain(self, stub) -> None:
        """fallback_models in the request replace the routing file's chain."""
        response = await stub.Chat(_request("limited", fallback_models=["tiny"]), timeout=5)
        assert [a.model for a in response.attempts] == ["limited", "tiny"]

    async def test_all_candidates_failing_returns_the_error_with_attempts(self, stub) -> None:
        """When every candidate fails the caller gets the last error, its RetryInfo, and every attempt in the message."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_request("limited", fallback_models=["limited"]), timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.retry_after == 7.0

    async def test_unknown_fallback_in_policy_is_invalid_argument(self, stub) -> None:
        """A fallback model the router does not know is INVALID_ARGUMENT naming routing.fallback_models[i]."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_request("limited", fallback_models=["roomy", "nope"]), timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "routing.fallback_models[1]")

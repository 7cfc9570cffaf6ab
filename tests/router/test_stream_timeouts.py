"""Streams are timed by first token and idle gap, inside the caller's deadline (issue 15, finding 4).

`per_attempt_timeout` used to cap a whole stream: an answer that streamed
longer than it was cut. Now it bounds only the wait for the first token;
the gap between chunks has its own timeout; the caller's deadline stays the
outer bound.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh

MOCK_CONFIG = {
    "models": [
        {"name": "trickle", "stream_chunk_delay_ms": 250},
        {"name": "sleepy"},
        {"name": "backup"},
    ]
}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "defaults": {
        "max_retries": 0,
        "min_attempt_budget_ms": 20,
        "breaker": {"consecutive_failures": 1000, "failure_rate": 1.0, "min_calls": 1000},
        "provider_breaker": {"consecutive_failures": 1000, "failure_rate": 1.0, "min_calls": 1000},
    },
    "models": {
        # The whole answer (8 chunks, 250 ms apart) takes about 2 s: twice its per-attempt timeout.
        "trickle": {"provider": "mock", "per_attempt_timeout_s": 1.0},
        "sleepy": {"provider": "mock", "fallbacks": ["backup"]},
        "backup": {"provider": "mock"},
    },
}
WORDS = "one two three four five six seven"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("stream-timeouts")) as m:
        yield m


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def _request(model: str, routing: rpb.RoutingPolicy | None = None, **mock: object) -> rpb.StreamChatRequest:
    extensions = struct_pb2.Struct()
    if mock:
        extensions.update({"mock": mock})
    return rpb.StreamChatRequest(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=WORDS)])],
        extensions=extensions,
        routing=routing,
    )


async def _events(stub, request, timeout: float) -> list[rpb.StreamChatResponse]:
    return [event async for event in stub.StreamChat(request, timeout=timeout)]


class TestStreamTimeouts:
    async def test_per_attempt_timeout_does_not_cut_a_long_answer(self, stub) -> None:
        """A stream that flows for about 2 s under a 1 s per-attempt timeout and a 20 s deadline ends with its final."""
        events = await _events(stub, _request("trickle"), timeout=20)
        final = events[-1].final
        assert final.model == "trickle"
        assert "".join(e.delta.text for e in events[:-1]) == f"[mock trickle] {WORDS}"

    async def test_first_token_timeout_falls_back(self, stub) -> None:
        """No first token within `first_token_timeout`: the attempt fails as a timeout and the fallback answers."""
        routing = rpb.RoutingPolicy(first_token_timeout=_duration(0.3))
        events = await _events(stub, _request("sleepy", routing, by_model={"sleepy": {"delay_ms": 3000}}), 20)
        final = events[-1].final
        assert final.model == "backup"
        first = final.attempts[0]
        assert (first.model, first.code) == ("sleepy", grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
        assert "no first token within 0.3s" in first.message

    async def test_idle_timeout_fails_a_stalled_stream(self, stub) -> None:
        """Chunks 250 ms apart under a 0.1 s idle timeout: the stream fails after its first delta, clearly."""
        routing = rpb.RoutingPolicy(stream_idle_timeout=_duration(0.1))
        deltas = 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in stub.StreamChat(_request("trickle", routing), timeout=20):
                deltas += event.HasField("delta")
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no chunk for 0.1s" in error.message
        assert deltas == 1

    async def test_caller_deadline_is_the_outer_bound(self, stub) -> None:
        """A slow stream under a 1 s caller deadline ends with the router's own DEADLINE_EXCEEDED, with a reason."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _events(stub, _request("trickle"), timeout=1.0)
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert error.reason, f"the caller's own timer fired first: {error!r}"

    async def test_non_positive_timeout_is_refused(self, stub) -> None:
        """A zero first_token_timeout is INVALID_ARGUMENT naming the field."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _events(stub, _request("trickle", rpb.RoutingPolicy(first_token_timeout=_duration(0))), 5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "routing.first_token_timeout" in caught.value.details()

"""The smaller engine faults of issue 15 (finding 10), each through RouterService on a real router."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh

OPEN_SECONDS = 2.0
_NAMES = ["cw-big", "cw-bigger", "cw-small", "hedgy", "plain-slow", "quick", "limited", "rescue", "hang"]
MOCK_CONFIG = {"models": [{"name": name, "context_window": 100000} for name in _NAMES]}
_NO_BREAKER = {"consecutive_failures": 1000, "failure_rate": 1.0, "min_calls": 1000}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "defaults": {
        "max_retries": 0,
        "min_attempt_budget_ms": 20,
        "hedge_budget": {"ratio": 1.0, "window_s": 60, "min_per_second": 1},
        "breaker": {"consecutive_failures": 3, "failure_rate": 1.0, "min_calls": 1000, "open_s": OPEN_SECONDS},
        "provider_breaker": _NO_BREAKER,
    },
    "models": {
        "cw-big": {"provider": "mock", "context_window": 1000, "fallbacks": ["cw-bigger", "cw-small"]},
        "cw-bigger": {"provider": "mock", "context_window": 2000},
        "cw-small": {"provider": "mock", "context_window": 500},
        "hedgy": {"provider": "mock", "strategy": "hedge", "hedge_delay_ms": 50, "fallbacks": ["plain-slow", "quick"]},
        "plain-slow": {"provider": "mock"},
        "quick": {"provider": "mock"},
        "limited": {"provider": "mock", "max_retries": 1, "fallbacks": ["rescue"]},
        "rescue": {"provider": "mock"},
        "hang": {"provider": "mock", "strategy": "hedge"},
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("details")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _mock(**options: object) -> struct_pb2.Struct:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": options})
    return extensions


def _messages() -> list[chat_pb2.Message]:
    return [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])]


def _calls(mesh, model: str) -> int:
    return len([event for event in mesh.events("start") if event["model"] == model])


async def _error(call) -> MeshError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return MeshError.from_rpc_error(caught.value)


async def _open_breaker(stub, model: str) -> None:
    for _ in range(3):
        request = rpb.ChatRequest(
            model=model,
            messages=_messages(),
            extensions=_mock(fail_code="UNAVAILABLE"),
            routing=rpb.RoutingPolicy(fallback_models=[model]),  # no fallbacks: only this model fails
        )
        await _error(stub.Chat(request, timeout=5))


async def _until(predicate, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)


class TestSkipKeepsTheLastFailure:
    async def test_context_window_failure_survives_a_skipped_candidate(self, stub, mesh) -> None:
        """After a context-window failure and a skipped larger model, a smaller model is not tried."""
        await _open_breaker(stub, "cw-bigger")
        await asyncio.sleep(OPEN_SECONDS + 0.1)
        # The half-open probe is out (slow), so cw-bigger is skipped without being sorted to the back.
        probe = stub.Chat(rpb.ChatRequest(model="cw-bigger", messages=_messages(), extensions=_mock(delay_ms=3000)))
        await _until(lambda: _calls(mesh, "cw-bigger") >= 4)
        mesh.clear_events()
        window = {"fail_code": "INVALID_ARGUMENT", "fail_reason": "CONTEXT_WINDOW_EXCEEDED"}
        request = rpb.ChatRequest(model="cw-big", messages=_messages(), extensions=_mock(by_model={"cw-big": window}))
        error = await _error(stub.Chat(request, timeout=5))
        probe.cancel()
        assert error.reason == "CONTEXT_WINDOW_EXCEEDED"
        assert _calls(mesh, "cw-small") == 0


class TestStrategyOfThePrimary:
    async def test_primary_with_open_breaker_keeps_its_hedge_strategy(self, stub) -> None:
        """The plan's strategy is the requested model's, even when its open breaker sorts it last."""
        await _open_breaker(stub, "hedgy")
        request = rpb.ChatRequest(
            model="hedgy", messages=_messages(), extensions=_mock(by_model={"plain-slow": {"delay_ms": 2000}})
        )
        response = await stub.Chat(request, timeout=10)
        assert response.model == "quick"
        assert [(a.model, a.hedged) for a in response.attempts[:2]] == [("plain-slow", False), ("quick", True)]


class TestRetryAfterDelaysOnlyItsCandidate:
    async def test_fallback_starts_while_a_retry_waits(self, stub, mesh) -> None:
        """A 429 with a 1 s Retry-After queues its retry, but the fallback starts at once and answers."""
        mesh.clear_events()
        throttled = {"fail_code": "RESOURCE_EXHAUSTED", "retry_after_s": 1.0}
        request = rpb.ChatRequest(
            model="limited", messages=_messages(), extensions=_mock(by_model={"limited": throttled})
        )
        response = await stub.Chat(request, timeout=10)
        assert response.model == "rescue"
        assert [a.model for a in response.attempts] == ["limited", "rescue"]
        assert _calls(mesh, "limited") == 1


class TestStreamsSayTheyDoNotHedge:
    @pytest.mark.parametrize("strategy", [rpb.ROUTING_STRATEGY_HEDGE, rpb.ROUTING_STRATEGY_FANOUT_FIRST])
    async def test_stream_asking_to_hedge_is_refused(self, stub, strategy) -> None:
        """A stream request asking HEDGE or FANOUT is INVALID_ARGUMENT naming routing.strategy."""
        request = rpb.StreamChatRequest(
            model="quick", messages=_messages(), routing=rpb.RoutingPolicy(strategy=strategy)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.StreamChat(request, timeout=5):
                pass
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == "routing.strategy"

    async def test_routing_file_hedge_model_still_streams(self, stub) -> None:
        """A model whose routing-file strategy is hedge streams one attempt at a time."""
        events = [
            e async for e in stub.StreamChat(rpb.StreamChatRequest(model="hang", messages=_messages()), timeout=5)
        ]
        assert events[-1].final.model == "hang"


class TestDeadlineMargin:
    async def test_router_deadline_error_reaches_callers_under_load(self, stub) -> None:
        """100 concurrent calls that cannot finish in 2 s all get the router's DEADLINE_EXCEEDED with its attempts."""

        async def one() -> MeshError:
            request = rpb.ChatRequest(model="rescue", messages=_messages(), extensions=_mock(delay_ms=5000))
            return await _error(stub.Chat(request, timeout=2.0))

        errors = await asyncio.gather(*(one() for _ in range(100)))
        bare = [error for error in errors if not error.reason]
        assert errors[0].code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not bare, f"{len(bare)} of {len(errors)} ended on the caller's own timer"
        assert all(error.metadata.get("attempts") == "1" for error in errors)


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


ONE_MODEL_MOCK = {"models": [{"name": "solo"}]}
ONE_MODEL_ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "defaults": {
        "max_retries": 0,
        "hedge_budget": {"ratio": 0.0, "window_s": 60, "min_per_second": 0},
        "breaker": _NO_BREAKER,
        "provider_breaker": _NO_BREAKER,
    },
    "models": {"solo": {"provider": "mock", "strategy": "hedge", "hedge_delay_ms": 50}},
}


@pytest.fixture(scope="module")
def twin_mesh(tmp_path_factory):
    with MockMesh(
        mock_config=ONE_MODEL_MOCK,
        routing=ONE_MODEL_ROUTING,
        mock_instances=2,
        workdir=tmp_path_factory.mktemp("twins"),
    ) as started:
        yield started


class TestHedgeBudget:
    async def test_refused_same_model_hedge_is_not_queued(self, twin_mesh) -> None:
        """With no hedge budget, a failing primary is not followed by a same-model 'hedge' on the other instance."""
        twin_mesh.clear_events()
        async with grpc.aio.insecure_channel(twin_mesh.router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            failing = _mock(delay_ms=300, fail_code="UNAVAILABLE")
            error = await _error(
                stub.Chat(rpb.ChatRequest(model="solo", messages=_messages(), extensions=failing), timeout=5)
            )
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert len(twin_mesh.events("start")) == 1

"""Router resilience through RouterService over real sockets: hedging, fan-out,
retries and their budget, honest streams, `auto`, and the deadline property."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh
from services.testing.streams import kind_runs, text_before

MOCK_CONFIG = {
    "models": [
        {"name": "slow", "latency": [{"weight": 1, "ms": 1500}]},
        {"name": "fast"},
        {"name": "down", "failures": [{"code": "UNAVAILABLE", "rate": 1}]},
        {"name": "throttled", "failures": [{"code": "RESOURCE_EXHAUSTED", "rate": 1, "retry_after_s": 5}]},
        {"name": "h1"},
        {"name": "h2"},
        {"name": "h3"},
        {"name": "stream-a"},
        {"name": "stream-b"},
        {"name": "tiny-ctx", "context_window": 40},
        {"name": "big-ctx", "context_window": 100000},
        {"name": "no-tools"},
    ]
}
CHAIN = ["h1", "h2", "h3"]
ROUTING = {
    "providers": {"mock": {"kind": "mock", "continues_prefix": True}},
    "defaults": {
        "min_attempt_budget_ms": 20,
        "base_backoff_ms": 1,
        "max_backoff_ms": 5,
        # 10% of requests, plus a floor of 3 retries per minute.
        "retry_budget": {"ratio": 0.1, "window_s": 60, "min_per_second": 0.05},
        "hedge_budget": {"ratio": 1.0, "window_s": 60, "min_per_second": 0},
        # Breakers have their own module; here they must not mask what is measured.
        "breaker": {"consecutive_failures": 100000, "failure_rate": 1.0, "min_calls": 100000},
        "provider_breaker": {"consecutive_failures": 100000, "failure_rate": 1.0, "min_calls": 100000},
    },
    "models": {
        "slow": {"provider": "mock", "fallbacks": ["fast"], "strategy": "hedge", "hedge_delay_ms": 100},
        "fast": {"provider": "mock"},
        "down": {"provider": "mock", "max_retries": 3},
        "throttled": {"provider": "mock", "max_retries": 2, "fallbacks": ["fast"]},
        "h1": {"provider": "mock", "fallbacks": ["h2", "h3"]},
        "h2": {"provider": "mock"},
        "h3": {"provider": "mock"},
        "stream-a": {"provider": "mock", "fallbacks": ["stream-b"]},
        "stream-b": {"provider": "mock"},
        "tiny-ctx": {"provider": "mock", "context_window": 40},
        "big-ctx": {"provider": "mock", "context_window": 100000},
        "no-tools": {"provider": "mock", "supports_tools": False, "context_window": 100000},
    },
    "auto": {
        "default_tier": "cheap",
        "reserve_output_tokens": 10,
        "tiers": {"cheap": {"models": ["tiny-ctx", "big-ctx"]}, "tools": {"models": ["no-tools", "fast"]}},
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("resilience")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _messages(text: str = "hello") -> list[chat_pb2.Message]:
    return [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])]


def _mock(**options: object) -> struct_pb2.Struct:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": options})
    return extensions


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


async def _wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _outcomes(attempts) -> list[tuple[str, str]]:
    return [(a.model, rpb.AttemptOutcome.Name(a.outcome).removeprefix("ATTEMPT_OUTCOME_")) for a in attempts]


class TestHedging:
    async def test_hedge_beats_slow_primary_and_cancels_it(self, stub, mesh) -> None:
        """The hedge to `fast` answers first; the slow primary's call is cancelled at the mock."""
        mesh.clear_events()
        response = await stub.Chat(rpb.ChatRequest(model="slow", messages=_messages()), timeout=10)
        assert response.model == "fast"
        assert _outcomes(response.attempts) == [("slow", "CANCELLED"), ("fast", "SUCCEEDED")]
        assert [a.hedged for a in response.attempts] == [False, True]
        await _wait_for(lambda: mesh.events("cancelled"))
        assert [e["model"] for e in mesh.events("cancelled")] == ["slow"]

    async def test_request_policy_turns_hedging_off(self, stub) -> None:
        """strategy FALLBACK in the request waits for the slow primary instead of hedging."""
        response = await stub.Chat(
            rpb.ChatRequest(
                model="slow", messages=_messages(), routing=rpb.RoutingPolicy(strategy=rpb.ROUTING_STRATEGY_FALLBACK)
            ),
            timeout=10,
        )
        assert _outcomes(response.attempts) == [("slow", "SUCCEEDED")]


class TestFanOut:
    async def test_fanout_all_returns_every_answer(self, stub) -> None:
        """FANOUT_ALL calls every candidate at once and returns the others as alternatives."""
        response = await stub.Chat(
            rpb.ChatRequest(
                model="h1", messages=_messages(), routing=rpb.RoutingPolicy(strategy=rpb.ROUTING_STRATEGY_FANOUT_ALL)
            ),
            timeout=10,
        )
        assert {response.model, *(alt.model for alt in response.alternatives)} == set(CHAIN)
        assert sorted(_outcomes(response.attempts)) == [(m, "SUCCEEDED") for m in CHAIN]

    async def test_fanout_first_cancels_the_rest(self, stub, mesh) -> None:
        """FANOUT_FIRST returns the first answer and cancels the slower candidate."""
        mesh.clear_events()
        response = await stub.Chat(
            rpb.ChatRequest(
                model="slow",
                messages=_messages(),
                routing=rpb.RoutingPolicy(strategy=rpb.ROUTING_STRATEGY_FANOUT_FIRST),
            ),
            timeout=10,
        )
        assert response.model == "fast"
        assert sorted(_outcomes(response.attempts)) == [("fast", "SUCCEEDED"), ("slow", "CANCELLED")]
        await _wait_for(lambda: mesh.events("cancelled"))
        assert [e["model"] for e in mesh.events("cancelled")] == ["slow"]


class TestRetries:
    async def test_retries_then_error_lists_every_attempt(self, stub, mesh) -> None:
        """A failing model is retried up to max_retries with backoff, then its error is returned."""
        mesh.clear_events()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(
                rpb.ChatRequest(model="down", messages=_messages(), routing=rpb.RoutingPolicy(max_retries=1)),
                timeout=5,
            )
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert len(mesh.events("start")) == 2, error.message
        assert "retrying after" in error.message

    async def test_retry_after_that_does_not_fit_moves_on(self, stub) -> None:
        """A 429 whose Retry-After (5 s) outlasts the deadline is not waited for: the fallback answers."""
        started = time.monotonic()
        response = await stub.Chat(rpb.ChatRequest(model="throttled", messages=_messages()), timeout=2)
        assert response.model == "fast"
        assert "does not fit" in response.attempts[0].moved_on_because
        assert time.monotonic() - started < 2

    async def test_retry_budget_caps_upstream_calls_in_an_outage(self, stub, mesh) -> None:
        """During a full outage, 40 requests with max_retries=3 reach the mock about 40 times, not 160."""
        mesh.clear_events()
        budget_spent = 0
        for _ in range(40):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Chat(rpb.ChatRequest(model="down", messages=_messages()), timeout=5)
            budget_spent += "retry budget spent" in caught.value.details()
        upstream_calls = len([e for e in mesh.events("start") if e["model"] == "down"])
        # 40 first attempts + at most 10% of the window's ~50 requests + the floor of 3,
        # some of it already spent by the earlier retry test: far from 40 x 4 = 160.
        assert 40 <= upstream_calls <= 40 + 5 + 3
        assert budget_spent >= 35


class TestStreams:
    async def test_stream_falls_back_before_first_chunk(self, stub) -> None:
        """A primary that fails before its first delta is replaced silently; the final names the fallback."""
        events = [
            e
            async for e in stub.StreamChat(
                rpb.StreamChatRequest(
                    model="stream-a",
                    messages=_messages("x y"),
                    extensions=_mock(by_model={"stream-a": {"fail_code": "UNAVAILABLE"}}),
                ),
                timeout=5,
            )
        ]
        final = events[-1].final
        assert final.model == "stream-b"
        assert "".join(e.delta.text for e in events[:-1]) == "[mock stream-b] x y"
        assert _outcomes(final.attempts) == [("stream-a", "FAILED"), ("stream-b", "SUCCEEDED")]

    async def test_mid_stream_continuation_when_enabled(self, stub, mesh) -> None:
        """After partial output, the next candidate continues from the partial text (its assistant_prefix)."""
        mesh.clear_events()
        events = [
            e
            async for e in stub.StreamChat(
                rpb.StreamChatRequest(
                    model="stream-a",
                    messages=_messages("one two three four"),
                    extensions=_mock(by_model={"stream-a": {"stream_cut_after": 2}}),
                    routing=rpb.RoutingPolicy(allow_mid_stream_continuation=True),
                ),
                timeout=5,
            )
        ]
        assert kind_runs(events)[:2] == ["delta", "continuation"]
        assert text_before(events, "continuation") == "[mock stream-a] "
        [continued] = [e.continuation for e in events if e.HasField("continuation")]
        assert continued.model == "stream-b"
        assert events[-1].final.continued
        assert events[-1].final.model == "stream-b"
        second_call = next(e for e in mesh.events("start") if e["model"] == "stream-b")
        assert second_call["last_role"] == "ROLE_USER"
        assert second_call["assistant_prefix"] == "[mock stream-a] "

    async def test_mid_stream_failure_without_continuation_fails(self, stub) -> None:
        """Without continuation, a failure after output ends the stream with an error, not a final."""
        kinds = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for e in stub.StreamChat(
                rpb.StreamChatRequest(
                    model="stream-a",
                    messages=_messages("one two three four"),
                    extensions=_mock(by_model={"stream-a": {"stream_cut_after": 2}}),
                ),
                timeout=5,
            ):
                kinds.append(e.WhichOneof("event"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "final" not in kinds


class TestAuto:
    async def test_auto_picks_first_fitting_model_of_default_tier(self, stub) -> None:
        """`auto` with a short prompt picks the tier's first model."""
        response = await stub.Chat(rpb.ChatRequest(model="auto", messages=_messages("short")), timeout=5)
        assert response.model == "tiny-ctx"

    async def test_auto_skips_models_whose_window_is_too_small(self, stub) -> None:
        """A prompt too long for the first model's window goes to the larger one."""
        response = await stub.Chat(rpb.ChatRequest(model="auto:cheap", messages=_messages("word " * 200)), timeout=5)
        assert response.model == "big-ctx"
        assert [a.model for a in response.attempts] == ["big-ctx"]

    async def test_auto_with_tools_skips_models_without_tool_support(self, stub) -> None:
        """With tools in the request, `auto:tools` skips the model marked supports_tools: false."""
        tool = chat_pb2.ToolDefinition(name="lookup", description="looks up")
        response = await stub.Chat(rpb.ChatRequest(model="auto:tools", messages=_messages(), tools=[tool]), timeout=5)
        assert response.model == "fast"

    async def test_unknown_tier_is_not_found(self, stub) -> None:
        """An unknown tier is NOT_FOUND listing the configured tiers."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(rpb.ChatRequest(model="auto:premium", messages=_messages()), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "auto:cheap, auto:tools" in caught.value.details()


_SCRIPT = st.one_of(
    st.just({}),
    st.sampled_from(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED"]).map(
        lambda code: {"fail_code": code}
    ),
    st.integers(50, 400).map(lambda ms: {"delay_ms": ms}),
)


class TestDeadlineProperty:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        scripts=st.fixed_dictionaries(dict.fromkeys(CHAIN, _SCRIPT)),
        deadline=st.floats(0.15, 0.6),
        retries=st.integers(0, 2),
        strategy=st.sampled_from([rpb.ROUTING_STRATEGY_FALLBACK, rpb.ROUTING_STRATEGY_HEDGE]),
    )
    def test_router_answers_within_deadline_from_the_chain(self, mesh, scripts, deadline, retries, strategy) -> None:
        """For random failure scripts: a success from the chain or a router-made error, in time, never off-chain."""
        mesh.clear_events()
        with grpc.insecure_channel(mesh.router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            request = rpb.ChatRequest(
                model="h1",
                messages=_messages(),
                extensions=_mock(by_model=scripts),
                routing=rpb.RoutingPolicy(max_retries=retries, strategy=strategy, hedge_delay=_duration(0.05)),
            )
            try:
                response = stub.Chat(request, timeout=deadline)
            except grpc.RpcError as raw:
                error = MeshError.from_rpc_error(raw)
                # A router-made error carries ErrorInfo; the client's own deadline
                # firing (the router too slow) would not.
                assert error.reason, f"no router error detail: {error!r}"
                failing = {s.get("fail_code") for s in scripts.values()} | {"DEADLINE_EXCEEDED"}
                assert error.code.name in failing
            else:
                assert response.model in CHAIN
                assert scripts[response.model].get("fail_code") is None
                assert {a.model for a in response.attempts} <= set(CHAIN)
        assert {e["model"] for e in mesh.events("start")} <= set(CHAIN)

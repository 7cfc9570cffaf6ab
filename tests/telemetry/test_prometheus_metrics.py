"""What each process serves on LLMMESH_PROMETHEUS_PORT, scraped from real processes.

One mesh (mock adapter, router with both doors, agent) under a little load;
the assertions read the Prometheus text as a scraper would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from llmmesh.v1 import router_service_pb2_grpc
from services.testing.scraped_mesh import Sample, ScrapedMesh, chat_request, stream_request, wait_for

ROUNDS = 2


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapedMesh]:
    with ScrapedMesh(tmp_path_factory.mktemp("scraped")) as mesh:
        asyncio.run(mesh.load(ROUNDS))
        yield mesh


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and s.labels.items() >= labels.items())


def _names(samples: list[Sample]) -> set[str]:
    return {s.name for s in samples}


class TestRouterRequests:
    def test_fallback_answer_is_labelled_with_requested_and_answering_model(self, loaded: ScrapedMesh) -> None:
        """A request for mock-flaky answered by mock-fast counts under both, as requested and as answering model."""
        samples = loaded.scrape("router")
        count = _value(
            samples,
            "gen_ai_server_request_duration_seconds_count",
            gen_ai_request_model="mock-flaky",
            gen_ai_response_model="mock-fast",
            gen_ai_provider_name="mock",
            llmmesh_code="OK",
        )
        assert count == ROUNDS

    def test_failed_requests_carry_model_provider_and_code(self, loaded: ScrapedMesh) -> None:
        """mock-broken's failures count by requested model, its provider and the caller's code."""
        samples = loaded.scrape("router")
        failed = {"gen_ai_request_model": "mock-broken", "gen_ai_provider_name": "mock", "llmmesh_code": "UNAVAILABLE"}
        assert _value(samples, "llmmesh_router_requests_total", llmmesh_door="grpc", **failed) == ROUNDS
        assert (
            _value(samples, "gen_ai_server_request_duration_seconds_count", error_type="UNAVAILABLE", **failed)
            == ROUNDS
        )

    async def test_unknown_models_share_one_label_value(self, loaded: ScrapedMesh) -> None:
        """A request for a model not in the routing table counts as `unknown`, NOT_FOUND (bounded cardinality)."""
        async with grpc.aio.insecure_channel(loaded.mesh.router_address) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                    chat_request("no-such-model-xyz"), timeout=10
                )
        samples = await asyncio.to_thread(loaded.scrape, "router")
        assert not any("no-such-model-xyz" in str(s.labels) for s in samples)
        unknown = _value(
            samples, "llmmesh_router_requests_total", gen_ai_request_model="unknown", llmmesh_code="NOT_FOUND"
        )
        assert unknown >= 1

    def test_tokens_and_cost_per_tenant(self, loaded: ScrapedMesh) -> None:
        """Tokens and cost are counted per tenant under Prometheus names (no `_USD_`)."""
        samples = loaded.scrape("router")
        assert _value(samples, "llmmesh_router_tokens_total", gen_ai_token_type="output", llmmesh_tenant="") > 0
        assert _value(samples, "llmmesh_router_estimated_cost_usd_total", gen_ai_request_model="mock-fast") > 0
        assert not [name for name in _names(samples) if "USD" in name]

    def test_time_to_first_token_of_streams(self, loaded: ScrapedMesh) -> None:
        """Every stream records the GenAI time to first token, below its whole duration."""
        samples = loaded.scrape("router")
        labels = {"gen_ai_request_model": "mock-slow", "llmmesh_call": "stream"}
        assert _value(samples, "gen_ai_server_time_to_first_token_seconds_count", **labels) == ROUNDS
        first = _value(samples, "gen_ai_server_time_to_first_token_seconds_sum", **labels)
        whole = _value(samples, "gen_ai_server_request_duration_seconds_sum", **labels)
        assert 0 < first < whole

    def test_breakers_have_scope_provider_and_model_labels(self, loaded: ScrapedMesh) -> None:
        """The breaker gauge splits scope, provider and model into labels (no packed `llmmesh_breaker`)."""
        samples = [s for s in loaded.scrape("router") if s.name == "llmmesh_router_breaker_state"]
        scopes = {(s.labels["llmmesh_breaker_scope"], s.labels.get("gen_ai_request_model", "")) for s in samples}
        assert ("provider", "") in scopes
        assert ("model", "mock-broken") in scopes
        assert all("llmmesh_breaker" not in s.labels for s in samples)

    def test_discovery_and_attempts(self, loaded: ScrapedMesh) -> None:
        """Discovery is fresh with one mock instance; attempts and fallbacks are counters with _total."""
        samples = loaded.scrape("router")
        assert _value(samples, "llmmesh_router_discovery_fresh") == 1
        assert (
            _value(samples, "llmmesh_router_discovery_endpoints", llmmesh_discovery_service="llmmesh-provider-mock")
            == 1
        )
        assert _value(samples, "llmmesh_router_fallbacks_total", llmmesh_fallback_from_model="mock-flaky") == ROUNDS
        assert _value(samples, "llmmesh_router_attempts_total", llmmesh_attempt_code="UNAVAILABLE") >= 2 * ROUNDS


class TestBothDoors:
    """Every request at either door counts once, under `llmmesh_door`, by model and code (load_doors' traffic)."""

    def _requests(self, loaded: ScrapedMesh, **labels: str) -> float:
        return _value(loaded.scrape("router"), "llmmesh_router_requests_total", **labels)

    def test_http_chat_responses_and_streams_are_counted_once(self, loaded: ScrapedMesh) -> None:
        """mock-fast over HTTP: a unary chat, a stream and a /v1/responses call are three OK requests, none on gRPC."""
        samples = loaded.scrape("router")
        http = {"gen_ai_request_model": "mock-fast", "llmmesh_door": "http", "llmmesh_code": "OK"}
        assert _value(samples, "llmmesh_router_requests_total", **http) == 3
        assert _value(samples, "gen_ai_server_request_duration_seconds_count", llmmesh_call="stream", **http) == 1
        assert _value(samples, "gen_ai_server_time_to_first_token_seconds_count", **http) == 1
        grpc_ok = {"gen_ai_request_model": "mock-fast", "llmmesh_door": "grpc", "llmmesh_code": "OK"}
        assert _value(samples, "llmmesh_router_requests_total", **grpc_ok) == ROUNDS

    def test_embed_is_counted_with_tokens_and_cost_at_both_doors(self, loaded: ScrapedMesh) -> None:
        """gRPC Embed and POST /v1/embeddings count as embeddings requests, with input tokens and cost."""
        samples = loaded.scrape("router")
        embeddings = {"gen_ai_request_model": "mock-vectors", "gen_ai_operation_name": "embeddings"}
        for door in ("grpc", "http"):
            labels = {**embeddings, "llmmesh_door": door}
            assert _value(samples, "llmmesh_router_requests_total", llmmesh_code="OK", **labels) == 1
            assert _value(samples, "gen_ai_server_request_duration_seconds_count", **labels) == 1
        # 2 words over gRPC ("count me"), 4 over HTTP ("count me", "and me"): the mock counts words.
        assert _value(samples, "llmmesh_router_tokens_total", gen_ai_token_type="input", **embeddings) == 6
        assert _value(samples, "llmmesh_router_tokens_total", gen_ai_token_type="output", **embeddings) == 0
        assert _value(samples, "llmmesh_router_estimated_cost_usd_total", **embeddings) > 0

    def test_refused_http_requests_carry_their_code(self, loaded: ScrapedMesh) -> None:
        """An unknown model is NOT_FOUND under `unknown`; a body that is not JSON is INVALID_ARGUMENT, no model."""
        assert (
            self._requests(loaded, llmmesh_door="http", gen_ai_request_model="unknown", llmmesh_code="NOT_FOUND") == 1
        )
        assert (
            self._requests(loaded, llmmesh_door="http", gen_ai_request_model="", llmmesh_code="INVALID_ARGUMENT") == 1
        )

    def test_streams_cut_by_the_caller_are_cancelled_once_per_door(self, loaded: ScrapedMesh) -> None:
        """A caller that goes away mid-stream counts one CANCELLED request at each door, none in flight after."""

        def cancelled() -> dict[str, float]:
            samples = loaded.scrape("router")
            counts = {
                door: _value(
                    samples,
                    "llmmesh_router_requests_total",
                    llmmesh_door=door,
                    gen_ai_request_model="mock-drip",
                )
                for door in ("grpc", "http")
            }
            return counts if all(counts.values()) else {}

        counts = wait_for(cancelled)
        assert counts == {"grpc": 1, "http": 1}
        samples = loaded.scrape("router")
        for door in ("grpc", "http"):
            code = {"llmmesh_door": door, "gen_ai_request_model": "mock-drip", "llmmesh_code": "CANCELLED"}
            assert _value(samples, "llmmesh_router_requests_total", **code) == 1
        in_flight = wait_for(lambda: _value(loaded.scrape("router"), "llmmesh_router_in_flight") == 0)
        assert in_flight

    def test_in_flight_is_split_by_door_and_call(self, loaded: ScrapedMesh) -> None:
        """The in-flight gauge has a series per door and call shape that has served a request."""
        series = {
            (s.labels.get("llmmesh_door"), s.labels.get("llmmesh_call"))
            for s in loaded.scrape("router")
            if s.name == "llmmesh_router_in_flight"
        }
        assert {("grpc", "unary"), ("grpc", "stream"), ("http", "unary"), ("http", "stream")} <= series


class TestPerProcess:
    def test_adapter_exports_no_router_or_agent_instruments(self, loaded: ScrapedMesh) -> None:
        """The adapter serves its GenAI client metrics and in-flight calls, nothing of the router's or agent's."""
        names = _names(loaded.scrape("adapter"))
        assert "gen_ai_client_token_usage_count" in names
        assert "llmmesh_adapter_in_flight" in names
        assert not [name for name in names if name.startswith(("llmmesh_router", "llmmesh_agent", "gen_ai_server"))]

    def test_router_exports_no_adapter_instruments(self, loaded: ScrapedMesh) -> None:
        """The router does not serve adapter or agent metrics."""
        names = _names(loaded.scrape("router"))
        assert not [name for name in names if name.startswith(("llmmesh_adapter", "llmmesh_agent", "gen_ai_client"))]


class TestInFlight:
    async def test_streams_in_flight_at_router_and_adapter(self, loaded: ScrapedMesh) -> None:
        """While a slow stream runs, router and adapter each show one stream in flight; none once it ends."""
        adapter_limit = _value(loaded.scrape("adapter"), "llmmesh_adapter_in_flight_limit", gen_ai_provider_name="mock")
        assert adapter_limit > 0
        seen: dict[str, float] = {}
        async with grpc.aio.insecure_channel(loaded.mesh.router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            async for event in stub.StreamChat(stream_request("mock-slow"), timeout=10):
                if event.HasField("delta") and not seen:
                    seen["router"] = _value(
                        await asyncio.to_thread(loaded.scrape, "router"),
                        "llmmesh_router_in_flight",
                        llmmesh_call="stream",
                    )
                    seen["adapter"] = _value(
                        await asyncio.to_thread(loaded.scrape, "adapter"),
                        "llmmesh_adapter_in_flight",
                        llmmesh_call="stream",
                    )
        assert seen == {"router": 1, "adapter": 1}
        assert _value(loaded.scrape("router"), "llmmesh_router_in_flight") == 0
        assert _value(loaded.scrape("adapter"), "llmmesh_adapter_in_flight") == 0


class TestAgent:
    def test_runs_steps_and_tool_calls(self, loaded: ScrapedMesh) -> None:
        """The scripted run counts one answered run of two steps with one calculator call; nothing stays in flight."""
        samples = loaded.scrape("agent")
        assert _value(samples, "llmmesh_agent_runs_total", llmmesh_agent_end_reason="answer") == 1
        assert _value(samples, "llmmesh_agent_steps_total") == 2
        assert (
            _value(samples, "llmmesh_agent_tool_calls_total", gen_ai_tool_name="calculator", llmmesh_tool_outcome="ok")
            == 1
        )
        assert _value(samples, "llmmesh_agent_run_duration_seconds_count") == 1
        assert _value(samples, "llmmesh_agent_in_flight") == 0
        assert not [name for name in _names(samples) if name.startswith(("llmmesh_router", "llmmesh_adapter"))]


class TestAccessLog:
    def test_one_line_per_request_without_content(self, loaded: ScrapedMesh) -> None:
        """LLMMESH_ACCESS_LOG=true writes one `request` line per chat with models, code and tokens, no prompt text."""
        lines = wait_for(lambda: [line for line in loaded.router.log().splitlines() if '"event": "request"' in line])
        assert lines
        failed = [line for line in lines if '"model": "mock-broken"' in line]
        assert len(failed) == ROUNDS
        assert all('"code": "UNAVAILABLE"' in line and '"provider": "mock"' in line for line in failed)
        fallback = next(line for line in lines if '"model": "mock-flaky"' in line)
        assert '"answer_model": "mock-fast"' in fallback
        assert '"output_tokens":' in fallback
        assert not [line for line in lines if "count me" in line]

    def test_every_door_and_operation_writes_its_line(self, loaded: ScrapedMesh) -> None:
        """HTTP chat, responses, embeddings, refusals, cut streams and gRPC Embed each write one line."""
        lines = wait_for(
            lambda: (
                [
                    json.loads(line)
                    for line in loaded.router.log().splitlines()
                    if '"event": "request"' in line and '"model": "mock-drip"' in line
                ]
                if loaded.router.log().count('"model": "mock-drip"') >= 2
                else []
            )
        )
        assert sorted((line["door"], line["code"]) for line in lines) == [("grpc", "CANCELLED"), ("http", "CANCELLED")]
        records = [json.loads(line) for line in loaded.router.log().splitlines() if '"event": "request"' in line]
        routes = {(r["door"], r.get("route"), r["code"], r.get("http_status")) for r in records if r["door"] == "http"}
        assert ("http", "/v1/responses", "OK", 200) in routes
        assert ("http", "/v1/embeddings", "OK", 200) in routes
        assert ("http", "/v1/chat/completions", "NOT_FOUND", 404) in routes
        assert ("http", "/v1/chat/completions", "INVALID_ARGUMENT", 400) in routes
        embeds = [r for r in records if r["operation"] == "embeddings" and r["door"] == "grpc"]
        assert [(e["model"], e["code"], e["input_tokens"]) for e in embeds] == [("mock-vectors", "OK", 2)]
        assert not [line for line in loaded.router.log().splitlines() if "count me" in line]


def test_access_log_is_off_by_default(tmp_path: Path) -> None:
    """Without LLMMESH_ACCESS_LOG the router writes no request lines."""
    from services.testing.mesh import MockMesh

    with MockMesh(workdir=tmp_path) as mesh:

        async def one() -> None:
            async with grpc.aio.insecure_channel(mesh.router_address) as channel:
                await router_service_pb2_grpc.RouterServiceStub(channel).Chat(chat_request("mock-small"), timeout=10)

        asyncio.run(one())
        assert mesh.router is not None
        assert '"event": "request"' not in mesh.router.log()

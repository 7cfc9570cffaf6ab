"""A real Prometheus scrapes a running mesh: every dashboard query and every alert's signal returns series.

The mesh (ScrapedMesh: mock adapter, router with both doors, agent) runs with
caller keys for two tenants and a shared quota store on a real redis-server,
so the tenant, quota-store and discovery series exist. Prometheus scrapes the
three /metrics endpoints every second under the job names a cluster gives
them, with the alert rules loaded; a bounded load (answers, a fallback, a
failure, a stream, a hedge, HTTP calls, an agent run) feeds them.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.deploy import monitoring
from services.testing.prometheus_server import PrometheusServer, QueryError
from services.testing.redis_server import RedisServer
from services.testing.scraped_mesh import ScrapedMesh, chat_request, stream_request
from tests.deploy.tools import require
from tests.security.helpers import bearer, write_tenants

KEYS = {
    "team-a": "llmk_monitor-a-0123456789abcdefghijklmnopqrstuvw",
    "team-b": "llmk_monitor-b-0123456789abcdefghijklmnopqrstuvw",
}
# The job names a cluster's scrape config gives the pods (docs/operations.md): the alerts match on them.
JOBS = {"router": "llmmesh-router", "adapter": "llmmesh-provider-mock", "agent": "llmmesh-agent"}
# What Grafana would put in: the All value of the dashboard's variables, windows ≥ 4 scrape intervals.
GRAFANA = {"$__rate_interval": "1m", "$__range": "5m", "$model": ".*", "$tenant": ".*"}
WAIT_SECONDS = 45.0


@dataclass
class Monitored:
    mesh: ScrapedMesh
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    require("prometheus")
    require("redis-server")
    workdir = tmp_path_factory.mktemp("monitoring")
    tenants = [{"name": name, "keys": [key], "allowed_models": ["*"]} for name, key in KEYS.items()]
    rules = workdir / "llmmesh-rules.yaml"
    rules.write_text(monitoring.rules_file_text())
    redis = RedisServer(workdir).start()
    mesh = ScrapedMesh(
        workdir,
        env={
            "LLMMESH_AUTH_FILE": str(write_tenants(workdir / "tenants.yaml", tenants)),
            "LLMMESH_QUOTA_REDIS_URL": redis.url,
        },
        agent_env={"LLMMESH_AGENT_ROUTER_KEY": KEYS["team-b"]},
    )
    prometheus = None
    try:
        mesh.start()
        jobs = {job: [f"127.0.0.1:{mesh.ports[kind]}"] for kind, job in JOBS.items()}
        prometheus = PrometheusServer(workdir, jobs, rule_files=(rules,)).start()
        yield Monitored(mesh, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        mesh.stop()
        redis.stop()


async def _load(mesh: ScrapedMesh) -> None:
    """Per tenant: an answer, a fallback, a failure, a stream and a hedge over gRPC, one chat over HTTP."""
    async with grpc.aio.insecure_channel(mesh.mesh.router_address) as channel:
        router = router_service_pb2_grpc.RouterServiceStub(channel)
        for key in KEYS.values():
            metadata = bearer(key)
            await router.Chat(chat_request("mock-fast"), timeout=10, metadata=metadata)
            await router.Chat(chat_request("mock-flaky", max_retries=0), timeout=10, metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await router.Chat(chat_request("mock-broken", max_retries=0), timeout=10, metadata=metadata)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            async for _event in router.StreamChat(stream_request("mock-slow"), timeout=10, metadata=metadata):
                pass
            await router.Chat(_hedged(), timeout=10, metadata=metadata)
            _http_chat(mesh.http_url, key)


def _hedged() -> rpb.ChatRequest:
    """mock-slow held 400 ms, so the hedge to mock-fast (sent after 20 ms) runs."""
    request = chat_request(
        "mock-slow",
        strategy=rpb.ROUTING_STRATEGY_HEDGE,
        fallback_models=["mock-fast"],
        hedge_delay=duration_pb2.Duration(nanos=20_000_000),
    )
    extensions = struct_pb2.Struct()
    extensions.update({"mock": {"by_model": {"mock-slow": {"delay_ms": 400}}}})
    request.extensions.CopyFrom(extensions)
    return request


def _http_chat(base_url: str, key: str) -> None:
    body = json.dumps({"model": "mock-fast", "messages": [{"role": "user", "content": "count me"}]}).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


async def _agent_run(mesh: ScrapedMesh) -> None:
    assert mesh.agent is not None
    async with grpc.aio.insecure_channel(mesh.agent.address) as channel:
        await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
            apb.RunRequest(task=apb.AgentTask(input="monthly total of 1234", model="mock-agent")), timeout=20
        )


def _grafana(expr: str) -> str:
    for variable, value in GRAFANA.items():
        expr = expr.replace(variable, value)
    return expr


def _empty_or_failing(prometheus: PrometheusServer, queries: dict[str, str]) -> dict[str, str]:
    """Name → why, for each query that errs or returns no series."""
    problems = {}
    for name, expr in queries.items():
        try:
            if not prometheus.query(expr):
                problems[name] = f"no series: {expr}"
        except QueryError as error:
            problems[name] = f"{error}: {expr}"
    return problems


def _settled(prometheus: PrometheusServer, queries: dict[str, str]) -> dict[str, str]:
    """Polls (bounded) until every query has series: scrapes land a second apart, rates need two."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (problems := _empty_or_failing(prometheus, queries)) and time.monotonic() < deadline:
        time.sleep(1)
    return problems


def _scraped_once_more(prometheus: PrometheusServer) -> None:
    """Waits (bounded) until Prometheus has scraped the router again, so the next load lands in a new sample."""
    before = prometheus.query('timestamp(up{job="llmmesh-router"})')
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        now = prometheus.query('timestamp(up{job="llmmesh-router"})')
        if before and now and float(now[0]["value"][1]) > float(before[0]["value"][1]):
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def loaded(monitored: Monitored) -> Monitored:
    """Two rounds of load a scrape apart: counters rise between samples, so rates are not zero."""
    for _ in range(2):
        asyncio.run(_load(monitored.mesh))
        asyncio.run(_agent_run(monitored.mesh))
        _scraped_once_more(monitored.prometheus)
    return monitored


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("loaded")
class TestAgainstRealPrometheus:
    def test_every_target_is_scraped(self, monitored: Monitored) -> None:
        """The router, adapter and agent targets are up."""
        queries = {job: f'up{{job="{job}"}} == 1' for job in JOBS.values()}
        assert _settled(monitored.prometheus, queries) == {}

    def test_every_dashboard_query_returns_series(self, monitored: Monitored) -> None:
        """Each panel's query, with Grafana's variables substituted, is valid PromQL with series behind it."""
        queries = {name: _grafana(expr) for name, expr in monitoring.dashboard_queries().items()}
        assert _settled(monitored.prometheus, queries) == {}

    def test_the_tenant_variable_lists_the_tenants(self, monitored: Monitored) -> None:
        """The $tenant variable's label exists with both tenants' names (caller keys on)."""
        queries = {name: f'llmmesh_router_tokens_total{{llmmesh_tenant="{name}"}}' for name in KEYS}
        assert _settled(monitored.prometheus, queries) == {}

    def test_every_alert_signal_returns_series(self, monitored: Monitored) -> None:
        """Each alert's expr without its threshold has series on a live mesh (a misspelt metric would not)."""
        assert _settled(monitored.prometheus, monitoring.alert_signals()) == {}

    def test_a_misspelt_or_broken_query_is_reported(self, monitored: Monitored) -> None:
        """The check can fail: a metric no process exports has no series, bad PromQL is Prometheus's error."""
        problems = _empty_or_failing(
            monitored.prometheus,
            {"misspelt": "sum(rate(llmmesh_router_request_total[1m]))", "broken": "sum by (le (x)"},
        )
        assert problems["misspelt"].startswith("no series")
        assert problems["broken"].startswith("bad_data")

    def test_every_rule_evaluates_without_error(self, monitored: Monitored) -> None:
        """Prometheus loaded every rule and evaluates each without error (matching, types); none fires."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            rules = monitored.prometheus.rules()
            evaluated = all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)
            if (evaluated and len(rules) == len(monitoring.alerts())) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert {rule["name"] for rule in rules} == {rule["alert"] for rule in monitoring.alerts()}
        for rule in rules:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            # `for:` is minutes; a seconds-old mesh never fires (mock-broken's errors are pending at most).
            assert rule["state"] in {"inactive", "pending"}, rule["name"]

"""Per-tenant rate limits and budgets shared by two router replicas through a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.testing.mesh import MockMesh, default_routing
from tests.security.helpers import RedisServer, bearer, error_of, write_tenants

KEY_RPM = "llmk_quota-rpm-0123456789abcdefghijklmnopqrstuvwx"
KEY_TPM = "llmk_quota-tpm-0123456789abcdefghijklmnopqrstuvwx"
KEY_BUDGET = "llmk_quota-budget-0123456789abcdefghijklmnopqrstu"
KEY_FALLBACK = "llmk_quota-fallback-0123456789abcdefghijklmnopqrs"
STORE_HEALTH = "llmmesh-router-quota-store"


def _routing() -> dict[str, object]:
    routing = default_routing()
    # $1 per input token: any answer spends the whole budget of the budget tenant.
    routing["models"]["mock-large"]["price"] = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 0.0}  # type: ignore[index]
    return routing


def _tenants(path: Path) -> Path:
    return write_tenants(
        path,
        [
            {"name": "rpm", "keys": [KEY_RPM], "allowed_models": ["*"], "limits": {"requests_per_minute": 3}},
            {"name": "tpm", "keys": [KEY_TPM], "allowed_models": ["*"], "limits": {"tokens_per_minute": 5}},
            {"name": "budget", "keys": [KEY_BUDGET], "allowed_models": ["*"], "limits": {"cost_per_day_usd": 1.0}},
            {"name": "fallback", "keys": [KEY_FALLBACK], "allowed_models": ["*"], "limits": {"requests_per_minute": 4}},
        ],
    )


class Replicas:
    """One mock adapter and two routers sharing one redis-server."""

    def __init__(self, mesh: MockMesh, second: ServiceProcess, redis: RedisServer) -> None:
        self.mesh = mesh
        self.routers = [mesh.router, second]
        self.redis = redis


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("quotas")
    redis = RedisServer(workdir).start()
    env = {
        "LLMMESH_AUTH_FILE": str(_tenants(workdir / "tenants.yaml")),
        "LLMMESH_QUOTA_REDIS_URL": redis.url,
        "LLMMESH_ROUTER_REPLICAS": "2",
    }
    mesh = MockMesh(workdir=workdir, routing=_routing(), env=env)
    try:
        mesh.start()
        second = start_service(["-m", "services.router"], name="router-2", workdir=workdir, env=mesh.router.env)  # type: ignore[union-attr]
    except BaseException:
        mesh.stop()
        redis.stop()
        raise
    yield Replicas(mesh, second, redis)
    second.terminate()
    mesh.stop()
    redis.stop()


async def _chat(router: ServiceProcess, key: str, model: str = "mock-small") -> rpb.ChatResponse:
    request = rpb.ChatRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])]
    )
    async with grpc.aio.insecure_channel(router.address) as channel:
        return await router_service_pb2_grpc.RouterServiceStub(channel).Chat(request, timeout=10, metadata=bearer(key))


async def _store_health(router: ServiceProcess) -> int:
    async with grpc.aio.insecure_channel(router.address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=STORE_HEALTH), timeout=5
        )
    return answer.status


def _wait_for_fresh_minute() -> None:
    """Minute windows: start a counting test with at least 12 s left in the current one (≤ 12 s wait)."""
    left = 60 - time.time() % 60
    if left < 12:
        time.sleep(left + 0.2)


class TestSharedLimits:
    async def test_requests_per_minute_across_replicas(self, replicas: Replicas) -> None:
        """Two requests on replica 1 and one on replica 2 use the limit of 3: the next is refused on both."""
        _wait_for_fresh_minute()
        first, second = replicas.routers
        assert first is not None
        await _chat(first, KEY_RPM)
        await _chat(first, KEY_RPM)
        await _chat(second, KEY_RPM)
        for router in (second, first):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _chat(router, KEY_RPM)
            error = error_of(caught.value)
            assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TENANT_RATE_LIMITED")
            assert error.retry_after is not None
            assert 0 < error.retry_after <= 60
            assert "requests per minute limit of 3" in error.message
            assert error.metadata["quota_mode"] == "shared"

    async def test_tokens_per_minute_counted_from_answers(self, replicas: Replicas) -> None:
        """Tokens used on one replica are seen by the other: after the limit, RESOURCE_EXHAUSTED with RetryInfo."""
        _wait_for_fresh_minute()
        first, second = replicas.routers
        assert first is not None
        answer = await _chat(first, KEY_TPM)
        assert answer.usage.input_tokens + answer.usage.output_tokens >= 5
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _chat(second, KEY_TPM)
        error = error_of(caught.value)
        assert error.metadata["limit"] == "tokens_per_minute"
        assert error.retry_after is not None
        assert 0 < error.retry_after <= 60

    async def test_daily_budget_from_estimated_cost(self, replicas: Replicas) -> None:
        """The router's estimated cost is summed per UTC day; past the budget, refused until the day rolls over."""
        first, second = replicas.routers
        assert first is not None
        answer = await _chat(first, KEY_BUDGET, model="mock-large")
        assert answer.estimated_cost_usd >= 1.0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _chat(second, KEY_BUDGET)
        error = error_of(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TENANT_BUDGET_EXHAUSTED")
        assert error.retry_after is not None
        assert 0 < error.retry_after <= 86400
        assert "daily budget of $1" in error.message


class TestStoreDown:
    async def test_fails_open_to_local_limits_and_recovers(self, replicas: Replicas) -> None:
        """Redis down: limits hold per replica at limit / replicas, health says so; Redis back: shared again."""
        _wait_for_fresh_minute()
        router = replicas.routers[1]
        assert await _store_health(router) == health_pb2.HealthCheckResponse.SERVING
        replicas.redis.stop()
        # limit 4 over 2 replicas: 2 requests per replica while the store is down.
        await _chat(router, KEY_FALLBACK)
        await _chat(router, KEY_FALLBACK)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _chat(router, KEY_FALLBACK)
        error = error_of(caught.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.metadata["quota_mode"] == "local-fallback"
        assert await _store_health(router) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "quota store UNREACHABLE" in router.log()

        replicas.redis.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                await _chat(router, KEY_FALLBACK)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.3)
                continue
            break
        assert await _store_health(router) == health_pb2.HealthCheckResponse.SERVING
        assert "quota store reachable again" in router.log()

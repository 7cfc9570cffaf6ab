"""Per-tenant rate limits and budgets, shared by every router replica through Redis.

Limits (from the tenants file): requests per minute, tokens per minute
(input + output, recorded when an answer arrives) and estimated cost per
UTC day (the router's `estimated_cost_usd`). Windows are fixed and aligned
on Redis's clock (the `TIME` command), so replicas agree on them whatever
their own clocks say. A request is admitted while its tenant's tokens and
cost are below their limits and its request count fits; one large answer
may overshoot the token or cost limit, and the next request is refused.
Refusals are RESOURCE_EXHAUSTED with RetryInfo: the time until the window
that is full rolls over.

Why Redis and not Consul KV: every admitted request writes a counter; in
Consul each write is a Raft commit across the servers (milliseconds, and
load on the cluster that discovery depends on), while Redis does an atomic
Lua script in microseconds; expiring keys clean up old windows by
themselves. One Lua script per request checks and counts atomically, so two
replicas racing for the last request cannot both get it.

When Redis cannot be reached (or answers slower than
LLMMESH_QUOTA_STORE_TIMEOUT_SECONDS) the router fails open to a local
limiter holding each limit divided by LLMMESH_ROUTER_REPLICAS, says so in a
WARNING and on its health service `llmmesh-router-quota-store`
(NOT_SERVING), retries the store every LLMMESH_QUOTA_STORE_RETRY_SECONDS,
and goes back to the shared counts when it answers (usage counted locally
meanwhile is not copied over).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.common.errors import MeshError
from services.common.settings import ENV_PREFIX
from services.common.tenants import Limits, Tenant

REASON_TENANT_RATE_LIMITED = "TENANT_RATE_LIMITED"
REASON_TENANT_BUDGET_EXHAUSTED = "TENANT_BUDGET_EXHAUSTED"
STORE_HEALTH_SERVICE = "llmmesh-router-quota-store"
_MINUTE = 60.0
_DAY = 86400.0

log = structlog.get_logger(__name__)


class QuotaSettings(BaseSettings):
    """Where the shared counts live (LLMMESH_QUOTA_*, LLMMESH_ROUTER_REPLICAS)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    quota_redis_url: str = Field(
        "", description="redis://host:port/db shared by the router replicas; empty: local only."
    )
    quota_redis_password: SecretStr = Field(SecretStr(""), description="Redis password (from a Secret).")
    router_replicas: int = Field(
        1, ge=1, le=10_000, description="Replicas sharing the limits (local fallback divides)."
    )
    quota_store_timeout_seconds: float = Field(0.25, gt=0, le=10, description="Slower store answers count as down.")
    quota_store_retry_seconds: float = Field(2.0, gt=0, le=600, description="How often a down store is tried again.")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit is full, what is used, and when its window rolls over."""

    limit: str
    used: float
    retry_after: float


# KEYS: none (window keys hang off the tenant prefix; one tenant's keys share a Redis Cluster slot).
# ARGV: prefix, requests/min, tokens/min, cost/day (0: no limit)  → {limit, used, seconds to rollover}
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local minute = math.floor(now / 60)
local day = math.floor(now / 86400)
local prefix = ARGV[1]
local to_minute = (minute + 1) * 60 - now
local tpm = tonumber(ARGV[3])
if tpm > 0 then
  local used = tonumber(redis.call('GET', prefix .. ':tpm:' .. minute) or '0')
  if used >= tpm then return {'tokens_per_minute', tostring(used), tostring(to_minute)} end
end
local cpd = tonumber(ARGV[4])
if cpd > 0 then
  local spent = tonumber(redis.call('GET', prefix .. ':cost:' .. day) or '0')
  if spent >= cpd then return {'cost_per_day_usd', tostring(spent), tostring((day + 1) * 86400 - now)} end
end
local rpm = tonumber(ARGV[2])
if rpm > 0 then
  local key = prefix .. ':rpm:' .. minute
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, 120) end
  if count > rpm then
    redis.call('DECR', key)
    return {'requests_per_minute', tostring(count - 1), tostring(to_minute)}
  end
end
return {'', '0', '0'}
"""

# ARGV: prefix, tokens, cost
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local prefix = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if tokens > 0 then
  local key = prefix .. ':tpm:' .. math.floor(now / 60)
  redis.call('INCRBY', key, tokens)
  redis.call('EXPIRE', key, 120)
end
if cost > 0 then
  local key = prefix .. ':cost:' .. math.floor(now / 86400)
  redis.call('INCRBYFLOAT', key, cost)
  redis.call('EXPIRE', key, 172800)
end
return 1
"""


class LocalCounters:
    """The same windows in process memory: the only store without Redis, the fallback with it."""

    def __init__(self, divide_by: int = 1, clock: Callable[[], float] = time.time) -> None:
        self._divide_by = divide_by
        self._clock = clock
        self._counts: dict[tuple[str, str, int], float] = {}

    def _scaled(self, limit: float | None) -> float:
        return 0 if limit is None else max(limit / self._divide_by, 1e-9)

    def admit(self, tenant: str, limits: Limits) -> Refusal | None:
        now = self._clock()
        minute, day = int(now // _MINUTE), int(now // _DAY)
        self._forget_before(minute)
        to_minute = (minute + 1) * _MINUTE - now
        tpm = self._scaled(limits.tokens_per_minute)
        used = self._counts.get((tenant, "tpm", minute), 0)
        if tpm and used >= tpm:
            return Refusal("tokens_per_minute", used, to_minute)
        cpd = self._scaled(limits.cost_per_day_usd)
        spent = self._counts.get((tenant, "cost", day), 0.0)
        if cpd and spent >= cpd:
            return Refusal("cost_per_day_usd", spent, (day + 1) * _DAY - now)
        rpm = math.floor(self._scaled(limits.requests_per_minute)) if limits.requests_per_minute else 0
        if limits.requests_per_minute:
            rpm = max(rpm, 1)
            count = self._counts.get((tenant, "rpm", minute), 0)
            if count >= rpm:
                return Refusal("requests_per_minute", count, to_minute)
            self._counts[(tenant, "rpm", minute)] = count + 1
        return None

    def record(self, tenant: str, tokens: int, cost: float) -> None:
        now = self._clock()
        minute, day = int(now // _MINUTE), int(now // _DAY)
        if tokens > 0:
            self._counts[(tenant, "tpm", minute)] = self._counts.get((tenant, "tpm", minute), 0) + tokens
        if cost > 0:
            self._counts[(tenant, "cost", day)] = self._counts.get((tenant, "cost", day), 0.0) + cost

    def _forget_before(self, minute: int) -> None:
        if len(self._counts) < 4096:
            return
        today = int(minute * _MINUTE // _DAY)
        self._counts = {
            key: value
            for key, value in self._counts.items()
            if (key[1] == "cost" and key[2] >= today) or (key[1] != "cost" and key[2] >= minute)
        }


class RedisCounters:
    """The shared windows, one Lua script per admission and per recorded answer."""

    def __init__(self, client: Redis, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)

    async def admit(self, tenant: str, limits: Limits) -> Refusal | None:
        args: list[str | int] = [
            _prefix(tenant),
            limits.requests_per_minute or 0,
            limits.tokens_per_minute or 0,
            repr(limits.cost_per_day_usd or 0.0),
        ]
        limit, used, retry_after = await asyncio.wait_for(self._admit(args=args), self._timeout)
        if not limit:
            return None
        return Refusal(_text(limit), float(used), float(retry_after))

    async def record(self, tenant: str, tokens: int, cost: float) -> None:
        await asyncio.wait_for(self._record(args=[_prefix(tenant), tokens, repr(cost)]), self._timeout)

    async def close(self) -> None:
        await self._client.aclose()


class QuotaGate:
    """Admits or refuses a tenant's request and records what answers used; fails open when Redis is down."""

    def __init__(
        self,
        shared: RedisCounters | None,
        *,
        replicas: int,
        retry_seconds: float,
        on_store_change: Callable[[bool], Any] | None = None,
    ) -> None:
        self._shared = shared
        self._local = LocalCounters(divide_by=replicas)
        self._replicas = replicas
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self._store_up = True
        self._on_store_change = on_store_change

    @classmethod
    def from_settings(cls, settings: QuotaSettings, on_store_change: Callable[[bool], Any] | None = None) -> QuotaGate:
        shared = None
        if settings.quota_redis_url:
            client = Redis.from_url(
                settings.quota_redis_url,
                password=settings.quota_redis_password.get_secret_value() or None,
                socket_timeout=settings.quota_store_timeout_seconds,
                socket_connect_timeout=settings.quota_store_timeout_seconds,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
            shared = RedisCounters(client, settings.quota_store_timeout_seconds)
            log.info("tenant quotas shared through redis", replicas=settings.router_replicas)
        elif settings.router_replicas > 1:
            log.warning(
                "no LLMMESH_QUOTA_REDIS_URL: tenant limits are enforced per replica, each at limit / replicas",
                replicas=settings.router_replicas,
            )
        return cls(
            shared,
            replicas=settings.router_replicas,
            retry_seconds=settings.quota_store_retry_seconds,
            on_store_change=on_store_change,
        )

    @property
    def mode(self) -> str:
        """`shared`, `local` (no store configured) or `local-fallback` (store unreachable)."""
        if self._shared is None:
            return "local"
        return "shared" if self._store_up else "local-fallback"

    async def admit(self, tenant: Tenant | None) -> None:
        """Counts the request, or raises RESOURCE_EXHAUSTED with RetryInfo."""
        if tenant is None or not _has_limits(tenant.limits):
            return
        refusal = await self._use_store(
            lambda shared: shared.admit(tenant.name, tenant.limits),
            lambda: self._local.admit(tenant.name, tenant.limits),
        )
        if refusal is not None:
            raise _refused(tenant, refusal, self.mode)

    async def record(self, tenant: Tenant | None, tokens: int, cost: float) -> None:
        """Adds an answer's tokens and estimated cost to the tenant's windows."""
        if tenant is None or not _has_limits(tenant.limits) or (tokens <= 0 and cost <= 0):
            return
        await self._use_store(
            lambda shared: shared.record(tenant.name, tokens, cost),
            lambda: self._local.record(tenant.name, tokens, cost),
        )

    async def _use_store(self, shared_call: Callable[[RedisCounters], Any], local_call: Callable[[], Any]) -> Any:
        if self._shared is None:
            return local_call()
        now = time.monotonic()
        if now >= self._down_until:
            try:
                result = await shared_call(self._shared)
            except (RedisError, OSError, TimeoutError) as error:
                self._down_until = now + self._retry_seconds
                self._set_store_up(False, error)
            else:
                self._set_store_up(True)
                return result
        return local_call()

    def _set_store_up(self, up: bool, error: BaseException | None = None) -> None:
        if up == self._store_up:
            return
        self._store_up = up
        if up:
            log.warning("quota store reachable again: tenant limits shared across replicas")
        else:
            log.warning(
                "quota store UNREACHABLE: failing open to per-replica limits (limit / replicas) until it answers",
                replicas=self._replicas,
                error_type=type(error).__name__,
                retry_seconds=self._retry_seconds,
            )
        if self._on_store_change is not None:
            self._on_store_change(up)

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()


def _has_limits(limits: Limits) -> bool:
    return bool(limits.requests_per_minute or limits.tokens_per_minute or limits.cost_per_day_usd)


def _prefix(tenant: str) -> str:
    return f"llmmesh:quota:{{{tenant}}}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _refused(tenant: Tenant, refusal: Refusal, mode: str) -> MeshError:
    limit_value = getattr(tenant.limits, refusal.limit)
    budget = refusal.limit == "cost_per_day_usd"
    what = (
        f"its daily budget of ${limit_value:g} (spent ${refusal.used:.4f})"
        if budget
        else f"its {refusal.limit.replace('_', ' ')} limit of {limit_value} (used {refusal.used:g})"
    )
    return MeshError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"tenant {tenant.name!r} has reached {what}; retry in {refusal.retry_after:.1f}s",
        reason=REASON_TENANT_BUDGET_EXHAUSTED if budget else REASON_TENANT_RATE_LIMITED,
        metadata={"tenant": tenant.name, "limit": refusal.limit, "quota_mode": mode},
        retry_after=refusal.retry_after,
    )

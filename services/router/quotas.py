"""Per-tenant rate limits and budgets, shared by every router replica through Redis.

Limits (from the tenants file): requests per minute, tokens per minute
(input + output, recorded when an answer arrives) and estimated cost per
UTC day (the router's `estimated_cost_usd`). Windows are fixed and aligned
on Redis's clock (the `TIME` command), so replicas agree on them whatever
their own clocks say. A request is admitted while its tenant's tokens and
cost are below their limits and its request count fits; one large answer
may overshoot the token or cost limit, and the next request is refused.
Refusals are RESOURCE_EXHAUSTED with RetryInfo: the time until the window
that is full rolls over, and `quota_mode` saying which counts refused it.

Why Redis and not Consul KV: every admitted request writes a counter; in
Consul each write is a Raft commit across the servers (milliseconds, and
load on the cluster that discovery depends on), while Redis does an atomic
Lua script in microseconds; expiring keys clean up old windows by
themselves. One Lua script per request checks and counts atomically, so two
replicas racing for the last request cannot both get it (quota_store.py).

Every LLMMESH_QUOTA_HEARTBEAT_SECONDS each replica writes a heartbeat to
Redis and reads back the live replica count and every active tenant's
counts; the same timer drives the `llmmesh-router-quota-store` health
service, so it changes without traffic.

When Redis cannot be reached (or answers slower than
LLMMESH_QUOTA_STORE_TIMEOUT_SECONDS) the router fails open to local
counters seeded from the last shared counts it knew: each replica may use
its share of what was left, (limit - last known) / live replicas, the live
count being the replicas whose heartbeat Redis held before the outage
(LLMMESH_ROUTER_REPLICAS only when this replica never saw one). It says so
in a WARNING and on the health service (NOT_SERVING), tries the store
again every LLMMESH_QUOTA_STORE_RETRY_SECONDS, and when it answers restores
the counts Redis lost (a restart empties it) and adds the local usage
before counting there again. A connection that fails at once (a pooled
connection from before a Redis restart) drops the whole pool and is retried
once on a fresh one, so a Redis that is back is used on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import structlog
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import MeshError
from services.common.settings import ENV_PREFIX
from services.common.tenants import Limits, Tenant
from services.router import quota_store
from services.router.quota_store import Heartbeat, Key, Push, RedisCounters, Refusal, Seen, by_tenant

__all__ = ["STORE_HEALTH_SERVICE", "LocalCounters", "QuotaGate", "QuotaSettings", "Refusal"]

REASON_TENANT_RATE_LIMITED = "TENANT_RATE_LIMITED"
REASON_TENANT_BUDGET_EXHAUSTED = "TENANT_BUDGET_EXHAUSTED"
STORE_HEALTH_SERVICE = "llmmesh-router-quota-store"
_MINUTE = 60.0
_DAY = 86400.0
# A replica is counted live while its last heartbeat is younger than this many heartbeat periods.
_LIVE_PERIODS = 3

log = structlog.get_logger(__name__)


class QuotaSettings(BaseSettings):
    """Where the shared counts live (LLMMESH_QUOTA_*, LLMMESH_ROUTER_REPLICAS)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    quota_redis_url: str = Field(
        "", description="redis://host:port/db shared by the router replicas; empty: local only."
    )
    quota_redis_password: SecretStr = Field(SecretStr(""), description="Redis password (from a Secret).")
    router_replicas: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Replicas assumed when none is known: without Redis, or a replica that never reached it "
        "(otherwise the live count from Redis heartbeats divides the local fallback).",
    )
    quota_store_timeout_seconds: float = Field(0.25, gt=0, le=10, description="Slower store answers count as down.")
    quota_store_retry_seconds: float = Field(2.0, gt=0, le=600, description="How often a down store is tried again.")
    quota_heartbeat_seconds: float = Field(
        2.0,
        gt=0,
        le=600,
        description="How often a replica checks the store, marks itself live and reads the shared counts.",
    )


class LocalCounters:
    """The same windows in process memory: the only store without Redis, the fallback with it.

    As a fallback it starts from the last known shared counts (`seeds`) and lets
    this replica use its share of what was left, (limit - seed) / divide_by
    (at least one request while any is left); it remembers what it has pushed
    back to Redis since (`unpushed`, `mark_pushed`).
    """

    def __init__(
        self, divide_by: int = 1, clock: Callable[[], float] = time.time, seeds: Mapping[Key, float] | None = None
    ) -> None:
        self.divide_by = divide_by
        self._clock = clock
        self._seeds = dict(seeds or {})
        self._counts: dict[Key, float] = {}
        self._pushed: dict[Key, float] = {}
        self._floored: set[Key] = set()

    def _share(self, key: Key, limit: float) -> tuple[float, float]:
        """(the shared count when local counting began, what this replica may add to it)."""
        seed = self._seeds.get(key, 0.0)
        return seed, max(limit - seed, 0.0) / self.divide_by

    def admit(self, tenant: str, limits: Limits) -> Refusal | None:
        now = self._clock()
        minute, day = int(now // _MINUTE), int(now // _DAY)
        self._forget_before(minute)
        to_minute = (minute + 1) * _MINUTE - now
        spent_limits = (
            ("tokens_per_minute", "tpm", minute, limits.tokens_per_minute, to_minute),
            ("cost_per_day_usd", "cost", day, limits.cost_per_day_usd, (day + 1) * _DAY - now),
        )
        for name, kind, window, limit, retry_after in spent_limits:
            if limit:
                seed, share = self._share((tenant, kind, window), limit)
                used = self._counts.get((tenant, kind, window), 0.0)
                if used >= share:
                    return Refusal(name, seed + used, retry_after)
        if limits.requests_per_minute:
            key = (tenant, "rpm", minute)
            seed, share = self._share(key, limits.requests_per_minute)
            allowed = math.floor(share) or (1 if share > 0 else 0)
            count = self._counts.get(key, 0.0)
            if count >= allowed:
                return Refusal("requests_per_minute", seed + count, to_minute)
            self._counts[key] = count + 1
        return None

    def record(self, tenant: str, tokens: int, cost: float) -> None:
        now = self._clock()
        minute, day = int(now // _MINUTE), int(now // _DAY)
        if tokens > 0:
            self._counts[(tenant, "tpm", minute)] = self._counts.get((tenant, "tpm", minute), 0) + tokens
        if cost > 0:
            self._counts[(tenant, "cost", day)] = self._counts.get((tenant, "cost", day), 0.0) + cost

    def unpushed(self, *, floors: bool) -> dict[Key, tuple[float, float]]:
        """Current windows not yet in Redis: (floor = the seed if Redis lost it, delta = counted since the last push)."""
        now = self._clock()
        current = {"rpm": int(now // _MINUTE), "tpm": int(now // _MINUTE), "cost": int(now // _DAY)}
        pending: dict[Key, tuple[float, float]] = {}
        for key in self._seeds.keys() | self._counts.keys():
            if key[2] < current[key[1]]:
                continue
            delta = self._counts.get(key, 0.0) - self._pushed.get(key, 0.0)
            floor = self._seeds.get(key, 0.0) if floors and key not in self._floored else 0.0
            if delta > 0 or floor > 0:
                pending[key] = (floor, delta)
        return pending

    def mark_pushed(self, tenant: str, pushes: list[Push]) -> None:
        for push in pushes:
            key = (tenant, push.kind, push.window)
            self._pushed[key] = self._pushed.get(key, 0.0) + push.delta
            self._floored.add(key)

    def _forget_before(self, minute: int) -> None:
        if len(self._counts) + len(self._seeds) < 4096:
            return
        today = int(minute * _MINUTE // _DAY)

        def current(key: Key) -> bool:
            return key[2] >= (today if key[1] == "cost" else minute)

        self._counts = {key: value for key, value in self._counts.items() if current(key)}
        self._seeds = {key: value for key, value in self._seeds.items() if current(key)}


class QuotaGate:
    """Admits or refuses a tenant's request and records what answers used; fails open when Redis is down."""

    def __init__(
        self,
        shared: RedisCounters | None,
        *,
        replicas: int,
        retry_seconds: float,
        heartbeat_seconds: float = 2.0,
        on_store_change: Callable[[bool], Any] | None = None,
        replica_id: str = "",
    ) -> None:
        self._shared = shared
        # The Redis exceptions, known only once redis is imported (a router without a store never imports it).
        self._store_errors = quota_store.store_errors() if shared is not None else (OSError, TimeoutError)
        self._static_replicas = replicas
        self._live_counts: list[tuple[float, int]] = []  # (monotonic time, live replicas) per heartbeat
        self._retry_seconds = retry_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._on_store_change = on_store_change
        self._replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._offset = 0.0  # Redis's clock minus ours: local windows line up with the shared ones
        self._known: dict[Key, float] = {}
        self._epoch: str | None = None  # the Redis lifetime our known counts come from
        self._restoring = asyncio.Lock()
        self._local = LocalCounters(divide_by=replicas, clock=self._clock)
        self._store_up = shared is not None
        self._next_try = 0.0
        self._recovering = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: QuotaSettings, on_store_change: Callable[[bool], Any] | None = None) -> QuotaGate:
        shared = None
        if settings.quota_redis_url:
            shared = quota_store.connect(
                settings.quota_redis_url,
                settings.quota_redis_password.get_secret_value() or None,
                settings.quota_store_timeout_seconds,
            )
            log.info("tenant quotas shared through redis", heartbeat_seconds=settings.quota_heartbeat_seconds)
        elif settings.router_replicas > 1:
            log.warning(
                "no LLMMESH_QUOTA_REDIS_URL: tenant limits are enforced per replica, each at limit / replicas",
                replicas=settings.router_replicas,
            )
        return cls(
            shared,
            replicas=settings.router_replicas,
            retry_seconds=settings.quota_store_retry_seconds,
            heartbeat_seconds=settings.quota_heartbeat_seconds,
            on_store_change=on_store_change,
        )

    @property
    def mode(self) -> str:
        """`shared`, `local` (no store configured) or `local-fallback` (store unreachable)."""
        if self._shared is None:
            return "local"
        return "shared" if self._store_up else "local-fallback"

    @property
    def live_replicas(self) -> int | None:
        """The most replicas live in Redis over the last heartbeat lifetime; None before the first heartbeat.

        The most, not the last: right after a Redis restart the set holds only the
        replicas that have beaten since, and an outage then must not count the others out.
        """
        return max((count for _, count in self._live_counts), default=None)

    def _note(self, beat: Heartbeat) -> None:
        now = time.monotonic()
        self._live_counts = [(at, n) for at, n in self._live_counts if now - at <= self._live_seconds]
        self._live_counts.append((now, beat.live_replicas))
        self._offset = beat.now - time.time()

    async def start(self) -> None:
        """First heartbeat (reports the store's health either way), then the timer that repeats it."""
        if self._shared is None:
            return
        await self._tick()
        if self._on_store_change is not None:
            self._on_store_change(self._store_up)
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="quota-store-heartbeat")

    async def admit(self, tenant: Tenant | None) -> None:
        """Counts the request, or raises RESOURCE_EXHAUSTED with RetryInfo."""
        if tenant is None or not _has_limits(tenant.limits):
            return
        limits = tenant.limits
        refusal, mode = await self._use_store(
            lambda shared: shared.admit(
                tenant.name,
                limits.requests_per_minute or 0,
                limits.tokens_per_minute or 0,
                limits.cost_per_day_usd or 0,
            ),
            lambda local: local.admit(tenant.name, limits),
        )
        if refusal is not None:
            raise _refused(tenant, refusal, mode, self._local.divide_by)

    async def record(self, tenant: Tenant | None, tokens: int, cost: float) -> None:
        """Adds an answer's tokens and estimated cost to the tenant's windows."""
        if tenant is None or not _has_limits(tenant.limits) or (tokens <= 0 and cost <= 0):
            return

        async def shared_record(shared: RedisCounters) -> tuple[None, Seen]:
            return None, await shared.record(tenant.name, tokens, cost)

        await self._use_store(shared_record, lambda local: local.record(tenant.name, tokens, cost))

    async def _use_store(
        self,
        shared_call: Callable[[RedisCounters], Awaitable[tuple[Any, Seen]]],
        local_call: Callable[[LocalCounters], Any],
    ) -> tuple[Any, str]:
        """(result, the counts that gave it): shared while the store answers, else this replica's share."""
        if self._shared is None:
            return local_call(self._local), "local"
        if self._store_up or await self._recover():
            try:
                result, seen = await self._call_shared(shared_call)
            except self._store_errors as error:
                self._fall_back(error)
            else:
                await self._take_in(seen)
                return result, "shared"
        return local_call(self._local), "local-fallback"

    async def _call_shared(self, call: Callable[[RedisCounters], Awaitable[Any]]) -> Any:
        assert self._shared is not None
        try:
            return await call(self._shared)
        except quota_store.stale_connection_error():
            # Fails at once: a pooled connection from before a Redis restart. Drop them all and try
            # once more on a fresh one (the new epoch it answers with says what to put back).
            await self._shared.drop_connections()
            return await call(self._shared)

    async def _take_in(self, seen: Seen) -> None:
        """Learns the counts a script saw, after putting back what a restarted Redis lost."""
        if seen.epoch != self._epoch:
            try:
                await self._adopt_epoch(seen.epoch)
            except self._store_errors as error:
                self._fall_back(error)
                return
        self._learn(seen.counts)

    async def _adopt_epoch(self, epoch: str) -> None:
        """A Redis we have not seen before: if it replaced one we knew, its counts start from what we knew."""
        assert self._shared is not None
        async with self._restoring:
            if epoch == self._epoch:
                return
            if not epoch:  # no heartbeat has marked this Redis yet
                epoch = (await self._shared.heartbeat(self._replica_id, self._live_seconds)).seen.epoch
            if self._epoch is not None and epoch != self._epoch:
                log.warning("quota store restarted empty: putting back the counts this replica knew")
                await self._restore({key: (count, 0.0) for key, count in self._known.items()})
            self._epoch = epoch

    async def _restore(self, pushes: Mapping[Key, tuple[float, float]]) -> None:
        assert self._shared is not None
        for tenant, windows in by_tenant(pushes).items():
            await self._shared.reconcile(tenant, windows)

    def _learn(self, seen: Mapping[Key, float]) -> None:
        """Keeps the highest shared count seen per window: counts only grow inside a window."""
        for key, count in seen.items():
            if count > self._known.get(key, -1.0):
                self._known[key] = count

    def _fall_back(self, error: BaseException) -> None:
        """Redis went away: local counters from the last known counts, this replica's share of what is left."""
        if not self._store_up:
            return
        self._store_up = False
        self._next_try = time.monotonic() + self._retry_seconds
        divide_by, source = (
            (self.live_replicas, "live heartbeats")
            if self.live_replicas
            else (self._static_replicas, "LLMMESH_ROUTER_REPLICAS")
        )
        self._local = LocalCounters(divide_by=divide_by, clock=self._clock, seeds=self._known)
        log.warning(
            "quota store UNREACHABLE: failing open to this replica's share of each limit until it answers",
            replicas=divide_by,
            replicas_from=source,
            error_type=type(error).__name__,
            retry_seconds=self._retry_seconds,
        )
        if self._on_store_change is not None:
            self._on_store_change(False)

    async def _recover(self, *, now: bool = False) -> bool:
        """Back to shared counts if Redis answers: its lost counts restored, local usage added first."""
        if self._store_up:
            return True
        if (not now and time.monotonic() < self._next_try) or self._recovering.locked():
            return False
        async with self._recovering:
            self._next_try = time.monotonic() + self._retry_seconds
            try:
                assert self._shared is not None
                await self._shared.drop_connections()
                beat = await self._shared.heartbeat(self._replica_id, self._live_seconds)
                lost = self._epoch is not None and beat.seen.epoch != self._epoch
                if not await self._push_local(floors=lost):
                    return False
            except self._store_errors:
                return False
            # No await since the last push found nothing left: no local count can be lost.
            self._store_up, self._epoch = True, beat.seen.epoch
            self._note(beat)
            self._local = LocalCounters(divide_by=self._static_replicas, clock=self._clock)
        log.warning("quota store reachable again: local usage added, tenant limits shared across replicas")
        if self._on_store_change is not None:
            self._on_store_change(True)
        return True

    async def _push_local(self, *, floors: bool) -> bool:
        """Pushes the fallback's counts (and floors, if Redis lost them) until none is left."""
        for _ in range(10):
            pending = self._local.unpushed(floors=floors)
            if not pending:
                return True
            assert self._shared is not None
            for tenant, pushes in by_tenant(pending).items():
                await self._shared.reconcile(tenant, pushes)
                self._local.mark_pushed(tenant, pushes)
        return False

    @property
    def _live_seconds(self) -> float:
        return _LIVE_PERIODS * self._heartbeat_seconds

    def _clock(self) -> float:
        return time.time() + self._offset

    async def _tick(self) -> None:
        """One heartbeat: the health of the store, the live replicas and the shared counts, without traffic."""
        if not self._store_up:
            await self._recover(now=True)
            return
        try:
            beat = await self._call_shared(lambda shared: shared.heartbeat(self._replica_id, self._live_seconds))
        except self._store_errors as error:
            self._fall_back(error)
            return
        await self._take_in(beat.seen)
        self._note(beat)
        minute, day = int(beat.now // _MINUTE), int(beat.now // _DAY)
        self._known = {
            key: count for key, count in self._known.items() if key[2] >= (day if key[1] == "cost" else minute)
        }

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds if self._store_up else self._retry_seconds)
            try:
                await self._tick()
            except Exception as error:  # noqa: BLE001 - the timer must outlive any one bad beat
                log.warning("quota store heartbeat failed", error_type=type(error).__name__)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._shared is not None:
            if self._store_up:
                with contextlib.suppress(*self._store_errors):
                    await self._shared.leave(self._replica_id)
            await self._shared.close()


def _has_limits(limits: Limits) -> bool:
    return bool(limits.requests_per_minute or limits.tokens_per_minute or limits.cost_per_day_usd)


def _refused(tenant: Tenant, refusal: Refusal, mode: str, divided_by: int) -> MeshError:
    limit_value = getattr(tenant.limits, refusal.limit)
    budget = refusal.limit == "cost_per_day_usd"
    what = (
        f"its daily budget of ${limit_value:g} (spent ${refusal.used:.4f})"
        if budget
        else f"its {refusal.limit.replace('_', ' ')} limit of {limit_value} (used {refusal.used:g})"
    )
    metadata = {"tenant": tenant.name, "limit": refusal.limit, "quota_mode": mode}
    if mode != "shared":
        # Which share refused it: the limit was split this many ways while counted in this process.
        metadata["quota_replicas"] = str(divided_by)
    return MeshError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"tenant {tenant.name!r} has reached {what}; retry in {refusal.retry_after:.1f}s",
        reason=REASON_TENANT_BUDGET_EXHAUSTED if budget else REASON_TENANT_RATE_LIMITED,
        metadata=metadata,
        retry_after=refusal.retry_after,
    )

"""The shared quota counts in Redis: Lua scripts, replica heartbeats, reconciliation after an outage.

Every script reads Redis's own clock (`TIME`), so replicas agree on the
windows whatever their clocks say, and returns the counts it saw: the router
keeps them as the last known shared counts, which seed its local counters
when Redis goes away (see quotas.py).

Keys: `llmmesh:quota:{<tenant>}:rpm:<minute>`, `:tpm:<minute>`,
`:cost:<day>` (expiring on their own), each with a `:floor` companion
after a Redis restart; `llmmesh:quota:epoch`, marking one Redis lifetime;
`llmmesh:quota:replicas`, a sorted
set of router replica ids scored by their last heartbeat (the live replica
count); `llmmesh:quota:active:<day>`, the tenants counted today, whose
counts every heartbeat reads back (cost: one GET per tenant and window).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # redis is imported only by a router that shares its quotas (connect below)
    from redis.asyncio import Redis

# (tenant, kind, window): kind is rpm / tpm (window: minute) or cost (window: day), on Redis's clock.
Key = tuple[str, str, int]
KINDS = ("rpm", "tpm", "cost")
REPLICAS_KEY = "llmmesh:quota:replicas"
# A random value set by the first heartbeat a Redis gets: a different one means it restarted empty.
EPOCH_KEY = "llmmesh:quota:epoch"
_TTL = {"rpm": 120, "tpm": 120, "cost": 172800}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which limit is full, what is used, and when its window rolls over."""

    limit: str
    used: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Seen:
    """What a script saw: the counts of the windows it touched and the store's epoch ('' when unmarked)."""

    counts: dict[Key, float]
    epoch: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What one heartbeat learnt: Redis's clock, the live replicas, every active tenant's counts, the epoch."""

    now: float
    live_replicas: int
    seen: Seen


@dataclass(frozen=True, slots=True)
class Push:
    """One window to put back: a `floor` it lost in a restart (0: none) and a `delta` counted locally."""

    kind: str
    window: int
    floor: float
    delta: float


# A window's count is its key plus `<key>:floor`: what replicas knew of it when Redis restarted
# empty (the highest of their last known counts), so the counts made since are not overwritten.
_NOW = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local minute = math.floor(now / 60)
local day = math.floor(now / 86400)
local epoch = redis.call('GET', '"""
    + EPOCH_KEY
    + """') or ''
local function count(key)
  return tonumber(redis.call('GET', key) or '0') + tonumber(redis.call('GET', key .. ':floor') or '0')
end
"""
)

# ARGV: tenant, requests/min, tokens/min, cost/day (0: no limit)
#   → {limit, used, seconds to rollover, minute, day, rpm count, tpm used, cost spent, epoch}
_ADMIT = (
    _NOW
    + """
local prefix = 'llmmesh:quota:{' .. ARGV[1] .. '}'
local to_minute = (minute + 1) * 60 - now
local active = 'llmmesh:quota:active:' .. day
redis.call('SADD', active, ARGV[1])
redis.call('EXPIRE', active, 172800)
local seen = {tostring(minute), tostring(day), '0', '0', '0'}
local function refuse(limit, used, retry)
  return {limit, tostring(used), tostring(retry), seen[1], seen[2], seen[3], seen[4], seen[5], epoch}
end
local tpm = tonumber(ARGV[3])
if tpm > 0 then
  local used = count(prefix .. ':tpm:' .. minute)
  seen[4] = tostring(used)
  if used >= tpm then return refuse('tokens_per_minute', used, to_minute) end
end
local cpd = tonumber(ARGV[4])
if cpd > 0 then
  local spent = count(prefix .. ':cost:' .. day)
  seen[5] = tostring(spent)
  if spent >= cpd then return refuse('cost_per_day_usd', spent, (day + 1) * 86400 - now) end
end
local rpm = tonumber(ARGV[2])
if rpm > 0 then
  local key = prefix .. ':rpm:' .. minute
  local total = redis.call('INCR', key)
  if total == 1 then redis.call('EXPIRE', key, 120) end
  total = total + tonumber(redis.call('GET', key .. ':floor') or '0')
  if total > rpm then
    redis.call('DECR', key)
    seen[3] = tostring(total - 1)
    return refuse('requests_per_minute', total - 1, to_minute)
  end
  seen[3] = tostring(total)
end
return refuse('', 0, 0)
"""
)

# ARGV: tenant, tokens, cost  → {minute, day, tpm used, cost spent, epoch}
_RECORD = (
    _NOW
    + """
local prefix = 'llmmesh:quota:{' .. ARGV[1] .. '}'
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local used, spent = '0', '0'
if tokens > 0 then
  local key = prefix .. ':tpm:' .. minute
  redis.call('INCRBY', key, tokens)
  redis.call('EXPIRE', key, 120)
  used = tostring(count(key))
end
if cost > 0 then
  local key = prefix .. ':cost:' .. day
  redis.call('INCRBYFLOAT', key, cost)
  redis.call('EXPIRE', key, 172800)
  spent = tostring(count(key))
end
return {tostring(minute), tostring(day), used, spent, epoch}
"""
)

# ARGV: replica id, seconds a heartbeat stays live, an epoch to set if the store has none
#   → {now, live replicas, minute, day, epoch, then per active tenant: name, rpm, tpm, cost}
_HEARTBEAT = (
    _NOW
    + """
local replicas = '"""
    + REPLICAS_KEY
    + """'
local ttl = tonumber(ARGV[2])
if epoch == '' then
  redis.call('SET', '"""
    + EPOCH_KEY
    + """', ARGV[3])
  epoch = ARGV[3]
end
redis.call('ZADD', replicas, now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', replicas, '-inf', now - ttl)
redis.call('EXPIRE', replicas, math.ceil(ttl * 10))
local out = {tostring(now), tostring(redis.call('ZCARD', replicas)), tostring(minute), tostring(day), epoch}
for _, name in ipairs(redis.call('SMEMBERS', 'llmmesh:quota:active:' .. day)) do
  local prefix = 'llmmesh:quota:{' .. name .. '}'
  table.insert(out, name)
  table.insert(out, tostring(count(prefix .. ':rpm:' .. minute)))
  table.insert(out, tostring(count(prefix .. ':tpm:' .. minute)))
  table.insert(out, tostring(count(prefix .. ':cost:' .. day)))
end
return out
"""
)

# ARGV: tenant, then per window: kind, window, floor, delta, ttl. The floor only ever rises
# (several replicas put back what each knew: the highest wins); the delta is added to the count.
_RECONCILE = """
local prefix = 'llmmesh:quota:{' .. ARGV[1] .. '}'
local day = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
for i = 2, #ARGV, 5 do
  local key = prefix .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1]
  local floor, delta, ttl = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4]
  if floor > tonumber(redis.call('GET', key .. ':floor') or '0') then
    redis.call('SET', key .. ':floor', string.format('%.17g', floor), 'EX', ttl)
  end
  if delta > 0 then
    if ARGV[i] == 'cost' then
      redis.call('INCRBYFLOAT', key, string.format('%.17g', delta))
    else
      redis.call('INCRBY', key, string.format('%d', delta))
    end
    redis.call('EXPIRE', key, ttl)
  end
end
local active = 'llmmesh:quota:active:' .. day
redis.call('SADD', active, ARGV[1])
redis.call('EXPIRE', active, 172800)
return 1
"""


def connect(url: str, password: str | None, timeout: float) -> RedisCounters:
    """A client for the shared windows: no retries of its own (the gate falls back instead)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = Redis.from_url(
        url,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    return RedisCounters(client, timeout)


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store call raises when Redis is down or slow."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


def stale_connection_error() -> type[BaseException]:
    """What a pooled connection from before a Redis restart raises at once."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    return RedisConnectionError


class RedisCounters:
    """The shared windows: one Lua script per admission, recorded answer, heartbeat or reconciliation."""

    def __init__(self, client: Redis, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._reconcile = client.register_script(_RECONCILE)

    async def _run(self, script: Any, args: Sequence[str | int | float]) -> list[str]:
        reply = await asyncio.wait_for(script(args=list(args)), self._timeout)
        return [_text(part) for part in reply] if isinstance(reply, list) else [_text(reply)]

    async def admit(self, tenant: str, rpm: int, tpm: int, cpd: float) -> tuple[Refusal | None, Seen]:
        """Checks and counts one request; returns the refusal (if any) and the counts Redis holds."""
        reply = await self._run(self._admit, [tenant, rpm, tpm, repr(cpd)])
        minute, day = int(reply[3]), int(reply[4])
        counts = {(tenant, "rpm", minute): float(reply[5]), (tenant, "tpm", minute): float(reply[6])}
        counts[(tenant, "cost", day)] = float(reply[7])
        refusal = Refusal(reply[0], float(reply[1]), float(reply[2])) if reply[0] else None
        return refusal, Seen(counts, reply[8])

    async def record(self, tenant: str, tokens: int, cost: float) -> Seen:
        reply = await self._run(self._record, [tenant, tokens, repr(cost)])
        counts: dict[Key, float] = {}
        if tokens > 0:
            counts[(tenant, "tpm", int(reply[0]))] = float(reply[2])
        if cost > 0:
            counts[(tenant, "cost", int(reply[1]))] = float(reply[3])
        return Seen(counts, reply[4])

    async def heartbeat(self, replica_id: str, live_seconds: float) -> Heartbeat:
        """Marks this replica live (and the store, if unmarked); returns the live count and the counts."""
        reply = await self._run(self._heartbeat, [replica_id, repr(live_seconds), uuid.uuid4().hex])
        minute, day = int(reply[2]), int(reply[3])
        counts: dict[Key, float] = {}
        for at in range(5, len(reply), 4):
            name = reply[at]
            counts[(name, "rpm", minute)] = float(reply[at + 1])
            counts[(name, "tpm", minute)] = float(reply[at + 2])
            counts[(name, "cost", day)] = float(reply[at + 3])
        return Heartbeat(float(reply[0]), max(int(reply[1]), 1), Seen(counts, reply[4]))

    async def reconcile(self, tenant: str, pushes: Sequence[Push]) -> None:
        args: list[str | int | float] = [tenant]
        for push in pushes:
            args += [push.kind, push.window, repr(push.floor), repr(push.delta), _TTL[push.kind]]
        await self._run(self._reconcile, args)

    async def leave(self, replica_id: str) -> None:
        """This replica stops: the others stop counting it at once."""
        await asyncio.wait_for(self._client.zrem(REPLICAS_KEY, replica_id), self._timeout)

    async def drop_connections(self) -> None:
        """Closes every pooled connection (in use or not): after a Redis restart they are all dead."""
        await self._client.connection_pool.disconnect()

    async def close(self) -> None:
        await self._client.aclose()


def by_tenant(pushes: Mapping[Key, tuple[float, float]]) -> dict[str, list[Push]]:
    """Groups (floor, delta) per window into one reconciliation call per tenant."""
    grouped: dict[str, list[Push]] = {}
    for (tenant, kind, window), (floor, delta) in pushes.items():
        grouped.setdefault(tenant, []).append(Push(kind, window, floor, delta))
    return grouped


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

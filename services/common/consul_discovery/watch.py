"""ConsulDiscovery: the router's live table from /v1/health/service/<name>?passing.

One blocking-query loop per watched service (index + explicit wait). On a
Consul error the loop backs off with full jitter and keeps the last good
table (stale-but-serving: an outage never empties the table, which would
fail every request while the adapters themselves are fine); `fresh` turns
False and says so through `on_status` listeners and `status()`. After an
error the next query starts again from index 0, an immediate read: a Consul
that came back with lower indexes (agent restart) would otherwise hold the
query for a whole wait. An index that goes backwards is reset the same way.
For `consul_settle_seconds` after an outage, answers only add instances: a
Consul agent that restarted has forgotten its services until their own
anti-entropy registers them again, and its first answers are incomplete;
once the window closes the latest answer applies as it is.
Entries Consul returns that cannot be used (no address, bad port) are logged
and skipped, one by one.
With ACLs on, Consul drops the entries a token may not read from the answer
without an error, and says so only in the X-Consul-Results-Filtered-By-ACLs
header: a token without `node:read` gets `200 []` for a service whose
instances are all passing. Such an answer is a misconfiguration, not an
empty service: the watch logs an ERROR naming the missing permissions and
keeps its last table (and turns not fresh) until Consul answers unfiltered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.consul_discovery.client import (
    AsyncConsul,
    HealthAnswer,
    blocking_read_timeout,
    consul_client,
    go_duration,
    passing_instances,
)
from services.common.discovery import Discovery, Endpoint
from services.common.settings import ENV_PREFIX

log = structlog.get_logger(__name__)

_BACKOFF_BASE_SECONDS = 0.1
# Consul answers a blocking query at once when the index moved; if it keeps
# answering at once with the same index, something in between is broken:
# this pause keeps the loop from spinning on it.
_SAME_INDEX_PAUSE_SECONDS = 0.05
ACL_FILTERED_ERROR = (
    "ACLs hid instances: the Consul token (CONSUL_HTTP_TOKEN) lacks node:read on their nodes or "
    'service:read on the service; give it `node_prefix "" { policy = "read" }` and '
    '`service_prefix "<name>" { policy = "read" }`'
)


class WatchSettings(BaseSettings):
    """LLMMESH_* settings of a process that watches Consul (the router)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    consul_wait_seconds: float = Field(60.0, gt=0, le=600, description="Blocking query wait.")
    consul_backoff_max_seconds: float = Field(10.0, gt=0, le=600, description="Cap of the retry backoff.")
    consul_settle_seconds: float = Field(
        15.0,
        ge=0,
        le=3600,
        description="After an outage, answers only add instances for this long (agents re-register meanwhile).",
    )
    consul_startup_wait_seconds: float = Field(
        5.0, ge=0, le=600, description="How long the router waits for Consul's first answer before serving anyway."
    )


class ConsulAnswerError(Exception):
    """Consul answered, but not with a list of health entries."""


def endpoint_of(entry: Any) -> tuple[Endpoint | None, str]:
    """An Endpoint from one /v1/health/service entry, or None and why it cannot be used."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("Service"), Mapping):
        return None, "entry has no Service object"
    service = entry["Service"]
    node: Mapping[str, Any] = entry["Node"] if isinstance(entry.get("Node"), Mapping) else {}
    instance_id = service.get("ID")
    if not isinstance(instance_id, str) or not instance_id:
        return None, "service has no ID"
    # Consul leaves Service.Address empty when the instance registered without one: it is the node's.
    address = service.get("Address") or node.get("Address")
    if not isinstance(address, str) or not address:
        return None, f"{instance_id}: no Service.Address and no Node.Address"
    port = service.get("Port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return None, f"{instance_id}: port {port!r} is not in 1-65535"
    meta = service.get("Meta") if isinstance(service.get("Meta"), Mapping) else {}
    host_port = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    clean_meta = {str(k): str(v) for k, v in meta.items() if isinstance(v, str)}
    return Endpoint(host_port, instance_id, clean_meta), ""


class ConsulDiscovery(Discovery):
    """Watches healthy instances of each service in Consul and publishes every change."""

    def __init__(self, settings: WatchSettings, consul: AsyncConsul | None = None) -> None:
        super().__init__()
        self._settings = settings
        self._consul = consul or consul_client(blocking_read_timeout(settings.consul_wait_seconds))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._answered: dict[str, asyncio.Event] = {}
        self._stale: dict[str, tuple[float, str]] = {}  # service → (since, last error)
        self._settling: dict[str, asyncio.TimerHandle] = {}  # service → end of its settle window
        self._latest: dict[str, tuple[Endpoint, ...]] = {}  # service → Consul's last answer
        self._acl_filtered: dict[str, bool] = {}  # service → ACLs hid every instance (else some)

    async def watch(self, services: Iterable[str]) -> None:
        """Starts a watch per new service; waits (bounded) for Consul's first answer about each."""
        loop = asyncio.get_running_loop()
        new = [service for service in services if service not in self._tasks]
        for service in new:
            self._answered[service] = asyncio.Event()
            self._tasks[service] = loop.create_task(self._watch(service), name=f"consul-watch {service}")
        if not new:
            return
        waits = [loop.create_task(self._answered[service].wait()) for service in new]
        _, pending = await asyncio.wait(waits, timeout=self._settings.consul_startup_wait_seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("serving before consul answered", consul=self._consul.address, status=self.status())

    async def close(self) -> None:
        for timer in self._settling.values():
            timer.cancel()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await self._consul.aclose()

    def status(self) -> str:
        if not self._stale:
            return f"consul ok ({len(self._table)} services)"
        now = time.monotonic()
        parts = [
            f"{service} stale for {now - since:.1f}s ({error})"
            for service, (since, error) in sorted(self._stale.items())
        ]
        return "consul unreachable, serving the last good table: " + "; ".join(parts)

    async def _watch(self, service: str) -> None:
        index = 0
        failures = 0
        wait = go_duration(self._settings.consul_wait_seconds)
        while True:
            try:
                answer = await passing_instances(self._consul, service, index=index, wait=wait)
                new_index = _parse_index(answer.index)
                endpoints = self._usable(service, answer.entries)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any Consul failure: keep the table, back off, retry
                failures += 1
                self._went_stale(service, error)
                index = 0
                await asyncio.sleep(_backoff(failures, self._settings.consul_backoff_max_seconds))
                continue
            failures = 0
            if new_index < index:
                log.info("consul index went backwards; reading afresh", service=service, old=index, new=new_index)
                new_index = 0
            elif new_index == index:
                await asyncio.sleep(_SAME_INDEX_PAUSE_SECONDS)
            index = new_index
            if self._hidden_by_acls(service, answer, endpoints):
                continue
            self._came_back(service)
            self._apply(service, endpoints)
            self._answered[service].set()

    def _hidden_by_acls(self, service: str, answer: HealthAnswer, endpoints: tuple[Endpoint, ...]) -> bool:
        """True (table kept, ERROR logged once) when ACLs filtered the answer down to nothing."""
        if not answer.filtered_by_acls:
            self._acl_filtered.pop(service, None)
            return False
        hidden_all = not endpoints
        if self._acl_filtered.get(service) != hidden_all:
            log.error(
                "consul answer filtered by ACLs to nothing; keeping the last good table"
                if hidden_all
                else "consul answer partly filtered by ACLs; serving the instances the token can see",
                service=service,
                consul=self._consul.address,
                instances=len(self.endpoints(service)) if hidden_all else len(endpoints),
                fix=ACL_FILTERED_ERROR,
            )
        self._acl_filtered[service] = hidden_all
        if not hidden_all:
            return False
        since = self._stale.get(service, (time.monotonic(), ""))[0]
        self._stale[service] = (since, "filtered by ACLs")
        self._set_fresh(False)
        self._answered[service].set()
        return True

    def _apply(self, service: str, endpoints: tuple[Endpoint, ...]) -> None:
        self._latest[service] = endpoints
        if service in self._settling:
            merged = {e.instance_id: e for e in (*self.endpoints(service), *endpoints)}
            endpoints = tuple(sorted(merged.values(), key=lambda e: e.instance_id))
        self._publish(service, endpoints)

    def _settled(self, service: str) -> None:
        self._settling.pop(service, None)
        log.info("consul settle window over; applying its answer as is", service=service)
        self._publish(service, self._latest.get(service, ()))

    def _usable(self, service: str, entries: Any) -> tuple[Endpoint, ...]:
        if not isinstance(entries, list):
            raise ConsulAnswerError(f"expected a list of health entries, got {type(entries).__name__}")
        endpoints: dict[str, Endpoint] = {}
        for entry in entries:
            endpoint, problem = endpoint_of(entry)
            if endpoint is None:
                log.warning("consul entry skipped", service=service, problem=problem)
                continue
            endpoints[endpoint.instance_id] = endpoint
        return tuple(sorted(endpoints.values(), key=lambda e: e.instance_id))

    def _went_stale(self, service: str, error: BaseException) -> None:
        description = f"{type(error).__name__}: {error}"[:200]
        if service not in self._stale:
            log.warning(
                "consul watch failed; keeping the last good table",
                service=service,
                consul=self._consul.address,
                instances=len(self.endpoints(service)),
                error=description,
            )
            self._stale[service] = (time.monotonic(), description)
        else:
            since, previous = self._stale[service]
            self._stale[service] = (since, description)
            # A new kind of failure is news; the same one again (Consul still down) is noise.
            (log.debug if description == previous else log.warning)(
                "consul watch still failing", service=service, error=description
            )
        self._set_fresh(False)

    def _came_back(self, service: str) -> None:
        stale = self._stale.pop(service, None)
        if stale is not None and self._settings.consul_settle_seconds > 0 and self.endpoints(service):
            if timer := self._settling.pop(service, None):
                timer.cancel()
            self._settling[service] = asyncio.get_running_loop().call_later(
                self._settings.consul_settle_seconds, self._settled, service
            )
        if stale is not None:
            log.info(
                "consul watch resumed",
                service=service,
                stale_seconds=round(time.monotonic() - stale[0], 2),
                instances=len(self.endpoints(service)),
            )
        if not self._stale:
            self._set_fresh(True)


def _parse_index(header: Any) -> int:
    try:
        index = int(header)
    except (TypeError, ValueError):
        raise ConsulAnswerError(f"X-Consul-Index {header!r} is not a number") from None
    # Consul's index is never 0; a client treats one as 1 so its next query blocks.
    return max(index, 1)


def _backoff(failures: int, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^failures)], so routers do not retry in step."""
    return random.uniform(0, min(cap, _BACKOFF_BASE_SECONDS * 2 ** min(failures, 20)))

"""Service discovery: which instances serve a service, kept current.

Two backends share one interface: static (a YAML file, the embedded default
for one machine) and Consul (services.common.consul). Consumers subscribe to
changes; after resolution the router's code path is the same for both.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.yamlconfig import load_yaml_model


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One reachable instance of a service."""

    address: str
    instance_id: str
    meta: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


Listener = Callable[[str, tuple[Endpoint, ...]], None]
StatusListener = Callable[[bool, str], None]


class Discovery(abc.ABC):
    """The current endpoints of each watched service, and change notifications."""

    def __init__(self) -> None:
        self._table: dict[str, tuple[Endpoint, ...]] = {}
        self._listeners: list[Listener] = []
        self._status_listeners: list[StatusListener] = []
        self._fresh = True

    def subscribe(self, listener: Listener) -> None:
        """Calls `listener(service, endpoints)` now for known services and on every change."""
        self._listeners.append(listener)
        for service, endpoints in self._table.items():
            listener(service, endpoints)

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        return self._table.get(service, ())

    def on_status(self, listener: StatusListener) -> None:
        """Calls `listener(fresh, detail)` now and whenever the table turns stale or fresh again."""
        self._status_listeners.append(listener)
        listener(self._fresh, self.status())

    @property
    def fresh(self) -> bool:
        """False while the backend cannot be reached and the table may be out of date."""
        return self._fresh

    def _set_fresh(self, fresh: bool) -> None:
        if fresh == self._fresh:
            return
        self._fresh = fresh
        for listener in self._status_listeners:
            listener(fresh, self.status())

    def _publish(self, service: str, endpoints: tuple[Endpoint, ...]) -> None:
        if self._table.get(service) == endpoints and service in self._table:
            return
        self._table[service] = endpoints
        for listener in self._listeners:
            listener(service, endpoints)

    @abc.abstractmethod
    async def watch(self, services: Iterable[str]) -> None:
        """Starts tracking these services (idempotent)."""

    async def close(self) -> None:  # noqa: B027 - static discovery has nothing to release
        """Stops watching."""

    def status(self) -> str:
        """One line for health detail and logs."""
        return "ok"


class StaticFile(BaseModel):
    """services: {service name: [host:port, ...]}"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    services: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _addresses_have_ports(cls, services: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, addresses in services.items():
            for address in addresses:
                host, _, port = address.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"{name}: {address!r} is not host:port")
        return services


class StaticDiscovery(Discovery):
    """Endpoints from a YAML file; never changes while running."""

    def __init__(self, config: StaticFile) -> None:
        super().__init__()
        self._config = config

    @classmethod
    def from_file(cls, path: str | Path) -> StaticDiscovery:
        return cls(load_yaml_model(StaticFile, path))

    async def watch(self, services: Iterable[str]) -> None:
        for service in services:
            addresses = self._config.services.get(service, [])
            self._publish(service, tuple(Endpoint(address, address) for address in addresses))

    def status(self) -> str:
        return "static"

"""Helpers for tests against Consul (double or real) and mock adapters registered in it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.processes import ServiceProcess, start_service
from services.testing.consul_agent import ConsulAgentProcess
from services.testing.fake_consul import FakeConsul

# Short everything, so a module runs in seconds: checks every 200 ms (a real
# agent raises that to its 1 s floor), blocking queries of 2 s.
CHECK_INTERVAL_SECONDS = 0.2


def fake_consul_for_tests() -> FakeConsul:
    """The double with test floors: 100 ms checks, 0.5 s deregister-after, reaper every 200 ms."""
    return FakeConsul(min_check_interval=0.1, min_deregister_after=0.5, reap_interval=0.2)


@dataclass
class ConsulBackend:
    """One Consul agent under test, whichever kind."""

    kind: str
    server: FakeConsul | ConsulAgentProcess

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def fake(self) -> FakeConsul:
        """The double, for fault injection; skips the test on a real agent."""
        if not isinstance(self.server, FakeConsul):
            pytest.skip("fault injection needs the double; a real agent cannot be made to misbehave on cue")
        return self.server

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{self.address}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                raw = response.read()
                return response.status, dict(response.headers), json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def instances(self, service: str, *, passing: bool = False) -> list[dict[str, Any]]:
        """Service objects of the health entries, as Consul answers them now."""
        _, _, entries = self.request("GET", f"/v1/health/service/{service}" + ("?passing" if passing else ""))
        return [entry["Service"] for entry in entries]

    def ports(self, service: str, *, passing: bool = False) -> set[int]:
        return {instance["Port"] for instance in self.instances(service, passing=passing)}


def consul_env(backend: ConsulBackend, **extra: str) -> dict[str, str]:
    return {
        "LLMMESH_DISCOVERY": "consul",
        "CONSUL_HTTP_ADDR": backend.address,
        "LLMMESH_CONSUL_CHECK_INTERVAL_SECONDS": str(CHECK_INTERVAL_SECONDS),
        "LLMMESH_CONSUL_CHECK_TIMEOUT_SECONDS": "1",
        "LLMMESH_CONSUL_DEREGISTER_AFTER_SECONDS": "1",
        "LLMMESH_CONSUL_ANTI_ENTROPY_SECONDS": "0.3",
        "LLMMESH_CONSUL_WAIT_SECONDS": "2",
        "LLMMESH_CONSUL_BACKOFF_MAX_SECONDS": "0.5",
        "LLMMESH_CONSUL_SETTLE_SECONDS": "2",
        **extra,
    }


def routing_for(providers: list[str]) -> dict[str, Any]:
    """One model per provider instance (`m-<provider>` → the mock's mock-small), so tests share a router apart."""
    return {
        "providers": {name: {"kind": "mock"} for name in providers},
        "models": {f"m-{name}": {"provider": name, "upstream_model": "mock-small"} for name in providers},
    }


def start_router(backend: ConsulBackend, workdir: Path, providers: list[str], **env: str) -> ServiceProcess:
    routing_file = workdir / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(routing_for(providers)))
    return start_service(
        ["-m", "services.router"],
        name="router",
        workdir=workdir,
        env=consul_env(
            backend,
            LLMMESH_ROUTING_FILE=str(routing_file),
            LLMMESH_EJECT_BASE_SECONDS="30",
            LLMMESH_CONSUL_STARTUP_WAIT_SECONDS="1",
            **env,
        ),
    )


def start_adapter(
    backend: ConsulBackend, workdir: Path, provider: str, name: str, events_file: Path, **env: str
) -> ServiceProcess:
    mock_file = workdir / "mock.yaml"
    if not mock_file.exists():
        mock_file.write_text(yaml.safe_dump({"models": [{"name": "mock-small", "context_window": 8192}]}))
    return start_service(
        ["-m", "services.providers.mock"],
        name=name,
        workdir=workdir,
        env=consul_env(
            backend,
            LLMMESH_PROVIDER_INSTANCE=provider,
            LLMMESH_MOCK_CONFIG=str(mock_file),
            LLMMESH_MOCK_EVENTS_FILE=str(events_file),
            **env,
        ),
    )


def pids_served(events_file: Path) -> list[int]:
    """The pid of the adapter that answered each chat, in order."""
    if not events_file.exists():
        return []
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line]
    return [event["pid"] for event in events if event["event"] == "end"]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """wait_for for async tests: the event loop (and any load running on it) keeps going meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")

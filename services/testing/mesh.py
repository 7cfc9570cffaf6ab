"""Fixtures-in-a-box for tests of code that calls the mesh.

`MockMesh` starts a mock adapter and a router as real processes on loopback,
with the mock's behaviour and the routing file given as plain dicts, and
reads back what reached the mock from its events file.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from services.common.processes import ServiceProcess, start_service

DEFAULT_MOCK_MODELS: list[dict[str, Any]] = [
    {"name": "mock-small", "context_window": 8192},
    {"name": "mock-large", "context_window": 128000},
    {"name": "mock-agent", "context_window": 32000, "scripted": True},
]


def default_routing(fallbacks: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """A routing file with the mock models, `fallbacks` per model."""
    fallbacks = fallbacks or {}
    return {
        "providers": {"mock": {"kind": "mock"}},
        "models": {
            model["name"]: {
                "provider": "mock",
                "context_window": model["context_window"],
                "fallbacks": list(fallbacks.get(model["name"], [])),
            }
            for model in DEFAULT_MOCK_MODELS
        },
    }


def start_router(
    workdir: Path,
    routing: Mapping[str, Any],
    services: Mapping[str, Sequence[str]],
    *,
    env: Mapping[str, str] | None = None,
    name: str = "router",
) -> ServiceProcess:
    """A router process over `routing`, finding each service's instances (`services`: name → addresses)
    through static discovery; its files are written into `workdir`."""
    routing_file = workdir / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(dict(routing)))
    static_file = workdir / "static.yaml"
    static_file.write_text(yaml.safe_dump({"services": {key: list(value) for key, value in services.items()}}))
    files = {"LLMMESH_ROUTING_FILE": str(routing_file), "LLMMESH_STATIC_DISCOVERY_FILE": str(static_file)}
    return start_service(["-m", "services.router"], name=name, workdir=workdir, env={**(env or {}), **files})


class MockMesh:
    """A mock adapter (or several) and a router, started and stopped together."""

    def __init__(
        self,
        *,
        mock_config: Mapping[str, Any] | None = None,
        routing: Mapping[str, Any] | None = None,
        mock_instances: int = 1,
        env: Mapping[str, str] | None = None,
        mock_env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        """`env` goes to every process; `mock_env` to the mock adapters only, after `env`."""
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="llmmesh-test-"))
        self.events_file = self.workdir / "mock-events.jsonl"
        # None keeps the mock's embedded default (its models and the demo scripts).
        self.mock_config = dict(mock_config) if mock_config is not None else None
        self.routing = dict(routing or default_routing())
        self.mock_instances = mock_instances
        self.env = dict(env or {})
        self.mock_env = dict(mock_env or {})
        self.mocks: list[ServiceProcess] = []
        self.router: ServiceProcess | None = None

    def start(self) -> MockMesh:
        mock_env = {"LLMMESH_MOCK_EVENTS_FILE": str(self.events_file)}
        if self.mock_config is not None:
            mock_file = self.workdir / "mock.yaml"
            mock_file.write_text(yaml.safe_dump(self.mock_config))
            mock_env["LLMMESH_MOCK_CONFIG"] = str(mock_file)
        try:
            for index in range(self.mock_instances):
                self.mocks.append(
                    start_service(
                        ["-m", "services.providers.mock"],
                        name=f"mock-{index}",
                        workdir=self.workdir,
                        env={**self.env, **self.mock_env, **mock_env},
                    )
                )
            self.router = start_router(
                self.workdir,
                self.routing,
                {"llmmesh-provider-mock": [mock.address for mock in self.mocks]},
                env=self.env,
            )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def router_address(self) -> str:
        assert self.router is not None, "start() first"
        return self.router.address

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """What reached the mock adapters, in order."""
        if not self.events_file.exists():
            return []
        lines = [json.loads(line) for line in self.events_file.read_text().splitlines() if line]
        return [line for line in lines if event is None or line["event"] == event]

    def clear_events(self) -> None:
        self.events_file.unlink(missing_ok=True)

    def stop(self) -> None:
        for process in [p for p in (self.router, *self.mocks) if p is not None]:
            process.terminate()

    def __enter__(self) -> MockMesh:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

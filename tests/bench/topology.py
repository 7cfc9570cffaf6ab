"""The processes a scenario needs, started on loopback and stopped together.

Every process binds 127.0.0.1 on a free port (services.common.processes);
config files go into the run's work directory.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from services.common.processes import ServiceProcess, start_service
from tests.bench.fake_upstream import CHUNK_INTERVAL_ENV, STREAM_CHUNKS_ENV

# Adapters must not refuse bench load: the router, not the adapter limit, is what is measured.
ADAPTER_ENV = {"LLMMESH_MAX_IN_FLIGHT": "100000"}
MOCK_SERVICE = "llmmesh-provider-mock"


class Topology:
    """Starts processes by role and stops them all (reverse order) on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[ServiceProcess] = []

    def _start(self, argv: Sequence[str], name: str, env: Mapping[str, str]) -> ServiceProcess:
        process = start_service(argv, name=name, workdir=self.workdir, env=dict(env))
        self.processes.append(process)
        return process

    def together(self, *starters: Callable[[], ServiceProcess]) -> list[ServiceProcess]:
        """Starts independent processes at once (each start mostly waits on imports)."""
        with ThreadPoolExecutor(max_workers=len(starters)) as pool:
            futures = [pool.submit(starter) for starter in starters]
        return [future.result() for future in futures]

    def _write(self, name: str, content: Any) -> Path:
        path = self.workdir / name
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    def mock(self, name: str, config: Mapping[str, Any], *, events_file: Path | None = None) -> ServiceProcess:
        env = {**ADAPTER_ENV, "LLMMESH_MOCK_CONFIG": str(self._write(f"{name}.yaml", dict(config)))}
        if events_file is not None:
            env["LLMMESH_MOCK_EVENTS_FILE"] = str(events_file)
        return self._start(["-m", "services.providers.mock"], name, env)

    def router(
        self,
        name: str,
        routing: Mapping[str, Any],
        services: Mapping[str, Sequence[str]],
        *,
        extra_env: Mapping[str, str] | None = None,
    ) -> ServiceProcess:
        env = {
            **(extra_env or {}),
            "LLMMESH_ROUTING_FILE": str(self._write(f"{name}-routing.yaml", dict(routing))),
            "LLMMESH_STATIC_DISCOVERY_FILE": str(
                self._write(f"{name}-static.yaml", {"services": {k: list(v) for k, v in services.items()}})
            ),
        }
        return self._start(["-m", "services.router"], name, env)

    def proxy(self, name: str, upstream: str) -> ServiceProcess:
        return self._start(["-m", "tests.bench.proxy"], name, {"LLMMESH_BENCH_UPSTREAM": upstream})

    def fake_openai(self, name: str, *, stream_chunks: int = 50, chunk_interval_s: float = 0.0) -> ServiceProcess:
        env = {STREAM_CHUNKS_ENV: str(stream_chunks), CHUNK_INTERVAL_ENV: str(chunk_interval_s)}
        return self._start(["-m", "tests.bench.fake_upstream"], name, env)

    def openai_adapter(self, name: str, base_url: str, models: Sequence[str]) -> ServiceProcess:
        env = {
            **ADAPTER_ENV,
            # The fake checks no key; a non-empty one keeps the adapter on its normal path.
            "OPENAI_API_KEY": "sk-bench-not-a-real-key",
            "LLMMESH_OPENAI_BASE_URL": base_url,
            "LLMMESH_MODELS": ",".join(models),
        }
        return self._start(["-m", "services.providers.openai"], name, env)

    def agent(self, name: str, router: str, profiles: Mapping[str, Any]) -> ServiceProcess:
        env = {
            "LLMMESH_ROUTER_ADDRESS": router,
            "LLMMESH_AGENT_PROFILES": str(self._write(f"{name}-profiles.yaml", dict(profiles))),
        }
        return self._start(["-m", "services.agent"], name, env)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.process.poll() is None:
                process.signal(signal.SIGTERM)
        for process in reversed(self.processes):
            process.terminate(timeout=10)
        self.processes.clear()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

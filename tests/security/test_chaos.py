"""Chaos under steady load: adapter instances killed and restarted, a provider failing then recovering.

Bounded: about 25 s of load from 4 workers, at most MAX_REQUESTS requests.
Counts, not speeds, are asserted: zero failed requests (another instance or
a fallback model always exists), and the router's open files, threads and
memory stay flat.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service

pytestmark = pytest.mark.chaos

MAX_REQUESTS = 10_000
# Each worker paces itself, so the load is steady and every phase gets requests.
PAUSE_SECONDS = 0.01
WORKERS = 4
_LENIENT_BREAKER = {
    "consecutive_failures": 50,
    "failure_rate": 1.0,
    "window": 50,
    "min_calls": 50,
    "open_s": 1.0,
    "max_open_s": 2.0,
}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}, "mockb": {"kind": "mock"}},
    "models": {
        "chaos-a": {"provider": "mock", "upstream_model": "mock-small", "fallbacks": ["chaos-b"]},
        "chaos-b": {"provider": "mockb", "upstream_model": "mock-small", "fallbacks": ["chaos-a"]},
    },
    "defaults": {
        "max_retries": 2,
        "per_attempt_timeout_s": 3,
        "base_backoff_ms": 10,
        "max_backoff_ms": 100,
        "retry_budget": {"ratio": 1.0, "min_per_second": 1000},
        "breaker": _LENIENT_BREAKER,
        "provider_breaker": _LENIENT_BREAKER,
    },
}
HEALTHY = {"models": [{"name": "mock-small"}]}
FAILING = {"models": [{"name": "mock-small", "failures": [{"code": "UNAVAILABLE", "rate": 1.0}]}]}


@dataclass
class ChaosMesh:
    workdir: Path
    router: ServiceProcess
    adapters: dict[str, ServiceProcess]

    def restart(self, name: str, config: dict[str, object] | None = None, *, kill: bool = True) -> None:
        """Stops an adapter (SIGKILL or SIGTERM) and starts it again on the same port."""
        old = self.adapters[name]
        if kill:
            old.kill()
        else:
            old.terminate()
        self.adapters[name] = _adapter(self.workdir, name, config or HEALTHY, port=old.port)


def _adapter(workdir: Path, name: str, config: dict[str, object], port: int = 0) -> ServiceProcess:
    config_file = workdir / f"{name}-{time.monotonic_ns()}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return start_service(
        ["-m", "services.providers.mock"],
        name=name,
        workdir=workdir,
        env={"LLMMESH_MOCK_CONFIG": str(config_file), "LLMMESH_PORT": str(port)},
    )


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosMesh]:
    workdir = tmp_path_factory.mktemp("chaos")
    adapters: dict[str, ServiceProcess] = {}
    try:
        for name in ("m1", "m2", "mb"):
            adapters[name] = _adapter(workdir, name, HEALTHY)
        (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
        (workdir / "static.yaml").write_text(
            yaml.safe_dump(
                {
                    "services": {
                        "llmmesh-provider-mock": [adapters["m1"].address, adapters["m2"].address],
                        "llmmesh-provider-mockb": [adapters["mb"].address],
                    }
                }
            )
        )
        router = start_service(
            ["-m", "services.router"],
            name="router",
            workdir=workdir,
            env={
                "LLMMESH_ROUTING_FILE": str(workdir / "routing.yaml"),
                "LLMMESH_STATIC_DISCOVERY_FILE": str(workdir / "static.yaml"),
            },
        )
    except BaseException:
        for process in adapters.values():
            process.kill()
        raise
    mesh = ChaosMesh(workdir, router, adapters)
    yield mesh
    router.terminate()
    for process in mesh.adapters.values():
        process.kill()


@dataclass
class Load:
    """Counts per phase of a steady request stream."""

    phase: str = "warmup"
    sent: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    answered: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, stub: router_service_pb2_grpc.RouterServiceStub, index: int) -> None:
        own = index
        while not self.stop.is_set() and self.sent < MAX_REQUESTS:
            self.sent += 1
            own += 1
            model = "chaos-a" if own % 2 else "chaos-b"
            request = rpb.ChatRequest(
                model=model,
                messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="load")])],
            )
            phase = self.phase
            try:
                response = await stub.Chat(request, timeout=8)
            except grpc.aio.AioRpcError as error:
                self.failures.append((phase, f"{model}: {error.code().name}: {error.details()}"))
            else:
                self.answered[phase][response.model] += 1
            await asyncio.sleep(PAUSE_SECONDS)


def _resources(pid: int) -> tuple[int, int, int]:
    """Open file descriptors, threads and RSS (kB) of a process, from /proc."""
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return fds, int(status["Threads"]), int(status["VmRSS"].split()[0])


class TestChaos:
    async def test_steady_load_through_kills_restarts_and_failing_provider(self, chaos: ChaosMesh) -> None:
        """Zero failed requests through instance kills/restarts and a provider's 500s; no leaks in the router."""
        load = Load()
        async with grpc.aio.insecure_channel(chaos.router.address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            workers = [asyncio.create_task(load.worker(stub, index)) for index in range(WORKERS)]

            async def phase(name: str, seconds: float) -> None:
                load.phase = name
                await asyncio.sleep(seconds)

            try:
                await phase("warmup", 2.0)
                baseline = _resources(chaos.router.pid)
                await phase("steady", 2.0)
                for instance in ("m1", "m2"):
                    load.phase = f"{instance} killed"
                    await asyncio.to_thread(chaos.restart, instance)
                    await phase(f"{instance} restarted", 3.0)
                load.phase = "mb failing"
                await asyncio.to_thread(chaos.restart, "mb", FAILING, kill=False)
                await phase("mb failing", 3.0)
                load.phase = "mb recovering"
                await asyncio.to_thread(chaos.restart, "mb", HEALTHY)
                await phase("mb recovering", 3.0)
                await phase("recovered", 4.0)
            finally:
                load.stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
        await asyncio.sleep(1.0)  # let the router settle finished calls
        after = _resources(chaos.router.pid)

        assert load.sent >= 200, "the load loop barely ran"
        assert load.sent < MAX_REQUESTS, "the request bound ended the load before the last phase"
        assert load.failures == [], f"{len(load.failures)} of {load.sent} failed, first: {load.failures[:5]}"
        # While mb returned UNAVAILABLE, chaos-b's requests fell back to chaos-a and still answered.
        assert load.answered["mb failing"]["chaos-a"] > 0, {
            k: dict(v) for k, v in load.answered.items() if k.startswith(("mb", "rec"))
        }
        # After the restart, mb answers chaos-b again (its breaker closes after a probe).
        assert load.answered["recovered"]["chaos-b"] > 0, {
            k: dict(v) for k, v in load.answered.items() if k.startswith(("mb", "rec"))
        }
        fds, threads, rss = after
        base_fds, base_threads, base_rss = baseline
        assert fds <= base_fds + 16, f"open fds grew from {base_fds} to {fds}"
        assert threads <= base_threads + 4, f"threads grew from {base_threads} to {threads}"
        assert rss <= base_rss * 1.5 + 50_000, f"RSS grew from {base_rss} kB to {rss} kB"
        assert chaos.router.process.poll() is None

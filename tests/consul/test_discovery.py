"""Consul discovery end to end: mock adapters register, the router watches and balances.

Real processes on loopback: one router (LLMMESH_DISCOVERY=consul) for the
module, mock adapters per test, each test on its own provider instance
(service `llmmesh-provider-<name>`, model `m-<name>`) so tests share the
router without sharing instances.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess
from tests.consul.helpers import ConsulBackend, pids_served, start_adapter, start_router, until

pytestmark = pytest.mark.consul

PROVIDERS = ["share", "kill", "term", "grow", "outage", "bad"]
# Bounds of every load loop: requests and seconds, whichever ends first.
MAX_REQUESTS = 400
MAX_SECONDS = 30.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("consul-mesh")


@pytest.fixture(scope="module")
def router(consul_backend: ConsulBackend, workdir: Path) -> Iterator[ServiceProcess]:
    process = start_router(consul_backend, workdir, PROVIDERS)
    try:
        yield process
    finally:
        process.terminate()


@pytest.fixture
async def stub(router: ServiceProcess) -> AsyncIterator[router_service_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


class _Adapters:
    """The mock adapters one test starts, all stopped at its end."""

    def __init__(self, backend: ConsulBackend, workdir: Path, provider: str) -> None:
        self.backend = backend
        self.workdir = workdir / provider
        self.workdir.mkdir(exist_ok=True)
        self.provider = provider
        self.service = f"llmmesh-provider-{provider}"
        self.events = self.workdir / "events.jsonl"
        self.processes: list[ServiceProcess] = []

    def start(self, **env: str) -> ServiceProcess:
        process = start_adapter(
            self.backend, self.workdir, self.provider, f"{self.provider}-{len(self.processes)}", self.events, **env
        )
        self.processes.append(process)
        return process

    async def wait_passing(self, *processes: ServiceProcess) -> None:
        ports = {p.port for p in processes}
        await until(lambda: ports <= self.backend.ports(self.service, passing=True), what=f"{ports} passing in Consul")

    def served_by(self) -> list[int]:
        return pids_served(self.events)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()


@pytest.fixture
def adapters_for(consul_backend: ConsulBackend, workdir: Path) -> Iterator[Callable[[str], _Adapters]]:
    """`adapters_for(provider)`: a group of mock adapters for one provider instance, stopped after the test."""
    groups: list[_Adapters] = []

    def make(provider: str) -> _Adapters:
        groups.append(_Adapters(consul_backend, workdir, provider))
        return groups[-1]

    try:
        yield make
    finally:
        for group in groups:
            group.stop()


def _chat(model: str, text: str = "hi") -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])]
    )


async def _until_served_by(
    stub: router_service_pb2_grpc.RouterServiceStub, adapters: _Adapters, pids: set[int]
) -> list[rpb.ChatResponse]:
    """Sends requests until each pid has answered at least once (bounded); every request must succeed."""
    await _until_routable(stub, f"m-{adapters.provider}")
    answers = []
    deadline = time.monotonic() + MAX_SECONDS
    while not pids <= set(adapters.served_by()):
        assert len(answers) < MAX_REQUESTS, f"only {set(adapters.served_by())} of {pids} served"
        assert time.monotonic() < deadline, f"only {set(adapters.served_by())} of {pids} served"
        answers.append(await stub.Chat(_chat(f"m-{adapters.provider}"), timeout=5))
    return answers


async def _until_routable(stub: router_service_pb2_grpc.RouterServiceStub, model: str) -> None:
    """Waits until the router's table has an instance for `model` (its watch lags Consul by a query)."""
    deadline = time.monotonic() + MAX_SECONDS
    while True:
        models = (await stub.ListModels(rpb.ListModelsRequest(), timeout=5)).models
        if any(m.name == model and m.available for m in models):
            return
        assert time.monotonic() < deadline, f"the router never found an instance for {model}"
        await asyncio.sleep(0.05)


class _Load:
    """A steady, bounded stream of sequential requests in the background; counts failures instead of raising."""

    def __init__(self, stub: router_service_pb2_grpc.RouterServiceStub, model: str) -> None:
        self._stub = stub
        self._model = model
        self.answers: list[rpb.ChatResponse] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Load:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        while not self._stop.is_set() and len(self.answers) + len(self.failures) < MAX_REQUESTS:
            if time.monotonic() > deadline:
                return
            if not self._running.is_set():
                self._idle.set()
                await self._running.wait()
                self._idle.clear()
            try:
                self.answers.append(await self._stub.Chat(_chat(self._model), timeout=5))
            except grpc.aio.AioRpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
            await asyncio.sleep(0.01)

    @asynccontextmanager
    async def between_requests(self) -> AsyncIterator[None]:
        """Holds the loop between two requests: nothing is in flight inside this block."""
        self._running.clear()
        await asyncio.wait_for(self._idle.wait(), timeout=10)
        try:
            yield
        finally:
            self._running.set()

    async def more(self, count: int) -> None:
        """Waits until `count` more requests have finished (bounded by the loop's own limits)."""
        target = len(self.answers) + len(self.failures) + count
        while len(self.answers) + len(self.failures) < target and not self._task.done():  # type: ignore[union-attr]
            await asyncio.sleep(0.02)


def _failed_attempts_on(answers: list[rpb.ChatResponse], address: str) -> int:
    return sum(
        1 for a in answers for t in a.attempts if t.instance == address and t.outcome == rpb.ATTEMPT_OUTCOME_FAILED
    )


async def _discovery_health(router: ServiceProcess, service: str = "llmmesh.discovery") -> int:
    async with grpc.aio.insecure_channel(router.address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return response.status


class TestRegistrationAndBalancing:
    async def test_two_registered_instances_both_get_traffic(self, stub, adapters_for, consul_backend) -> None:
        """Two adapters register (tag, Meta, gRPC check) and the router sends requests to both."""
        adapters = adapters_for("share")
        first, second = adapters.start(), adapters.start()
        await adapters.wait_passing(first, second)
        registered = consul_backend.instances(adapters.service, passing=True)
        assert {instance["Port"] for instance in registered} == {first.port, second.port}
        for instance in registered:
            assert instance["Tags"] == ["llmmesh-provider"]
            assert instance["Meta"]["provider"] == "mock"
            assert instance["Meta"]["models"] == "mock-small"
            # Stable per pod (here the host name) and port.
            assert instance["ID"] == f"{adapters.service}-{socket.gethostname()}-{instance['Port']}"
        answers = await _until_served_by(stub, adapters, {first.pid, second.pid})
        assert {a.attempts[-1].instance for a in answers} <= {first.address, second.address}

    async def test_new_instance_gets_traffic_without_router_restart(self, stub, adapters_for, router) -> None:
        """An instance started later is picked up by the running router and receives requests."""
        adapters = adapters_for("grow")
        first = adapters.start()
        await adapters.wait_passing(first)
        await _until_served_by(stub, adapters, {first.pid})
        router_pid = router.pid
        second = adapters.start()
        await _until_served_by(stub, adapters, {second.pid})
        assert router.pid == router_pid
        assert router.process.poll() is None


class TestLeaving:
    async def test_sigkilled_instance_is_dropped_and_no_request_fails(self, stub, adapters_for, consul_backend) -> None:
        """SIGKILL: Consul's check fails, the router stops using it; ejection and resend keep every request whole."""
        adapters = adapters_for("kill")
        survivor, victim = adapters.start(), adapters.start()
        await adapters.wait_passing(survivor, victim)
        await _until_served_by(stub, adapters, {survivor.pid, victim.pid})
        async with _Load(stub, f"m-{adapters.provider}") as load:
            await load.more(10)
            # A call in flight on a SIGKILLed adapter may have reached the provider: whether to
            # resend it is the retry policy's call, not discovery's. So the kill falls between calls.
            async with load.between_requests():
                victim.kill()
            await until(
                lambda: victim.port not in consul_backend.ports(adapters.service, passing=True),
                what="the killed instance's check to fail",
            )
            await load.more(10)
            after_consul = len(load.answers)
            await load.more(20)
        assert load.failures == []
        # Before Consul noticed: at most `eject after` connection failures, each resent elsewhere.
        assert _failed_attempts_on(load.answers, victim.address) <= 3
        assert all(a.attempts[-1].instance == survivor.address for a in load.answers[after_consul:])
        assert all(len(a.attempts) == 1 for a in load.answers[after_consul:])

    async def test_sigterm_deregisters_before_it_stops_serving(self, stub, adapters_for, consul_backend) -> None:
        """SIGTERM: the instance leaves Consul while it still serves (drain), and no request fails."""
        adapters = adapters_for("term")
        survivor = adapters.start()
        leaving = adapters.start(LLMMESH_DRAIN_SECONDS="1.5")
        await adapters.wait_passing(survivor, leaving)
        await _until_served_by(stub, adapters, {survivor.pid, leaving.pid})
        async with _Load(stub, f"m-{adapters.provider}") as load:
            await load.more(5)
            leaving.signal(signal.SIGTERM)
            await until(
                lambda: leaving.port not in consul_backend.ports(adapters.service),
                timeout=5,
                what="deregistration",
            )
            still_running_when_gone = leaving.process.poll() is None
            await load.more(10)
            assert leaving.process.wait(15) == 0
            await load.more(10)
        assert still_running_when_gone, "the instance left Consul only after it had stopped"
        assert load.failures == []
        log = leaving.log()
        assert log.index('"consul deregistered"') < log.index('"stopped"')


class TestConsulOutage:
    async def test_router_serves_through_outage_and_catches_up(
        self, stub, adapters_for, consul_backend, router
    ) -> None:
        """Consul down: the last table keeps serving (discovery NOT_SERVING, router SERVING); back: changes made meanwhile apply."""
        adapters = adapters_for("outage")
        staying, leaving = adapters.start(), adapters.start()
        await adapters.wait_passing(staying, leaving)
        await _until_served_by(stub, adapters, {staying.pid, leaving.pid})
        consul_backend.stop()
        try:
            await _wait_async(lambda: _discovery_health(router), health_pb2.HealthCheckResponse.NOT_SERVING)
            assert await _discovery_health(router, "") == health_pb2.HealthCheckResponse.SERVING
            async with _Load(stub, f"m-{adapters.provider}") as load:
                await load.more(20)
                # Changes while Consul is away: one instance leaves, a new one starts.
                leaving.terminate()
                joining = adapters.start()
                await load.more(20)
            assert load.failures == []
            assert {a.attempts[-1].instance for a in load.answers} <= {staying.address, leaving.address}
        finally:
            consul_backend.start()
        # The agent came back empty; the adapters' anti-entropy registers them again.
        await adapters.wait_passing(staying, joining)
        await _wait_async(lambda: _discovery_health(router), health_pb2.HealthCheckResponse.SERVING)
        async with _Load(stub, f"m-{adapters.provider}") as load:
            await _until_served_by(stub, adapters, {joining.pid})
            await load.more(10)
        assert load.failures == []
        assert consul_backend.ports(adapters.service) == {staying.port, joining.port}
        assert "consul watch resumed" in router.log()


class TestBadAnswers:
    async def test_bad_port_entry_is_skipped(self, stub, adapters_for, consul_backend, router) -> None:
        """An instance registered with port 0 and no address is logged and skipped; the good one keeps serving."""
        adapters = adapters_for("bad")
        good = adapters.start()
        await adapters.wait_passing(good)
        status, _, _ = consul_backend.request(
            "PUT", "/v1/agent/service/register", {"Name": adapters.service, "ID": "bad-port-instance", "Port": 0}
        )
        assert status == 200
        try:
            await until(lambda: "bad-port-instance: port 0 is not in 1-65535" in router.log(), what="the skip log line")
            for _ in range(10):
                answer = await stub.Chat(_chat("m-bad"), timeout=5)
                assert answer.attempts[-1].instance == good.address
        finally:
            consul_backend.request("PUT", "/v1/agent/service/deregister/bad-port-instance")

    async def test_errors_and_garbage_keep_the_table(self, stub, adapters_for, consul_backend, router) -> None:
        """500s, garbage JSON, dropped connections and entries without address are logged; the table stays whole."""
        adapters = adapters_for("bad")
        from services.testing.fake_consul import Fault

        fake = consul_backend.fake
        good = adapters.start()
        await adapters.wait_passing(good)
        await _until_served_by(stub, adapters, {good.pid})
        prefix = f"/v1/health/service/{adapters.service}"
        fake.fail_next(Fault(prefix, 500), Fault(prefix, drop=True), Fault(prefix, 200, b"{}"))
        fake.garbage_next(2, prefix)
        # An answer with a broken entry wakes the router's blocking query, then the faults follow.
        fake.inject_entry(adapters.service, {"Node": {"Node": "n"}, "Service": {"ID": "no-address", "Port": 1234}})
        async with _Load(stub, "m-bad") as load:
            await until(lambda: not any(f.path_prefix == prefix for f in fake._faults), what="the faults to be served")
            await until(lambda: "consul watch resumed" in router.log(), what="the watch to resume")
            await load.more(10)
        fake.clear_injected()
        assert load.failures == []
        assert {a.attempts[-1].instance for a in load.answers} == {good.address}
        log = router.log()
        assert "no-address: no Service.Address and no Node.Address" in log
        assert "Failed to decode JSON" in log
        assert "ConsulAnswerError" in log  # a JSON object where a list belongs
        assert router.process.poll() is None


async def _wait_async(probe, expected: int, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (status := await probe()) != expected:
        assert time.monotonic() < deadline, f"health is {status}, expected {expected}"
        await asyncio.sleep(0.05)

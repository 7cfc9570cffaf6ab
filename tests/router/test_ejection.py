"""Passive outlier ejection: connection failures take an instance out of the picks for a growing time."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.discovery import Endpoint
from services.common.processes import ServiceProcess, start_service
from services.router.balancer import EjectionPolicy, Instance, InstancePool
from services.testing.mesh import start_router


def _dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _chat(model: str) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])]
    )


@pytest.fixture(scope="module")
def dead() -> str:
    return _dead_address()


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, dead: str) -> Iterator[ServiceProcess]:
    """A router whose static table lists a dead address next to a live mock (pool `mock`), and a dead-only pool."""
    workdir: Path = tmp_path_factory.mktemp("ejection")
    mock = start_service(["-m", "services.providers.mock"], name="mock", workdir=workdir)
    routing = {
        "providers": {"mock": {"kind": "mock"}, "gone": {"kind": "mock"}},
        "models": {
            "mock-small": {"provider": "mock"},
            "gone-small": {"provider": "gone", "upstream_model": "mock-small"},
        },
    }
    static = {"services": {"llmmesh-provider-mock": [dead, mock.address], "llmmesh-provider-gone": [dead]}}
    (workdir / "routing.yaml").write_text(yaml.safe_dump(routing))
    (workdir / "static.yaml").write_text(yaml.safe_dump(static))
    process = start_service(
        ["-m", "services.router"],
        name="router",
        workdir=workdir,
        env={
            "LLMMESH_ROUTING_FILE": str(workdir / "routing.yaml"),
            "LLMMESH_STATIC_DISCOVERY_FILE": str(workdir / "static.yaml"),
            "LLMMESH_EJECT_AFTER_FAILURES": "2",
            "LLMMESH_EJECT_BASE_SECONDS": "60",
        },
    )
    try:
        yield process
    finally:
        process.terminate()
        mock.terminate()


@pytest.fixture
async def stub(router: ServiceProcess) -> AsyncIterator[router_service_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


class TestThroughTheRouter:
    async def test_dead_instance_is_ejected_and_calls_go_elsewhere(self, stub, dead: str) -> None:
        """A call that cannot connect is resent to the live instance; after 2 such failures the dead one is left out."""
        answers = [await stub.Chat(_chat("mock-small"), timeout=5) for _ in range(40)]
        on_dead = [a for a in answers if any(t.instance == dead for t in a.attempts)]
        assert 1 <= len(on_dead) <= 2  # p2c finds it at least once in 40 picks, ejection stops it at 2
        for answer in on_dead:
            assert answer.attempts[0].instance == dead
            assert answer.attempts[0].code == grpc.StatusCode.UNAVAILABLE.value[0]
            assert answer.attempts[0].moved_on_because == "could not connect; trying another instance"
            assert answer.attempts[-1].outcome == rpb.ATTEMPT_OUTCOME_SUCCEEDED
        assert not any(t.instance == dead for a in answers[answers.index(on_dead[-1]) + 1 :] for t in a.attempts)

    async def test_a_pool_of_only_ejected_instances_still_tries(self, stub, dead: str) -> None:
        """Fail open: when every instance is ejected the router still tries one rather than answering at once."""
        for _ in range(4):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Chat(_chat("gone-small"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert dead in caught.value.details() or "failed to connect" in caught.value.details()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestEjectionTiming:
    async def test_ejection_grows_and_is_capped(self) -> None:
        """Each ejection in a row doubles (5 s, 10 s, 20 s) up to the cap; re-admitted instances are on probation."""
        clock = _Clock()
        instance = Instance(Endpoint("127.0.0.1:1", "a"), EjectionPolicy(3, 5.0, 20.0), clock)
        try:
            instance.report_failure(connection_level=True)
            instance.report_failure(connection_level=True)
            assert not instance.ejected
            instance.report_failure(connection_level=True)
            assert instance.ejected
            assert instance.ejected_until - clock.now == 5.0
            lengths = []
            for _ in range(3):
                clock.now = instance.ejected_until
                assert not instance.ejected  # timed re-admission
                instance.report_failure(connection_level=True)  # on probation: one failure is enough
                lengths.append(instance.ejected_until - clock.now)
            assert lengths == [10.0, 20.0, 20.0]
        finally:
            await instance.channel.close()

    async def test_success_and_non_connection_errors_reset_the_count(self) -> None:
        """An answer (even an error answer) proves the connection: the failure count and probation start over."""
        clock = _Clock()
        instance = Instance(Endpoint("127.0.0.1:1", "a"), EjectionPolicy(2, 5.0, 60.0), clock)
        try:
            instance.report_failure(connection_level=True)
            instance.report_failure(connection_level=False)
            instance.report_failure(connection_level=True)
            assert not instance.ejected
            instance.report_failure(connection_level=True)
            assert instance.ejected
            clock.now = instance.ejected_until
            instance.report_success()
            instance.report_failure(connection_level=True)
            assert not instance.ejected  # no longer on probation
        finally:
            await instance.channel.close()

    async def test_pick_skips_ejected_instances_unless_all_are(self) -> None:
        """The pool never picks an ejected instance while another is in, and picks among all when none is."""
        pool = InstancePool("svc", EjectionPolicy(1, 60.0, 60.0))
        pool.update((Endpoint("127.0.0.1:1", "a"), Endpoint("127.0.0.1:2", "b")))
        try:
            first, second = pool.instances()
            first.report_failure(connection_level=True)
            assert all(pool.pick() is second for _ in range(50))
            second.report_failure(connection_level=True)
            assert {pool.pick() for _ in range(200)} == {first, second}
        finally:
            await pool.close()


@pytest.fixture(scope="module")
def giving_up_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, str, str]]:
    """A router over two mock instances of one pool; one cancels every call, as a draining adapter does."""
    workdir: Path = tmp_path_factory.mktemp("giving-up")
    cancelling = {"models": [{"name": "mock-small", "failures": [{"code": "CANCELLED", "rate": 1.0}]}]}
    (workdir / "cancelling.yaml").write_text(yaml.safe_dump(cancelling))
    giving_up = start_service(
        ["-m", "services.providers.mock"],
        name="mock-cancelling",
        workdir=workdir,
        env={"LLMMESH_MOCK_CONFIG": str(workdir / "cancelling.yaml")},
    )
    healthy = start_service(["-m", "services.providers.mock"], name="mock-healthy", workdir=workdir)
    routing = {"providers": {"mock": {"kind": "mock"}}, "models": {"mock-small": {"provider": "mock"}}}
    static = {"llmmesh-provider-mock": [giving_up.address, healthy.address]}
    process = start_router(workdir, routing, static, name="router-giving-up")
    try:
        yield process, giving_up.address, healthy.address
    finally:
        for started in (process, giving_up, healthy):
            started.terminate()


class TestAnInstanceGivesUpTheCall:
    async def test_the_call_is_retried_on_another_instance(self, giving_up_router) -> None:
        """An adapter's CANCELLED is not the caller's: the call goes to the other instance, with no retries set."""
        router, giving_up, healthy = giving_up_router
        async with grpc.aio.insecure_channel(router.address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            answers = [await stub.Chat(_chat("mock-small"), timeout=5) for _ in range(12)]
            streamed = [r async for r in stub.StreamChat(_chat("mock-small"), timeout=5)]
        retried = [a for a in answers if a.attempts[0].instance == giving_up]
        assert retried, "p2c picks the cancelling instance first at least once in 12 calls"
        for answer in retried:
            assert [t.code for t in answer.attempts] == [grpc.StatusCode.CANCELLED.value[0], 0]
            assert answer.attempts[0].moved_on_because == "the instance gave the call up; trying another instance"
            assert answer.attempts[1].instance == healthy
        assert all(a.attempts[-1].outcome == rpb.ATTEMPT_OUTCOME_SUCCEEDED for a in answers)
        assert streamed[-1].WhichOneof("event") == "final"
        assert streamed[-1].final.attempts[-1].instance == healthy

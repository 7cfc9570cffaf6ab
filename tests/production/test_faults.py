"""Faults in the production-shaped mesh: an adapter killed under load, a router stopped with streams in flight,
Consul stopped and restarted; at the end every breaker of every router is closed.

Runs after test_calls.py (file order); each case leaves the mesh whole again (restarted processes, Consul back).
"""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, router_service_pb2_grpc
from services.router.main import DISCOVERY_HEALTH
from services.testing.production import INSTANCES, KINDS, ProductionMesh
from tests.production.helpers import MODELS, chat, script_text, script_tool_call, stream_chat

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]

LOAD_CALLS = 60
LOAD_CONCURRENCY = 6


async def _load(mesh: ProductionMesh, calls: int, on_done: asyncio.Event, after: int) -> list[str]:
    """`calls` mock chats through the Service, LOAD_CONCURRENCY at a time; `on_done` is set after `after` of them."""
    failures: list[str] = []
    done = 0
    gate = asyncio.Semaphore(LOAD_CONCURRENCY)
    async with mesh.aio_channel() as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)

        async def one(index: int) -> None:
            nonlocal done
            async with gate:
                try:
                    await stub.Chat(chat(MODELS["mock"], f"load {index}"), timeout=30, metadata=mesh.caller())
                except grpc.aio.AioRpcError as error:
                    failures.append(f"{index}: {error.code().name} {error.details()}")
                done += 1
                if done == after:
                    on_done.set()

        await asyncio.gather(*(one(index) for index in range(calls)))
    return failures


def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _registrations(mesh: ProductionMesh, kind: str, *, passing: bool = False) -> list[str]:
    return mesh.consul.service_ids(f"llmmesh-provider-{kind}", passing=passing)


class TestAdapterKilled:
    @pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
    async def test_stopped_under_load(self, mesh: ProductionMesh, signum: int) -> None:
        """One mock instance killed (or drained) mid-load: every call still succeeds; restarted in place, it has
        one registration. A drained instance deregisters first and may give calls up: those go to the other one."""
        halfway = asyncio.Event()
        load = asyncio.ensure_future(_load(mesh, LOAD_CALLS, halfway, after=LOAD_CALLS // 4))
        await asyncio.wait_for(halfway.wait(), 60)
        await asyncio.to_thread(mesh.kill, "mock-0", signum)
        failures = await asyncio.wait_for(load, 120)
        assert failures == []
        if signum != signal.SIGKILL:
            assert mesh.processes["mock-0"].process.wait(60) == 0
        await asyncio.to_thread(mesh.restart, "mock-0")
        await asyncio.to_thread(
            _wait, lambda: len(_registrations(mesh, "mock", passing=True)) == INSTANCES, "mock-0 passing again"
        )
        assert len(_registrations(mesh, "mock")) == INSTANCES  # the restart replaced its registration


class TestRouterStopped:
    def test_sigterm_with_streams_in_flight(self, mesh: ProductionMesh) -> None:
        """SIGTERM to a router while streams run on it: each stream still ends with its final message."""
        router = mesh.processes["router-0"]
        words = " ".join(f"w{i}" for i in range(30))  # mock-slow: a word every 100 ms, ~3 s a stream
        with mesh.channel(router.address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            streams = [
                stub.StreamChat(stream_chat("mock-slow", words), timeout=60, metadata=mesh.caller()) for _ in range(4)
            ]
            firsts = [next(stream) for stream in streams]  # every stream is under way
            mesh.kill("router-0", signal.SIGTERM)
            rests = [list(stream) for stream in streams]
        assert all(first.HasField("delta") for first in firsts)
        for rest in rests:
            assert rest[-1].HasField("final"), rest[-3:]
            assert rest[-1].final.model == "mock-slow"
        assert router.process.wait(60) == 0
        script_text(mesh, "anthropic", "served by the other router")
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS["anthropic"]), timeout=30, metadata=mesh.caller()
            )
        assert response.message.content[0].text == "served by the other router"
        _agent_run(mesh)  # the agent's long-lived channel to the Service moves to the router left
        mesh.restart("router-0", same_port=False)
        mesh.wait_until_routable()


class TestConsulRestarted:
    def test_consul_stopped_and_restarted(self, mesh: ProductionMesh) -> None:
        """While Consul is down the routers serve from their last table; after it returns, everything re-registers."""
        mesh.consul.stop()
        try:
            for address in mesh.router_addresses():
                _wait(lambda a=address: _discovery_status(mesh, a) == "NOT_SERVING", f"{address} noticing Consul gone")
                script_text(mesh, "google", "served without Consul")
                with mesh.channel(address) as channel:
                    response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                        chat(MODELS["google"]), timeout=30, metadata=mesh.caller()
                    )
                assert response.message.content[0].text == "served without Consul"
        finally:
            mesh.consul.start()
        mesh.wait_until_routable()
        for kind in KINDS:
            assert len(_registrations(mesh, kind)) == INSTANCES, kind
        for address in mesh.router_addresses():
            _wait(lambda a=address: _discovery_status(mesh, a) == "SERVING", f"{address} seeing Consul again")
        with mesh.channel() as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            assert stub.Chat(chat(MODELS["mock"], "after consul"), timeout=30, metadata=mesh.caller()).model
        _agent_remote_tool_run(mesh)  # the ToolService registered again and the agent still reaches it


def _agent_run(mesh: ProductionMesh) -> None:
    """One agent run on the prod default profile (claude-haiku-4-5) that answers at once."""
    script_text(mesh, "anthropic", "agent still answers")
    with mesh.channel(mesh.agent_address) as channel:
        response = agent_service_pb2_grpc.AgentServiceStub(channel).Run(
            apb.RunRequest(task=apb.AgentTask(input="still there?")), timeout=60, metadata=mesh.caller("team-b")
        )
    assert response.end.answer == "agent still answers", response.end


def _agent_remote_tool_run(mesh: ProductionMesh) -> None:
    script_tool_call(mesh, "anthropic", "uppercase", {"text": "again"})
    script_text(mesh, "anthropic", "AGAIN it is")
    task = apb.AgentTask(input="Shout again", profile="researcher", tools=["uppercase"])
    with mesh.channel(mesh.agent_address) as channel:
        response = agent_service_pb2_grpc.AgentServiceStub(channel).Run(
            apb.RunRequest(task=task), timeout=60, metadata=mesh.caller("team-b")
        )
    [finished] = [e.tool_call_finished.result for e in response.events if e.HasField("tool_call_finished")]
    assert (finished.is_error, finished.content) == (False, "AGAIN")
    assert response.end.answer == "AGAIN it is"


def _discovery_status(mesh: ProductionMesh, address: str) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with mesh.channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=DISCOVERY_HEALTH), timeout=10
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


class TestAtTheEnd:
    def test_every_breaker_is_closed(self, mesh: ProductionMesh) -> None:
        """Each live router's breaker gauges, exported after this point, are all 0 (closed)."""
        since = time.time_ns()
        _wait(lambda: len(mesh.routers_exported_since(since)) >= len(mesh.router_addresses()), "both routers exporting")
        time.sleep(1.5)  # one more export interval: a router's batch may arrive in parts
        states = mesh.breaker_states(since)
        assert any(breaker.startswith("openai") for _, breaker in states), states  # the fallback case's breakers
        assert {key: value for key, value in states.items() if value != 0} == {}

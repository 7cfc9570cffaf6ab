"""The agent holds against a model that misuses tools, tool services that leak, and a router that restarts.

Real processes: router + scripted mock + the example ToolService (which
requires a caller identity and allows tenant alpha only) + the agent with
caller auth on and tool call ceilings set, plus a hostile ToolService in
this process whose errors carry paths and secrets.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, chat_pb2, tool_service_pb2_grpc
from llmmesh.v1 import tool_service_pb2 as tpb
from services.common.errors import MeshError
from services.common.processes import start_service
from tests.agent.conftest import PROFILES, AgentMesh, kinds, task
from tests.security.helpers import KEY_ALPHA, bearer, write_tenants

PER_TURN_CEILING = 12
PER_RUN_CEILING = 30
CONCURRENT_CEILING = 4
TIGHT_PER_RUN = 5
LEAK_MARKER = "leak-marker-7f3a9c"
LEAKED_TOKEN = "tok-leak-9b2e4d71c0"
BOUNDED_PROFILES: dict[str, Any] = {
    "default_profile": "general",
    "profiles": {
        **PROFILES["profiles"],
        # Asks for more than the process allows: the LLMMESH_AGENT_MAX_* ceilings win.
        "wide": {"model": "mock-agent", "max_tool_calls_per_turn": 100, "max_concurrent_tool_calls": 50},
        "tight": {"model": "mock-agent", "max_tool_calls_per_run": TIGHT_PER_RUN, "max_iterations": 4},
    },
}


class _HostileTools(tool_service_pb2_grpc.ToolServiceServicer):
    """A third-party ToolService whose failures are raw exception text; records the metadata it receives."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def ListTools(self, request: tpb.ListToolsRequest, context: grpc.ServicerContext) -> tpb.ListToolsResponse:
        tools = [chat_pb2.ToolDefinition(name=name, description=f"the {name} tool") for name in ("leaky", "picky")]
        for tool in tools:
            tool.parameters.update({"type": "object"})
        return tpb.ListToolsResponse(tools=tools)

    def CallTool(self, request: tpb.CallToolRequest, context: grpc.ServicerContext) -> tpb.CallToolResponse:
        with self._lock:
            self.metadata.append(dict(context.invocation_metadata()))
        if request.name == "picky":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"field 'x' is required, see /srv/tools/picky/schema.py (auth: Bearer {LEAKED_TOKEN})\n"
                f"second line {LEAK_MARKER}",
            )
        context.abort(
            grpc.StatusCode.UNKNOWN,
            f'Exception calling application: Traceback: File "/srv/tools/leaky/db.py", line 7: '
            f"connect(password=hunter2, token={LEAKED_TOKEN}) failed {LEAK_MARKER}",
        )
        raise AssertionError("abort raises")


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[_HostileTools, str]]:
    servicer = _HostileTools()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    tool_service_pb2_grpc.add_ToolServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory, hostile: tuple[_HostileTools, str]) -> Iterator[AgentMesh]:
    workdir = tmp_path_factory.mktemp("agent-bounds")
    tenants = write_tenants(workdir / "tenants.yaml", [{"name": "alpha", "keys": [KEY_ALPHA], "allowed_models": ["*"]}])
    mesh = AgentMesh(
        workdir,
        profiles=BOUNDED_PROFILES,
        agent_env={
            "LLMMESH_AUTH_FILE": str(tenants),
            "LLMMESH_AGENT_MAX_TOOL_CALLS_PER_TURN": str(PER_TURN_CEILING),
            "LLMMESH_AGENT_MAX_TOOL_CALLS_PER_RUN": str(PER_RUN_CEILING),
            "LLMMESH_AGENT_MAX_CONCURRENT_TOOL_CALLS": str(CONCURRENT_CEILING),
        },
        tools_env={"LLMMESH_TOOL_ALLOWED_TENANTS": "alpha"},
        extra_tool_addresses=(hostile[1],),
    ).start()
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture
async def stub(bounded: AgentMesh) -> AsyncIterator[agent_service_pb2_grpc.AgentServiceStub]:
    async with grpc.aio.insecure_channel(bounded.address) as channel:
        yield agent_service_pb2_grpc.AgentServiceStub(channel)


async def _run(stub: Any, text: str, **fields: Any) -> apb.RunResponse:
    return await stub.Run(apb.RunRequest(task=task(text, **fields)), timeout=30, metadata=bearer(KEY_ALPHA))


def _finished(response: apb.RunResponse) -> list[chat_pb2.ToolResult]:
    return [e.tool_call_finished.result for e in response.events if e.HasField("tool_call_finished")]


def _most_at_once(events: list[dict[str, Any]]) -> int:
    """The most calls in flight at the tool service, from its start/end lines in the order written."""
    running = most = 0
    for event in events:
        running += 1 if event["event"] == "start" else -1 if event["event"] in ("end", "cancelled") else 0
        most = max(most, running)
    return most


class TestToolCallLimits:
    async def test_fifty_calls_in_one_turn_are_capped(self, stub: Any, bounded: AgentMesh) -> None:
        """50 calls in one turn: 12 run (the process ceiling beats the profile's 100), at most 4 at once; 38 are refused and reported."""
        bounded.clear_tool_events()
        response = await _run(stub, "Do the fifty waits", profile="wide")
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        (limited,) = [e.tool_calls_limited for e in response.events if e.HasField("tool_calls_limited")]
        assert (limited.limit, limited.max, limited.requested) == (apb.TOOL_CALL_LIMIT_PER_TURN, 12, 50)
        assert len(limited.refused_call_ids) == 38
        results = _finished(response)
        assert len(results) == 50
        refused = [r for r in results if r.tool_call_id in set(limited.refused_call_ids)]
        assert all(r.is_error and "max_tool_calls_per_turn" in r.content for r in refused)
        events = bounded.tool_events()
        assert len([e for e in events if e["event"] == "start"]) == PER_TURN_CEILING
        assert 2 <= _most_at_once(events) <= CONCURRENT_CEILING
        assert (response.end.totals.tool_calls, response.end.totals.tool_calls_refused) == (12, 38)
        # The model was told: its next turn echoes the refusals.
        assert "max_tool_calls_per_turn" in response.end.answer
        # Every requested call has exactly one finished event, the limit event between them.
        order = kinds(list(response.events))
        assert order.count("tool_call_requested") == 50
        assert order.index("tool_calls_limited") > max(i for i, k in enumerate(order) if k == "tool_call_requested")

    async def test_run_limit_holds_across_turns(self, stub: Any) -> None:
        """Three calls a turn with a run limit of 5: 3 run, then 2 (1 refused), then none (3 refused), then the iteration limit."""
        response = await _run(stub, "Three at a time please", profile="tight")
        assert response.end.reason == apb.RUN_END_REASON_ITERATION_LIMIT
        limited = [e.tool_calls_limited for e in response.events if e.HasField("tool_calls_limited")]
        assert [(e.step, e.limit, e.max, len(e.refused_call_ids)) for e in limited] == [
            (2, apb.TOOL_CALL_LIMIT_PER_RUN, TIGHT_PER_RUN, 1),
            (3, apb.TOOL_CALL_LIMIT_PER_RUN, TIGHT_PER_RUN, 3),
        ]
        ran = [r for r in _finished(response) if not r.is_error]
        assert [r.content for r in ran] == ["4"] * TIGHT_PER_RUN
        assert (response.end.totals.tool_calls, response.end.totals.tool_calls_refused) == (5, 4)


class TestToolCaller:
    async def test_tenant_and_run_id_reach_the_tool_service(self, stub: Any, bounded: AgentMesh) -> None:
        """Every tool call carries the caller's tenant and its run's id; two runs, two ids."""
        bounded.clear_tool_events()
        first = await _run(stub, "Try the remote tool")
        second = await _run(stub, "Try the remote tool")
        assert (first.end.answer, second.end.answer) == ("Remote said: uppercase = HELLO MESH",) * 2
        calls = bounded.tool_events("end")
        assert [call["tenant"] for call in calls] == ["alpha", "alpha"]
        run_ids = [call["run_id"] for call in calls]
        assert all(re.fullmatch(r"[0-9a-f]{32}", run_id) for run_id in run_ids)
        assert run_ids[0] != run_ids[1]

    async def test_example_tool_service_refuses_calls_without_a_caller(self, bounded: AgentMesh) -> None:
        """Called directly, the example ToolService refuses a call with no identity and one for another tenant."""
        assert bounded.tools is not None
        request = tpb.CallToolRequest(name="uppercase", arguments_json='{"text": "x"}', call_id="c1")
        outcomes = []
        async with grpc.aio.insecure_channel(bounded.tools.address) as channel:
            tools = tool_service_pb2_grpc.ToolServiceStub(channel)
            for metadata in ((), (("llmmesh-tenant", "beta"), ("llmmesh-agent-run-id", "r1"))):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await tools.CallTool(request, timeout=5, metadata=metadata)
                error = MeshError.from_rpc_error(caught.value)
                outcomes.append((error.code, error.reason))
            allowed = await tools.CallTool(
                request, timeout=5, metadata=(("llmmesh-tenant", "alpha"), ("llmmesh-agent-run-id", "r1"))
            )
        assert outcomes == [
            (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CALLER_IDENTITY"),
            (grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED"),
        ]
        assert allowed.content == "X"


class TestToolErrors:
    async def test_raw_tool_errors_reach_the_model_as_a_short_summary(
        self, stub: Any, bounded: AgentMesh, hostile: tuple[_HostileTools, str]
    ) -> None:
        """A tool service's raw exception text never reaches the model; the log keeps it, redacted."""
        responses = [await _run(stub, "Call the leaky tool"), await _run(stub, "Call the picky tool")]
        seen_by_model = [(_finished(r)[0].content, r.end.answer) for r in responses]
        leaks = [
            leaked
            for content, answer in seen_by_model
            for leaked in (LEAK_MARKER, LEAKED_TOKEN, "hunter2", "/srv/tools")
            if leaked in content + answer
        ]
        assert leaks == [], seen_by_model
        assert seen_by_model[0][0] == "the tool service failed (UNKNOWN); the agent's log has the details"
        assert seen_by_model[1][0] == (
            "the tool rejected the arguments: field 'x' is required, see [path] (auth: Bearer [redacted])"
        )
        # Remote tools got the caller's identity too.
        assert {m.get("llmmesh-tenant") for m in hostile[0].metadata} == {"alpha"}
        assert bounded.agent is not None
        log = bounded.agent.log()
        assert LEAK_MARKER in log  # the full text is in the log ...
        assert LEAKED_TOKEN not in log  # ... redacted
        assert KEY_ALPHA not in log


class TestRouterRestart:
    async def test_run_waits_for_a_restarting_router(self, stub: Any, bounded: AgentMesh) -> None:
        """With the router down when a step starts, the call waits for it (within the deadline) and the run answers."""
        router = bounded.mesh.router
        assert router is not None
        router.kill()
        call = stub.StreamRun(
            apb.StreamRunRequest(task=task("hello after a restart")), timeout=60, metadata=bearer(KEY_ALPHA)
        )
        first = await call.read()
        assert first.event.HasField("step_started")
        bounded.mesh.router = start_service(
            ["-m", "services.router"],
            name="router-restarted",
            workdir=bounded.workdir,
            env={**router.env, "LLMMESH_PORT": str(router.port)},
        )
        events = [first.event]
        while (response := await call.read()) != grpc.aio.EOF:
            events.append(response.event)
        assert events[-1].end.reason == apb.RUN_END_REASON_ANSWER, events[-1].end.detail
        assert events[-1].end.answer == "Scripted answer to: hello after a restart"

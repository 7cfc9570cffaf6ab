"""Remote tools found through discovery, tool timeouts, and cancellation when the caller goes away."""

from __future__ import annotations

import pytest

from llmmesh.v1 import agent_service_pb2 as apb
from tests.agent.conftest import TOOL_TIMEOUT_SECONDS, AgentMesh, task, wait_for


class TestRemoteTools:
    async def test_discovered_tool_service_is_called(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """A ToolService listed as `llmmesh-tool` in static discovery is offered to the model and called."""
        response = await agent_stub.Run(apb.RunRequest(task=task("Try the remote tool")), timeout=15)
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        assert response.end.answer == "Remote said: uppercase = HELLO MESH"
        calls = [e for e in agent_mesh.tool_events("end") if e["tool"] == "uppercase"]
        assert len(calls) == 1

    async def test_profiles_list_remote_tools(self, agent_stub) -> None:
        """A profile without a tool list offers every tool, the discovered remote ones included."""
        response = await agent_stub.ListProfiles(apb.ListProfilesRequest(), timeout=5)
        general = next(p for p in response.profiles if p.name == "general")
        assert {"calculator", "current_time", "text_stats", "uppercase", "wait"} <= set(general.tools)

    async def test_slow_tool_times_out_as_an_observation(self, agent_stub) -> None:
        """A tool slower than the tool timeout becomes an is_error result; the run goes on and answers."""
        response = await agent_stub.Run(apb.RunRequest(task=task("Call the slow tool")), timeout=30)
        finished = [e.tool_call_finished.result for e in response.events if e.HasField("tool_call_finished")]
        assert finished[0].is_error
        assert f"timed out after {TOOL_TIMEOUT_SECONDS:.1f}s" in finished[0].content
        assert response.end.reason == apb.RUN_END_REASON_ANSWER


class TestCancellation:
    async def test_disconnect_cancels_the_router_call(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """A caller that goes away during a model call cancels it down to the adapter."""
        agent_mesh.mesh.clear_events()
        call = agent_stub.StreamRun(apb.StreamRunRequest(task=task("Loop forever", model="mock-slow")), timeout=30)
        first = await call.read()
        assert first.event.HasField("step_started")
        await wait_for(lambda: agent_mesh.mesh.events("start"))
        call.cancel()
        cancelled = await wait_for(lambda: agent_mesh.mesh.events("cancelled"))
        assert [event["model"] for event in cancelled] == ["mock-slow"]
        assert not agent_mesh.mesh.events("end")

    async def test_disconnect_cancels_a_running_remote_tool(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """A caller that goes away while a remote tool runs cancels the tool's call at the ToolService."""
        agent_mesh.clear_tool_events()
        call = agent_stub.StreamRun(apb.StreamRunRequest(task=task("Call the slow tool")), timeout=30)
        async for response in call:
            if response.event.HasField("tool_call_requested"):
                call_id = response.event.tool_call_requested.call.id
                break
        else:
            pytest.fail("no tool call requested")
        started = await wait_for(
            lambda: [e for e in agent_mesh.tool_events("start") if e["call_id"] == call_id][-1:], timeout=10
        )
        call.cancel()
        cancelled = await wait_for(
            lambda: [e for e in agent_mesh.tool_events("cancelled") if e["call_id"] == call_id][-1:], timeout=10
        )
        # Cancelled by the caller going away, well before the agent's own tool timeout would have fired.
        assert cancelled[0]["time"] - started[0]["time"] < TOOL_TIMEOUT_SECONDS

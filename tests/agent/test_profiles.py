"""Model choice per profile and per request, ListProfiles, and bad tasks or profile files."""

from __future__ import annotations

import grpc
import pytest

from llmmesh.v1 import agent_service_pb2 as apb
from services.common.errors import MeshError
from services.common.processes import run_to_exit
from tests.agent.conftest import AgentMesh, task


class TestModelChoice:
    async def test_profile_model_reaches_the_router(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """A run on profile `second` asks the router for that profile's model, as recorded at the mock."""
        agent_mesh.mesh.clear_events()
        response = await agent_stub.Run(apb.RunRequest(task=task("hello", profile="second")), timeout=10)
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        assert {event["model"] for event in agent_mesh.mesh.events("start")} == {"mock-agent-b"}
        assert response.events[0].step_started.model == "mock-agent-b"

    async def test_task_model_overrides_the_profile(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """AgentTask.model wins over the profile's model for every step."""
        agent_mesh.mesh.clear_events()
        response = await agent_stub.Run(
            apb.RunRequest(task=task("What is the monthly total?", profile="second", model="mock-agent")), timeout=10
        )
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        assert [event["model"] for event in agent_mesh.mesh.events("start")] == ["mock-agent", "mock-agent"]

    async def test_default_profile_is_used_without_a_name(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """A task that names no profile runs on the file's default_profile."""
        agent_mesh.mesh.clear_events()
        await agent_stub.Run(apb.RunRequest(task=task("hello")), timeout=10)
        assert {event["model"] for event in agent_mesh.mesh.events("start")} == {"mock-agent"}


class TestListProfiles:
    async def test_lists_profiles_with_model_tools_and_limit(self, agent_stub) -> None:
        """ListProfiles reports each profile's model, tools and iteration limit."""
        response = await agent_stub.ListProfiles(apb.ListProfilesRequest(), timeout=5)
        second = next(p for p in response.profiles if p.name == "second")
        assert (second.model, list(second.tools), second.max_iterations) == (
            "mock-agent-b",
            ["calculator", "current_time"],
            3,
        )


class TestBadTasks:
    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"input": "  "}, "task.input"),
            ({"input": "hi", "profile": "nope"}, "task.profile"),
            ({"input": "hi", "max_iterations": 500}, "task.max_iterations"),
            ({"input": "hi", "max_total_tokens": -1}, "task.max_total_tokens"),
            ({"input": "hi", "max_cost_usd": -0.5}, "task.max_cost_usd"),
            ({"input": "hi", "profile": "second", "tools": ["calculator", "wait"]}, "task.tools[1]"),
        ],
    )
    async def test_bad_task_is_invalid_argument_naming_the_field(self, agent_stub, fields, field) -> None:
        """A bad task is rejected before any step with INVALID_ARGUMENT naming the field."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent_stub.Run(apb.RunRequest(task=apb.AgentTask(**fields)), timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == field

    async def test_task_tools_narrow_what_the_model_may_call(self, agent_stub) -> None:
        """With task.tools set, a tool outside the list is unknown to the run."""
        response = await agent_stub.Run(
            apb.RunRequest(task=task("What is the monthly total?", tools=["calculator"])), timeout=10
        )
        results = {
            e.tool_call_finished.result.name: e.tool_call_finished.result
            for e in response.events
            if e.HasField("tool_call_finished")
        }
        assert results["current_time"].is_error
        assert "unknown tool 'current_time'" in results["current_time"].content
        assert results["calculator"].content == "14808"


class TestProfilesFile:
    def test_bad_profiles_file_stops_the_agent_naming_file_and_line(self, tmp_path) -> None:
        """A profiles file with a bad value stops the agent with exit 2 and `file:line: path: problem`."""
        bad = tmp_path / "profiles.yaml"
        bad.write_text("profiles:\n  main:\n    model: mock-agent\n    max_iterations: 0\n")
        result = run_to_exit(["-m", "services.agent"], env={"LLMMESH_AGENT_PROFILES": str(bad)})
        assert result.returncode == 2
        assert f"{bad}:4: profiles.main.max_iterations" in result.stderr

    def test_default_profile_must_exist(self, tmp_path) -> None:
        """default_profile naming no profile is refused at start, with its line."""
        bad = tmp_path / "profiles.yaml"
        bad.write_text("default_profile: ghost\nprofiles:\n  main: {model: mock-agent}\n")
        result = run_to_exit(["-m", "services.agent"], env={"LLMMESH_AGENT_PROFILES": str(bad)})
        assert result.returncode == 2
        assert f"{bad}:1: default_profile: 'ghost' is not a profile here (main)" in result.stderr

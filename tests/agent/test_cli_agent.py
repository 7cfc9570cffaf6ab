"""`llmmesh agent`, `llmmesh agent-server` and the agent part of `llmmesh demo`, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc
from services.common.processes import start_service
from tests.agent.conftest import AgentMesh

LLMMESH = [sys.executable, "-m", "services.cli"]
NO_KEYS = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def _agent_cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMMESH, "agent", "--agent", address, *args], capture_output=True, text=True, timeout=60, env=NO_KEYS
    )


class TestAgentCommand:
    def test_streams_steps_tools_and_answer(self, agent_mesh: AgentMesh) -> None:
        """`llmmesh agent` prints step headers, tool calls with arguments, results, the answer and totals."""
        result = _agent_cli(agent_mesh.address, "What is the monthly total?")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "── step 1 · mock-agent" in out
        assert '→ calculator {"expression": "1234 * 12"}' in out
        assert "← calculator (" in out
        assert "14808" in out
        assert "── step 2 · mock-agent" in out
        assert "══ answer" in out
        assert "-- ended: answer · 2 step(s)" in out
        assert out.index("→ calculator") < out.index("← calculator") < out.index("══ answer")

    def test_limit_is_reported_as_no_answer(self, agent_mesh: AgentMesh) -> None:
        """An iteration limit prints 'no answer: iteration limit' and exits 3, not 0."""
        result = _agent_cli(agent_mesh.address, "--max-iterations", "2", "Loop forever")
        assert result.returncode == 3
        assert "no answer: iteration limit" in result.stdout
        assert "══ answer" not in result.stdout

    def test_tool_errors_are_marked(self, agent_mesh: AgentMesh) -> None:
        """A failed tool call is marked with ✗ and 'error:'."""
        result = _agent_cli(agent_mesh.address, "Please divide by zero")
        assert result.returncode == 0, result.stderr
        assert "✗ calculator (" in result.stdout
        assert "error: cannot evaluate '1/0': division by zero" in result.stdout

    def test_bad_profile_prints_the_code_and_field(self, agent_mesh: AgentMesh) -> None:
        """A bad profile name is a usage error (exit 2): one line with INVALID_ARGUMENT naming task.profile."""
        result = _agent_cli(agent_mesh.address, "--profile", "nope", "hi")
        assert result.returncode == 2
        assert result.stderr.startswith("llmmesh agent: INVALID_ARGUMENT: task.profile:")


class TestAgentServer:
    async def test_agent_server_command_serves_agent_service(self, tmp_path) -> None:
        """`llmmesh agent-server` runs the agent process, which serves AgentService."""
        process = start_service(
            ["-m", "services.cli", "agent-server"],
            name="agent-server",
            workdir=tmp_path,
            env={"LLMMESH_ROUTER_ADDRESS": "127.0.0.1:1"},
        )
        try:
            async with grpc.aio.insecure_channel(process.address) as channel:
                response = await agent_service_pb2_grpc.AgentServiceStub(channel).ListProfiles(
                    apb.ListProfilesRequest(), timeout=5
                )
            assert {"default", "researcher", "writer"} <= {profile.name for profile in response.profiles}
        finally:
            assert process.terminate() == 0


class TestDemo:
    def test_demo_runs_an_agent_loop(self) -> None:
        """`llmmesh demo` ends with a full think → act → observe → answer agent run on the scripted mock."""
        result = subprocess.run([*LLMMESH, "demo"], capture_output=True, text=True, timeout=90, env=NO_KEYS)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert any(line.split()[:1] == ["agent"] and "SERVING" in line for line in out.splitlines())
        agent_part = out[out.index("$ llmmesh agent") :]
        assert '→ calculator {"expression": "1234 * 12"}' in agent_part
        assert "← calculator" in agent_part
        assert "14808" in agent_part.split("══ answer")[1]
        assert "-- ended: answer · 2 step(s)" in agent_part
        assert out.rstrip().endswith("mesh stopped.")

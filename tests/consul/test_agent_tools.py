"""The agent finds a remote ToolService it was not configured with, through Consul."""

from __future__ import annotations

import time

import grpc
import pytest
import yaml

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc
from services.common.processes import start_service
from services.testing.mesh import MockMesh
from tests.consul.helpers import ConsulBackend, consul_env

pytestmark = pytest.mark.consul

SCRIPTS = [
    {
        "match": "remote",
        "turns": [
            {"tool_calls": [{"name": "uppercase", "arguments": {"text": "hello mesh"}}]},
            {"text": "Remote said: {tool_results}"},
        ],
    }
]


class TestAgentToolsThroughConsul:
    def test_tool_service_registered_in_consul_is_called(self, consul_backend: ConsulBackend, tmp_path) -> None:
        """An example ToolService registers as llmmesh-tool; the agent (discovery=consul) lists and calls it."""
        mesh = MockMesh(
            mock_config={"models": [{"name": "mock-agent", "scripted": True}], "scripts": SCRIPTS},
            routing={"providers": {"mock": {"kind": "mock"}}, "models": {"mock-agent": {"provider": "mock"}}},
            workdir=tmp_path,
        )
        processes = []
        try:
            mesh.start()
            profiles = tmp_path / "profiles.yaml"
            # No `tools` list: every tool, remote ones included.
            profiles.write_text(yaml.safe_dump({"profiles": {"default": {"model": "mock-agent"}}}))
            env = consul_env(consul_backend, LLMMESH_AGENT_TOOL_REFRESH_SECONDS="0.3")
            processes.append(
                start_service(["-m", "services.agent.example_tools"], name="tools", workdir=tmp_path, env=env)
            )
            agent = start_service(
                ["-m", "services.agent"],
                name="agent",
                workdir=tmp_path,
                env={**env, "LLMMESH_ROUTER_ADDRESS": mesh.router_address, "LLMMESH_AGENT_PROFILES": str(profiles)},
            )
            processes.append(agent)
            with grpc.insecure_channel(agent.address) as channel:
                stub = agent_service_pb2_grpc.AgentServiceStub(channel)
                deadline = time.monotonic() + 20
                while True:  # until Consul has seen the tool service pass its check and the agent listed it
                    response = stub.Run(
                        apb.RunRequest(task=apb.AgentTask(input="call the remote tool", model="mock-agent")), timeout=10
                    )
                    if "HELLO MESH" in response.end.answer:
                        break
                    assert time.monotonic() < deadline, f"tool never discovered: {response.end}"
                    time.sleep(0.3)
            assert response.end.answer == "Remote said: uppercase = HELLO MESH"
        finally:
            for process in reversed(processes):
                process.terminate()
            mesh.stop()

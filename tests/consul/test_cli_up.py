"""`llmmesh up --discovery consul`: adapters register in the agent, the router watches it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common.processes import start_service
from tests.consul.helpers import ConsulBackend

pytestmark = pytest.mark.consul

LLMMESH = [sys.executable, "-m", "services.cli"]
NO_KEYS = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("CONSUL_")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestUpWithConsul:
    def test_up_registers_adapters_and_routes_through_consul(self, consul_backend: ConsulBackend) -> None:
        """The mock adapter appears in Consul as llmmesh-provider-mock and `llmmesh chat` is answered through it."""
        port = _free_port()
        up = subprocess.Popen(
            [*LLMMESH, "up", "--port", str(port), "--discovery", "consul", "--consul", consul_backend.address],
            stdout=subprocess.PIPE,
            text=True,
            env=NO_KEYS,
        )
        try:
            lines = []
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                line = up.stdout.readline()  # type: ignore[union-attr]
                lines.append(line)
                if line.startswith("Ctrl-C") or not line:
                    break
            assert any("consul discovery via " + consul_backend.address in line for line in lines), lines
            registered = consul_backend.instances("llmmesh-provider-mock", passing=True)
            assert [instance["Meta"]["provider"] for instance in registered] == ["mock"]
            chat = subprocess.run(
                [*LLMMESH, "chat", "--router", f"127.0.0.1:{port}", "--explain", "hello consul"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert chat.returncode == 0, chat.stderr
            assert "[mock mock-small] hello consul" in chat.stdout
            assert f"127.0.0.1:{registered[0]['Port']}" in chat.stdout
            up.send_signal(signal.SIGTERM)
            assert up.wait(30) == 0
            assert consul_backend.instances("llmmesh-provider-mock") == []  # deregistered on the way out
        finally:
            if up.poll() is None:
                up.kill()

    def test_consul_address_without_consul_discovery_is_refused(self) -> None:
        """`--consul` with static discovery is a usage error, not silently ignored."""
        result = subprocess.run(
            [*LLMMESH, "up", "--consul", "127.0.0.1:8500"], capture_output=True, text=True, timeout=30, env=NO_KEYS
        )
        assert result.returncode == 2
        assert "--consul needs --discovery consul" in result.stderr


class TestUpGivesTheAgentConsul:
    def test_agent_under_up_finds_a_tool_service_registered_in_consul(
        self, consul_backend: ConsulBackend, tmp_path: Path
    ) -> None:
        """`up --discovery consul` gives the agent Consul too: a ToolService registered there is offered and called."""
        consul_env = {
            "LLMMESH_DISCOVERY": "consul",
            "CONSUL_HTTP_ADDR": consul_backend.address,
            "LLMMESH_CONSUL_CHECK_INTERVAL_SECONDS": "1",
        }
        tools = start_service(["-m", "services.agent.example_tools"], name="tools", env=consul_env, workdir=tmp_path)
        up = subprocess.Popen(
            [*LLMMESH, "up", "--port", str(_free_port()), "--discovery", "consul", "--consul", consul_backend.address],
            stdout=subprocess.PIPE,
            text=True,
            env=NO_KEYS,
        )
        try:
            agent = next(line.split()[1] for line in _lines_until_ready(up) if line.split()[:1] == ["agent"])
            question = "Put this in upper case: hello from the mesh"
            run = subprocess.run(
                [*LLMMESH, "agent", "--agent", agent, "--profile", "researcher", "--model", "mock-agent", question],
                capture_output=True,
                text=True,
                timeout=60,
                env=NO_KEYS,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            assert "← uppercase" in run.stdout
            assert "HELLO FROM THE MESH" in run.stdout
            up.send_signal(signal.SIGTERM)
            assert up.wait(30) == 0
        finally:
            if up.poll() is None:
                up.kill()
            tools.terminate()


def _lines_until_ready(up: subprocess.Popen[str]) -> list[str]:
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = up.stdout.readline()  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith("Ctrl-C") or not line:
            break
    assert lines[-1].startswith("Ctrl-C"), lines
    return lines

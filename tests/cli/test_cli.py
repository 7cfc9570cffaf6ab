"""The llmmesh command as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc

from llmmesh.v1 import router_service_pb2 as rpb
from llmmesh.v1 import router_service_pb2_grpc

LLMMESH = [sys.executable, "-m", "services.cli"]
NO_KEYS = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestDemo:
    def test_demo_sends_a_request_through_router_and_adapter(self) -> None:
        """`llmmesh demo` starts the mesh, prints answers with model, usage and attempt, and stops it."""
        result = subprocess.run([*LLMMESH, "demo"], capture_output=True, text=True, timeout=60, env=NO_KEYS)
        assert result.returncode == 0, result.stderr
        assert "[mock mock-small] Hello, mesh!" in result.stdout
        assert "-- model mock-small via mock" in result.stdout
        assert "attempt 1: mock-small@mock 127.0.0.1:" in result.stdout
        assert "[mock mock-large] Stream this answer, please." in result.stdout
        assert "mesh stopped." in result.stdout


class TestUpAndChat:
    def test_up_serves_chat_then_stops_everything_on_sigterm(self) -> None:
        """`llmmesh up` serves `llmmesh chat`; SIGTERM stops the router and adapters."""
        port = _free_port()
        up = subprocess.Popen([*LLMMESH, "up", "--port", str(port)], stdout=subprocess.PIPE, text=True, env=NO_KEYS)
        try:
            lines = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = up.stdout.readline()
                lines.append(line)
                if line.startswith("Ctrl-C") or not line:
                    break
            assert any(f"127.0.0.1:{port}" in line for line in lines), lines
            pids = [int(line.split("pid")[1]) for line in lines if " pid " in line]
            chat = subprocess.run(
                [*LLMMESH, "chat", "--router", f"127.0.0.1:{port}", "--explain", "--stream", "hi from the cli"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert chat.returncode == 0, chat.stderr
            assert "[mock mock-small] hi from the cli" in chat.stdout
            assert "attempt 1: mock-small@mock" in chat.stdout
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                models = router_service_pb2_grpc.RouterServiceStub(channel).ListModels(
                    rpb.ListModelsRequest(), timeout=5
                )
            available = {m.name for m in models.models if m.available}
            assert {"mock-small", "mock-large", "mock-agent"} <= available
            assert "gpt-4o-mini" not in available  # no key, no adapter, not discovered
            up.send_signal(signal.SIGTERM)
            assert up.wait(30) == 0
            for pid in pids:
                assert not _alive(pid), f"pid {pid} still running"
        finally:
            if up.poll() is None:
                up.kill()

    def test_chat_reports_errors_with_code(self) -> None:
        """`llmmesh chat` against no router prints the gRPC code and exits 1."""
        result = subprocess.run(
            [*LLMMESH, "chat", "--router", f"127.0.0.1:{_free_port()}", "--timeout", "1", "hi"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1
        assert "error: UNAVAILABLE" in result.stderr or "error: DEADLINE_EXCEEDED" in result.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not running; reap-less children of a dead parent get adopted and reaped by init.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


class TestUpStartsKeyedAdapters:
    def test_each_adapter_with_a_key_variable_is_started(self) -> None:
        """With OPENAI_API_KEY, ANTHROPIC_API_KEY and GEMINI_API_KEY set, `llmmesh up` runs all four adapters
        and the router discovers each provider's models; without keys only the mock runs (test above)."""
        port = _free_port()
        dead = f"http://127.0.0.1:{_free_port()}"  # never called: the test only lists models
        env = {
            **NO_KEYS,
            "OPENAI_API_KEY": "sk-test-up",
            "ANTHROPIC_API_KEY": "sk-ant-test-up",
            "GEMINI_API_KEY": "gm-test-up",
            "LLMMESH_OPENAI_BASE_URL": dead,
            "LLMMESH_ANTHROPIC_BASE_URL": dead,
            "LLMMESH_GOOGLE_BASE_URL": dead,
        }
        up = subprocess.Popen(
            [*LLMMESH, "up", "--port", str(port), "--agent-port", str(_free_port())],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            lines = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = up.stdout.readline()
                lines.append(line)
                if line.startswith("Ctrl-C") or not line:
                    break
            started = {line.split()[0] for line in lines if " pid " in line}
            assert {"provider-mock", "provider-openai", "provider-anthropic", "provider-google", "router"} <= started
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                models = router_service_pb2_grpc.RouterServiceStub(channel).ListModels(
                    rpb.ListModelsRequest(), timeout=5
                )
            available = {m.name for m in models.models if m.available}
            assert {"gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "mock-small"} <= available
            up.send_signal(signal.SIGTERM)
            assert up.wait(30) == 0
        finally:
            if up.poll() is None:
                up.kill()

"""The llmmesh command as a user runs it, mistakes included.

Every error path: one line on stderr, exit 2 for usage and configuration
errors (1 when the mesh answered with an error or could not be reached),
and never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import router_service_pb2 as rpb
from llmmesh.v1 import router_service_pb2_grpc
from services.common.processes import ServiceProcess, start_service
from tests.security.helpers import KEY_ALPHA, KEY_UNKNOWN, write_tenants

LLMMESH = [sys.executable, "-m", "services.cli"]
NO_KEYS = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("LLMMESH_")}
# `up` starts its processes one after the other; on a busy 2-core machine four SDK adapters take a while.
_UP_SECONDS = 150


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def llmmesh(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMMESH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**NO_KEYS, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a failed command, after checking the exit code and that nothing else was said."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env={**NO_KEYS, **(env or {})}
    )


class TestUsageErrors:
    def test_timeout_must_be_above_zero(self) -> None:
        """`--timeout 0` is refused before any call, naming the flag (not a bare DEADLINE_EXCEEDED)."""
        line = one_line_error(llmmesh("chat", "--timeout", "0", "hi"), 2)
        assert "--timeout" in line
        assert "above 0" in line

    def test_missing_argument_is_one_line(self) -> None:
        """argparse's mistakes are one line pointing at --help, not the usage block."""
        line = one_line_error(llmmesh("chat"), 2)
        assert line.startswith("llmmesh chat:")
        assert "prompt" in line
        assert "--help" in line

    def test_empty_router_address_names_the_variable(self) -> None:
        """An empty LLMMESH_ROUTER_ADDRESS says so instead of surfacing grpc internals."""
        line = one_line_error(llmmesh("models", env={"LLMMESH_ROUTER_ADDRESS": ""}), 2)
        assert "LLMMESH_ROUTER_ADDRESS is empty" in line

    def test_address_without_port_is_refused(self) -> None:
        """`--router localhost` would dial port 443: refused, asking for host:port."""
        line = one_line_error(llmmesh("chat", "--router", "localhost", "hi"), 2)
        assert "not host:port" in line

    def test_hash_of_no_key(self) -> None:
        """`auth hash` with nothing on stdin says how to give the key."""
        result = subprocess.run(
            [*LLMMESH, "auth", "hash"], capture_output=True, text=True, input="", timeout=60, env=NO_KEYS
        )
        assert "no key given" in one_line_error(result, 2)


class TestHelp:
    def test_version(self) -> None:
        """`llmmesh --version` prints the installed version."""
        result = llmmesh("--version")
        assert result.returncode == 0
        assert result.stdout.startswith("llmmesh 0.")

    def test_top_level_help_imports_no_grpc_protobuf_or_pydantic(self) -> None:
        """`llmmesh --help` stays fast: the commands' heavy imports happen only when they run."""
        result = _python("-X", "importtime", "-m", "services.cli", "--help")
        assert result.returncode == 0, result.stderr
        imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
        assert "services" in imported
        assert not imported & {"grpc", "google", "pydantic", "llmmesh", "yaml"}, sorted(imported)

    def test_service_commands_list_their_settings(self) -> None:
        """`router`, `provider <kind>` and `agent-server` --help name their LLMMESH_* settings and defaults."""
        router = llmmesh("router", "--help")
        assert router.returncode == 0, router.stderr
        assert "LLMMESH_PORT [default: 50051]" in router.stdout
        assert "LLMMESH_ROUTING_FILE" in router.stdout
        assert "LLMMESH_CONSUL_WAIT_SECONDS" in router.stdout
        openai = llmmesh("provider", "openai", "--help")
        assert "LLMMESH_OPENAI_BASE_URL" in openai.stdout
        assert "OPENAI_API_KEY" in openai.stdout
        agent = llmmesh("agent-server", "--help")
        assert "LLMMESH_PORT [default: 50052]" in agent.stdout
        assert "LLMMESH_AGENT_PROFILES" in agent.stdout

    def test_example_tools_has_help(self) -> None:
        """`python -m services.agent.example_tools --help` explains itself instead of starting a server."""
        result = _python("-m", "services.agent.example_tools", "--help")
        assert result.returncode == 0, result.stderr
        assert "LLMMESH_PORT [default: 50070]" in result.stdout
        assert "llmmesh up --tool" in result.stdout


class TestNothingListening:
    def test_no_router_hints_how_to_start_one(self) -> None:
        """No router at the address: one line naming it, `llmmesh up` and --router."""
        port = _free_port()
        line = one_line_error(llmmesh("chat", "--router", f"127.0.0.1:{port}", "hi"), 1)
        assert f"no router answers at 127.0.0.1:{port} (connection refused)" in line
        assert "llmmesh up" in line
        assert "--router" in line

    def test_no_agent_hints_how_to_start_one(self) -> None:
        """The same for `llmmesh agent`, naming --agent and LLMMESH_AGENT_ADDRESS."""
        line = one_line_error(llmmesh("agent", "--agent", f"127.0.0.1:{_free_port()}", "hi"), 1)
        assert "no agent answers" in line
        assert "LLMMESH_AGENT_ADDRESS" in line

    def test_ctrl_c_during_a_call_is_one_line(self) -> None:
        """Ctrl-C while waiting for the router: exit 130 and one line, no KeyboardInterrupt traceback."""
        with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
            port = silent.getsockname()[1]
            chat = subprocess.Popen(
                [*LLMMESH, "chat", "--router", f"127.0.0.1:{port}", "hi"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=NO_KEYS,
            )
            silent.settimeout(60)
            connection, _ = silent.accept()  # the call is under way
            chat.send_signal(signal.SIGINT)
            _, stderr = chat.communicate(timeout=60)
            connection.close()
        result = subprocess.CompletedProcess(chat.args, chat.returncode, "", stderr)
        assert one_line_error(result, 130) == "llmmesh chat: interrupted"


class TestBusyPorts:
    @pytest.mark.parametrize(
        ("argv", "setting"),
        [
            (["router"], "LLMMESH_PORT"),
            (["provider", "mock"], "LLMMESH_PORT"),
            (["agent-server"], "LLMMESH_PORT"),
        ],
    )
    def test_service_on_a_taken_port_names_port_and_setting(self, argv: list[str], setting: str) -> None:
        """A service whose port is taken exits 2 with one line: the address and the variable to change."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            result = llmmesh(*argv, env={"LLMMESH_PORT": str(port), "LLMMESH_LOG_FORMAT": "json"})
        line = one_line_error(result, 2)
        assert f"127.0.0.1:{port}" in line
        assert "already in use" in line
        assert f"set {setting}" in line

    def test_router_http_door_on_a_taken_port(self) -> None:
        """A taken LLMMESH_HTTP_PORT is refused before the router starts, naming that variable."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            result = llmmesh("router", env={"LLMMESH_PORT": "0", "LLMMESH_HTTP_PORT": str(port)})
        line = one_line_error(result, 2)
        assert f"127.0.0.1:{port}" in line
        assert "set LLMMESH_HTTP_PORT" in line

    def test_prometheus_on_a_taken_port(self) -> None:
        """A taken LLMMESH_PROMETHEUS_PORT stops the process at start, naming it (the last line, no traceback)."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            result = llmmesh("provider", "mock", env={"LLMMESH_PORT": "0", "LLMMESH_PROMETHEUS_PORT": str(port)})
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert f"127.0.0.1:{port}" in last
        assert "LLMMESH_PROMETHEUS_PORT" in last

    @pytest.mark.parametrize("flag", ["--port", "--agent-port", "--http-port"])
    def test_up_on_a_taken_port_names_the_flag(self, flag: str) -> None:
        """`llmmesh up` (e.g. run twice) refuses a taken port before starting anything, naming the flag."""
        ports = {"--port": str(_free_port()), "--agent-port": str(_free_port()), "--http-port": str(_free_port())}
        with socket.create_server(("127.0.0.1", 0)) as taken:
            ports[flag] = str(taken.getsockname()[1])
            result = llmmesh("up", *[part for pair in ports.items() for part in pair])
        line = one_line_error(result, 2)
        assert f"127.0.0.1:{ports[flag]}" in line
        assert f"set {flag}" in line


@pytest.fixture(scope="module")
def lonely(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """A mock adapter and a router with caller keys whose static discovery also lists a dead OpenAI adapter."""
    workdir = tmp_path_factory.mktemp("lonely")
    mock = start_service(["-m", "services.providers.mock"], name="mock", workdir=workdir)
    static = workdir / "static.yaml"
    dead = f"127.0.0.1:{_free_port()}"
    static.write_text(
        yaml.safe_dump({"services": {"llmmesh-provider-mock": [mock.address], "llmmesh-provider-openai": [dead]}})
    )
    tenants = write_tenants(workdir / "tenants.yaml", [{"name": "cli", "keys": [KEY_ALPHA], "allowed_models": ["*"]}])
    env = {
        "LLMMESH_STATIC_DISCOVERY_FILE": str(static),
        "LLMMESH_AUTH_FILE": str(tenants),
        "LLMMESH_HTTP_PORT": "0",
    }
    try:
        router = start_service(["-m", "services.router"], name="router", env=env, workdir=workdir)
    except BaseException:
        mock.terminate()
        raise
    yield mock, router
    router.terminate()
    mock.terminate()


def _as_tenant(router: ServiceProcess, *args: str, key: str = KEY_ALPHA) -> subprocess.CompletedProcess[str]:
    return llmmesh(*args, "--router", router.address, env={"LLMMESH_API_KEY": key} if key else {})


class TestAgainstARouter:
    def test_no_key_names_llmmesh_api_key(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """UNAUTHENTICATED tells a CLI user to set LLMMESH_API_KEY (not about gRPC metadata)."""
        line = one_line_error(_as_tenant(lonely[1], "chat", "hi", key=""), 1)
        assert "UNAUTHENTICATED" in line
        assert "set LLMMESH_API_KEY" in line

    def test_wrong_key_says_where_the_key_came_from(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """A rejected key points at $LLMMESH_API_KEY, and the key itself is never printed."""
        line = one_line_error(_as_tenant(lonely[1], "chat", "hi", key=KEY_UNKNOWN), 1)
        assert "LLMMESH_API_KEY" in line
        assert KEY_UNKNOWN not in line

    def test_models_reports_a_dead_instance_unreachable(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """A discovered address where nothing listens is not `available` (the mock that runs is)."""
        result = _as_tenant(lonely[1], "models")
        assert result.returncode == 0, result.stderr
        states = {line.split()[0]: line.split()[2] for line in result.stdout.splitlines()}
        assert states["mock-small"] == "available"
        assert states["gpt-4o-mini"] == "unreachable"
        assert states["claude-haiku-4-5"] == "unreachable"  # not even discovered

    def test_explain_names_requested_models_not_tried(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """--explain lists a requested model the router passed over, and why."""
        result = _as_tenant(lonely[1], "chat", "-m", "claude-haiku-4-5", "--fallback", "mock-small", "--explain", "hi")
        assert result.returncode == 0, result.stderr
        assert "attempt 1: mock-small@mock" in result.stdout
        assert "not tried: claude-haiku-4-5 (no reachable instance" in result.stdout

    def test_embed_prints_one_vector_per_text(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """`llmmesh embed` shows each vector's length and head, then the model, provider and usage."""
        result = _as_tenant(lonely[1], "embed", "one two", "three", "-m", "mock-embed", "--dimensions", "16")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert [line.split()[:3] for line in lines[:2]] == [["[0]", "16", "dims"], ["[1]", "16", "dims"]]
        assert "-- model mock-embed via mock · 16 dimensions" in lines[2]
        assert lines[3].startswith("-- usage 3 in")

    def test_embed_json_matches_grpc(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """--json prints the full vectors: the same the router gives over gRPC."""
        result = _as_tenant(lonely[1], "embed", "--json", "hello")
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        with grpc.insecure_channel(lonely[1].address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            request = rpb.EmbedRequest(model="mock-embed", inputs=["hello"])
            answer = stub.Embed(request, metadata=(("authorization", f"Bearer {KEY_ALPHA}"),), timeout=10)
        assert printed["embeddings"] == [list(answer.embeddings[0].values)]
        assert (printed["model"], printed["dimensions"]) == ("mock-embed", 64)

    def test_embed_on_a_chat_model_is_a_usage_error(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        line = one_line_error(_as_tenant(lonely[1], "embed", "-m", "mock-small", "hi"), 2)
        assert "INVALID_ARGUMENT" in line
        assert "mock-embed" in line

    def test_auto_colon_names_the_tiers(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """`-m auto:` is refused (not silently the default tier), listing the tiers to choose from."""
        line = one_line_error(_as_tenant(lonely[1], "chat", "-m", "auto:", "hi"), 2)
        assert "INVALID_ARGUMENT" in line
        assert "auto:cheap" in line
        assert "'auto' for the default tier" in line

    def test_blank_prompt_is_refused_by_the_router(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """A blank user message is INVALID_ARGUMENT naming messages[0].content (a usage error for the CLI)."""
        line = one_line_error(_as_tenant(lonely[1], "chat", "   "), 2)
        assert "messages[0].content" in line
        assert "blank" in line

    def test_blank_prompt_is_refused_by_the_http_door(self, lonely: tuple[ServiceProcess, ServiceProcess]) -> None:
        """The HTTP door applies the same rule: 400 with `param` naming the message's content."""
        port = lonely[1].ready["http_port"]
        body = {"model": "mock-small", "messages": [{"role": "user", "content": ""}]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {KEY_ALPHA}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400
        error = json.loads(refused.value.read())["error"]
        assert error["param"] == "messages[0].content"

    def test_openai_style_turns_with_empty_content_are_accepted(
        self, lonely: tuple[ServiceProcess, ServiceProcess]
    ) -> None:
        """Blank content stays fine where OpenAI allows it: an empty system prompt, an assistant turn, a tool result."""
        port = lonely[1].ready["http_port"]
        body = {
            "model": "mock-small",
            "messages": [
                {"role": "system", "content": ""},
                {"role": "user", "content": "what time is it?"},
                {"role": "assistant", "content": "", "tool_calls": [_call("c1")]},
                {"role": "tool", "tool_call_id": "c1", "content": ""},
                {"role": "user", "content": "thanks"},
            ],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {KEY_ALPHA}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


def _call(call_id: str) -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": "clock", "arguments": "{}"}}


class TestAgentValidation:
    def test_blank_question_is_refused_like_a_blank_prompt(self, tmp_path: Path) -> None:
        """The agent refuses a blank task the way the router refuses a blank user message (exit 2)."""
        agent = start_service(
            ["-m", "services.agent"],
            name="agent",
            env={"LLMMESH_ROUTER_ADDRESS": f"127.0.0.1:{_free_port()}"},
            workdir=tmp_path,
        )
        try:
            line = one_line_error(llmmesh("agent", "--agent", agent.address, " \n "), 2)
        finally:
            agent.terminate()
        assert "task.input" in line
        assert "blank" in line


class TestDemo:
    def test_a_failed_demo_keeps_its_logs_and_says_where(self, tmp_path: Path) -> None:
        """When the mesh cannot start, `demo` names the process, its last log line and the log folder."""
        env = {"LLMMESH_MOCK_CONFIG": str(tmp_path / "missing.yaml"), "TMPDIR": str(tmp_path)}
        result = llmmesh("demo", "--no-traces", env=env)
        line = one_line_error(result, 2)  # the mock refused its configuration
        assert line.startswith("llmmesh demo: provider-mock did not start:")
        assert "missing.yaml" in line
        logs = [path for path in tmp_path.iterdir() if path.name.startswith("llmmesh-")]
        assert len(logs) == 1
        assert f"its logs are in {logs[0]}" in result.stdout
        assert (logs[0] / "provider-mock.log").exists()


class TestUp:
    @pytest.mark.timeout(2 * _UP_SECONDS)
    def test_up_prints_the_http_door_and_stops_when_a_process_dies(self) -> None:
        """`up` shows every address (HTTP door included), serves chat, and when an adapter dies stops the rest
        and exits 1 naming it."""
        port, agent_port = _free_port(), _free_port()
        up = subprocess.Popen(
            [*LLMMESH, "up", "--port", str(port), "--agent-port", str(agent_port), "--http-port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=NO_KEYS,
        )
        try:
            lines = _read_until_ready(up)
            pids = {line.split()[0]: int(line.split("pid")[1]) for line in lines if " pid " in line}
            assert any(line.strip().startswith("http door") and "http://127.0.0.1:" in line for line in lines), lines
            chat = llmmesh("chat", "--router", f"127.0.0.1:{port}", "--explain", "--stream", "hi from the cli")
            assert chat.returncode == 0, chat.stderr
            assert "[mock mock-small] hi from the cli" in chat.stdout
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                models = router_service_pb2_grpc.RouterServiceStub(channel).ListModels(
                    rpb.ListModelsRequest(), timeout=30
                )
            available = {m.name for m in models.models if m.available}
            assert {"mock-small", "mock-large", "mock-agent"} <= available
            assert "gpt-4o-mini" not in available  # no key, no adapter, not discovered
            os.kill(pids["provider-mock"], signal.SIGKILL)
            _, stderr = up.communicate(timeout=60)
            assert up.returncode == 1
            assert "Traceback" not in stderr
            assert stderr.strip().splitlines()[-1].startswith("llmmesh up: provider-mock (pid ")
            for name, pid in pids.items():
                assert not _alive(pid), f"{name} (pid {pid}) still running"
        finally:
            if up.poll() is None:
                up.kill()


def _read_until_ready(up: subprocess.Popen[str]) -> list[str]:
    assert up.stdout is not None
    lines = []
    deadline = time.monotonic() + _UP_SECONDS
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        lines.append(line)
        if line.startswith("Ctrl-C") or not line:
            break
    assert lines[-1].startswith("Ctrl-C"), lines
    return lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not running; reap-less children of a dead parent get adopted and reaped by init.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


class TestUpStartsKeyedAdapters:
    @pytest.mark.timeout(2 * _UP_SECONDS)
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
            lines = _read_until_ready(up)
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

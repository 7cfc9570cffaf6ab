"""Agent test fixtures: agent → router → mock adapter, plus an example ToolService, as real processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc
from services.common.processes import ServiceProcess, start_service
from services.testing.mesh import MockMesh

TOOL_TIMEOUT_SECONDS = 3.0


def _turn(text: str = "", *calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    turn: dict[str, Any] = {}
    if text:
        turn["text"] = text
    if calls:
        turn["tool_calls"] = [{"name": name, "arguments": arguments} for name, arguments in calls]
    return turn


# Scripts are chosen by a substring of the question; the turn played is the number of assistant turns so far.
SCRIPTS: list[dict[str, Any]] = [
    {
        "match": "monthly",
        "turns": [
            _turn(
                "I will look up the time and compute the total.",
                ("current_time", {"timezone": "UTC"}),
                ("calculator", {"expression": "1234 * 12"}),
            ),
            _turn("Observed: {tool_results}. The yearly total is 14808."),
        ],
    },
    {
        "match": "in parallel",
        "turns": [_turn("", ("wait", {"ms": 300}), ("wait", {"ms": 300})), _turn("Both done: {tool_results}")],
    },
    {
        "match": "divide by zero",
        "turns": [_turn("", ("calculator", {"expression": "1/0"})), _turn("Recovered from: {tool_results}")],
    },
    {
        "match": "bad arguments",
        "turns": [_turn("", ("calculator", {"expr": 5})), _turn("The tool said: {tool_results}")],
    },
    {
        "match": "unknown tool",
        "turns": [_turn("", ("teleport", {"to": "mars"})), _turn("The tool said: {tool_results}")],
    },
    {
        "match": "remote",
        "turns": [_turn("", ("uppercase", {"text": "hello mesh"})), _turn("Remote said: {tool_results}")],
    },
    {"match": "slow tool", "turns": [_turn("", ("wait", {"ms": 8000})), _turn("The tool said: {tool_results}")]},
    # A model (or a prompt injection) asking for the same remote tool 50 times in one turn.
    {
        "match": "fifty waits",
        "turns": [_turn("", *[("wait", {"ms": 300})] * 50), _turn("After the waits: {tool_results}")],
    },
    # Three calculator calls in every turn, for ever: only the run's tool call limit stops the calls.
    {"match": "three at a time", "turns": [_turn("More.", *[("calculator", {"expression": "2 + 2"})] * 3)]},
    {"match": "leaky tool", "turns": [_turn("", ("leaky", {})), _turn("The tool said: {tool_results}")]},
    {"match": "picky tool", "turns": [_turn("", ("picky", {})), _turn("The tool said: {tool_results}")]},
    # The last turn repeats: this model never stops calling tools.
    {"match": "forever", "turns": [_turn("Again.", ("calculator", {"expression": "1 + 1"}))]},
    {"match": "", "turns": [_turn("Scripted answer to: {question}")]},
]

MOCK_MODELS: list[dict[str, Any]] = [
    {"name": "mock-agent", "scripted": True},
    {"name": "mock-agent-b", "scripted": True},
    {"name": "mock-paced", "scripted": True, "latency": [{"weight": 1, "ms": 300}]},
    {"name": "mock-slow", "scripted": True, "latency": [{"weight": 1, "ms": 8000}]},
    {"name": "mock-priced", "scripted": True},
]

PROFILES: dict[str, Any] = {
    "default_profile": "general",
    "profiles": {
        "general": {"description": "Test default", "model": "mock-agent", "system_prompt": "Be brief."},
        "second": {
            "description": "On another model",
            "model": "mock-agent-b",
            "tools": ["calculator", "current_time"],
            "max_iterations": 3,
        },
    },
}


def _routing() -> dict[str, Any]:
    models: dict[str, Any] = {model["name"]: {"provider": "mock", "context_window": 32000} for model in MOCK_MODELS}
    # A dollar per input token: one step spends far more than any small budget.
    models["mock-priced"]["price"] = {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}
    return {"providers": {"mock": {"kind": "mock"}}, "models": models}


class AgentMesh:
    """Mock adapter + router (MockMesh), an example ToolService, and the agent under test."""

    def __init__(
        self,
        workdir: Path,
        *,
        profiles: dict[str, Any] | None = None,
        agent_env: dict[str, str] | None = None,
        tools_env: dict[str, str] | None = None,
        extra_tool_addresses: tuple[str, ...] = (),
    ) -> None:
        """`agent_env` / `tools_env` are added to the agent's and the ToolService's environment;
        `extra_tool_addresses` are more `llmmesh-tool` instances for the agent to discover."""
        self.workdir = workdir
        self.agent_env = dict(agent_env or {})
        self.tools_env = dict(tools_env or {})
        self.extra_tool_addresses = extra_tool_addresses
        self.mesh = MockMesh(
            mock_config={"models": MOCK_MODELS, "scripts": SCRIPTS}, routing=_routing(), workdir=workdir
        )
        self.tool_events_file = workdir / "tool-events.jsonl"
        self.profiles = profiles or PROFILES
        self.tools: ServiceProcess | None = None
        self.agent: ServiceProcess | None = None

    def start(self) -> AgentMesh:
        try:
            self.mesh.start()
            self.tools = start_service(
                ["-m", "services.agent.example_tools"],
                name="tools",
                workdir=self.workdir,
                env={"LLMMESH_TOOL_EVENTS_FILE": str(self.tool_events_file), **self.tools_env},
            )
            static_file = self.workdir / "agent-static.yaml"
            tools = [self.tools.address, *self.extra_tool_addresses]
            static_file.write_text(yaml.safe_dump({"services": {"llmmesh-tool": tools}}))
            profiles_file = self.workdir / "profiles.yaml"
            profiles_file.write_text(yaml.safe_dump(self.profiles))
            self.agent = start_service(
                ["-m", "services.agent"],
                name="agent",
                workdir=self.workdir,
                env={
                    "LLMMESH_ROUTER_ADDRESS": self.mesh.router_address,
                    "LLMMESH_AGENT_PROFILES": str(profiles_file),
                    "LLMMESH_STATIC_DISCOVERY_FILE": str(static_file),
                    "LLMMESH_AGENT_TOOL_TIMEOUT_SECONDS": str(TOOL_TIMEOUT_SECONDS),
                    **self.agent_env,
                },
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in (self.agent, self.tools):
            if process is not None:
                process.terminate()
        self.mesh.stop()

    @property
    def address(self) -> str:
        assert self.agent is not None
        return self.agent.address

    def clear_tool_events(self) -> None:
        self.tool_events_file.unlink(missing_ok=True)

    def tool_events(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.tool_events_file.exists():
            return []
        lines = [json.loads(line) for line in self.tool_events_file.read_text().splitlines() if line]
        return [line for line in lines if event is None or line["event"] == event]


@pytest.fixture(scope="module")
def agent_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentMesh]:
    started = AgentMesh(tmp_path_factory.mktemp("agent")).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def agent_stub(agent_mesh: AgentMesh) -> AsyncIterator[agent_service_pb2_grpc.AgentServiceStub]:
    async with grpc.aio.insecure_channel(agent_mesh.address) as channel:
        yield agent_service_pb2_grpc.AgentServiceStub(channel)


def task(text: str, **fields: Any) -> apb.AgentTask:
    return apb.AgentTask(input=text, **fields)


async def wait_for(condition: Any, *, timeout: float = 10.0) -> Any:
    """Polls `condition()` until it is truthy (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def kinds(events: list[apb.RunEvent]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]

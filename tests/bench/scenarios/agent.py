"""Scenario 5: an agent run of one step against the bare router call that step makes.

The profile's model echoes (no tool calls), so every run is exactly one
think step ending in an answer. The router is called directly with the same
request the agent builds: system prompt, the user's input and the profile's
tool definitions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.agent.tools import builtin_tools
from tests.bench import requests as req
from tests.bench.load import LoadSpec, LoadWorker
from tests.bench.settings import BenchSettings
from tests.bench.stats import median
from tests.bench.summary import figures, median_figures
from tests.bench.topology import MOCK_SERVICE, Topology

MODEL = "bench-echo"
SYSTEM_PROMPT = "You are a benchmark. Answer at once."
TOOLS = ["calculator"]
MOCK_CONFIG = {"models": [{"name": MODEL, "context_window": 32000}]}
ROUTING = {"providers": {"mock": {"kind": "mock"}}, "models": {MODEL: {"provider": "mock", "context_window": 32000}}}
PROFILES = {
    "default_profile": "bench",
    "profiles": {
        "bench": {"model": MODEL, "system_prompt": SYSTEM_PROMPT, "tools": TOOLS, "max_iterations": 2},
    },
}


def _router_request() -> bytes:
    """What the agent's first (and only) step sends to the router."""
    definitions = [tool.definition() for tool in builtin_tools() if tool.name in TOOLS]
    return rpb.ChatRequest(
        model=MODEL,
        messages=[
            chat_pb2.Message(role=chat_pb2.ROLE_SYSTEM, content=[chat_pb2.ContentPart(text=SYSTEM_PROMPT)]),
            req.user(),
        ],
        tools=definitions,
    ).SerializeToString()


def _agent_request() -> bytes:
    return apb.RunRequest(task=apb.AgentTask(input=req.PROMPT, profile="bench")).SerializeToString()


def run(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    with Topology(workdir) as topology:
        mock = topology.mock("mock", MOCK_CONFIG)
        router = topology.router("router", ROUTING, {MOCK_SERVICE: [mock.address]})
        agent = topology.agent("agent", router.address, PROFILES)
        routes = {
            "router": (router.address, req.ROUTER_CHAT, _router_request(), {"router": router.pid, "adapter": mock.pid}),
            "agent": (
                agent.address,
                req.AGENT_RUN,
                _agent_request(),
                {"agent": agent.pid, "router": router.pid, "adapter": mock.pid},
            ),
        }
        rows = []
        for concurrency in settings.agent_concurrencies:
            per_target: dict[str, list[dict[str, Any]]] = {"router": [], "agent": []}
            added: list[float] = []
            for _ in range(settings.runs):
                for target, (address, method, request, pids) in routes.items():
                    outcome = worker.run(
                        LoadSpec(
                            target=address,
                            method=method,
                            request=request,
                            concurrency=concurrency,
                            duration_s=settings.duration_s,
                            warmup_s=settings.warmup_s,
                            watch_pids=pids,
                            ramp_s=min(0.002 * concurrency, 0.5),
                        )
                    )
                    per_target[target].append(figures(outcome))
                added.append(per_target["agent"][-1]["p50_ms"] - per_target["router"][-1]["p50_ms"])
            rows.append(
                {
                    "concurrency": concurrency,
                    "targets": {target: median_figures(runs) for target, runs in per_target.items()},
                    "added_p50_ms": median(added),
                    "raw": per_target,
                }
            )
    return {"rows": rows}

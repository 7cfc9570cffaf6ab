"""`llmmesh agent "question"`: run the agent and watch each step; `llmmesh agent-server`: run the agent process."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.client import bearer_metadata
from services.common.channels import aio_channel
from services.common.errors import MeshError
from services.common.tls import TLSSettings, channel_security

DEFAULT_AGENT_PORT = 50052
DEFAULT_AGENT_ADDRESS = f"127.0.0.1:{DEFAULT_AGENT_PORT}"
_RESULT_PREVIEW_CHARS = 240

# Exit codes: 0 an answer, 1 an error, 3 a limit or the deadline ended the run first.
_EXIT_CODES = {apb.RUN_END_REASON_ANSWER: 0, apb.RUN_END_REASON_ERROR: 1}
_EXIT_LIMIT = 3

Printer = Callable[[str], None]


def add_parsers(commands: Any) -> None:
    """Adds `agent` and `agent-server` to the llmmesh command."""
    agent = commands.add_parser("agent", help="ask the agent; streams its steps (think → act → observe)")
    agent.add_argument("question")
    agent.add_argument("--profile", "-p", default="", help="agent profile (default: the agent's default)")
    agent.add_argument("--model", "-m", default="", help="model for every step; overrides the profile ('auto' ok)")
    agent.add_argument("--fallback", action="append", default=[], help="fallback model (repeatable)")
    agent.add_argument("--tool", action="append", default=[], help="only offer these tools (repeatable)")
    agent.add_argument("--max-iterations", type=int, default=0, help="0: the profile's limit")
    agent.add_argument("--max-tokens", type=int, default=0, help="token budget for the run; 0: the profile's")
    agent.add_argument("--max-cost", type=float, default=0.0, help="cost budget in USD; 0: the profile's")
    agent.add_argument("--system", default="", help="system prompt; overrides the profile's")
    agent.add_argument("--timeout", type=float, default=120.0, help="deadline for the whole run, in seconds")
    agent.add_argument("--agent", help=f"agent address (default $LLMMESH_AGENT_ADDRESS or {DEFAULT_AGENT_ADDRESS})")
    agent.set_defaults(run=_agent)

    server = commands.add_parser("agent-server", help="run the agent process (LLMMESH_* settings)")
    server.set_defaults(run=lambda _: importlib.import_module("services.agent.main").main())


def default_agent_port(router_port: int) -> int:
    """`llmmesh up`'s agent port: 50052 beside the default router port, else a free one."""
    return DEFAULT_AGENT_PORT if router_port == 50051 else 0


def _agent(args: argparse.Namespace) -> None:
    task = apb.AgentTask(
        input=args.question,
        profile=args.profile,
        model=args.model,
        tools=args.tool,
        max_iterations=args.max_iterations,
        max_total_tokens=args.max_tokens,
        max_cost_usd=args.max_cost,
        system_prompt=args.system,
    )
    if args.fallback:
        task.routing.CopyFrom(rpb.RoutingPolicy(fallback_models=args.fallback))
    address = args.agent or os.environ.get("LLMMESH_AGENT_ADDRESS", DEFAULT_AGENT_ADDRESS)
    try:
        end = asyncio.run(stream_task(address, task, timeout=args.timeout))
    except MeshError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("\ncancelled: the agent stops the run and its calls.", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(_EXIT_CODES.get(end.reason, _EXIT_LIMIT))


async def stream_task(address: str, task: apb.AgentTask, *, timeout: float, out: Printer = print) -> apb.RunEnd:
    """Runs `task` on the agent at `address`, printing each step for a person; returns the RunEnd."""
    view = _RunView(out)
    channel = aio_channel(address, channel_security(TLSSettings()))
    try:
        call = agent_service_pb2_grpc.AgentServiceStub(channel).StreamRun(
            apb.StreamRunRequest(task=task), timeout=timeout, metadata=bearer_metadata()
        )
        async for response in call:
            view.show(response.event)
    except grpc.aio.AioRpcError as error:
        raise MeshError.from_rpc_error(error) from None
    finally:
        await channel.close()
    if view.end is None:
        raise MeshError(grpc.StatusCode.UNAVAILABLE, "the agent's stream ended without a RunEnd")
    return view.end


class _RunView:
    """Turns run events into readable lines. Model text is held until we know whether it is the answer."""

    def __init__(self, out: Printer) -> None:
        self._out = out
        self._pending_text = ""
        self._pending_usage = ""
        self.end: apb.RunEnd | None = None

    def show(self, event: apb.RunEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "step_started":
            self._flush()
            self._out(f"\n── step {event.step_started.step} · {event.step_started.model} " + "─" * 24)
        elif kind == "model_output":
            output = event.model_output
            self._pending_text = output.text
            self._pending_usage = (
                f"   [{output.model} via {output.provider} · {output.usage.input_tokens} in / "
                f"{output.usage.output_tokens} out · est. ${output.estimated_cost_usd:.6f}]"
            )
        elif kind == "tool_call_requested":
            self._flush()
            call = event.tool_call_requested.call
            self._out(f"→ {call.name} {call.arguments_json}")
        elif kind == "tool_call_finished":
            finished = event.tool_call_finished
            result = finished.result
            took = finished.duration.ToNanoseconds() / 1e6
            mark = "✗" if result.is_error else "←"
            label = " error:" if result.is_error else ""
            self._out(f"{mark} {result.name} ({took:.1f} ms){label} {_preview(result.content)}")
        elif kind == "tool_calls_limited":
            limited = event.tool_calls_limited
            which = apb.ToolCallLimit.Name(limited.limit).removeprefix("TOOL_CALL_LIMIT_").lower().replace("_", " ")
            self._out(
                f"! {len(limited.refused_call_ids)} of {limited.requested} tool call(s) not run: "
                f"limit of {limited.max} {which}"
            )
        elif kind == "end":
            self._show_end(event.end)

    def _flush(self, *, text: bool = True) -> None:
        if self._pending_text and text:
            self._out(self._pending_text)
        if self._pending_usage:
            self._out(self._pending_usage)
        self._pending_text = self._pending_usage = ""

    def _show_end(self, end: apb.RunEnd) -> None:
        self.end = end
        reason = apb.RunEndReason.Name(end.reason).removeprefix("RUN_END_REASON_").lower()
        if end.reason == apb.RUN_END_REASON_ANSWER:
            self._flush(text=False)  # the last model text is the answer, printed below
            self._out("\n══ answer " + "═" * 30)
            self._out(end.answer)
        else:
            self._flush()
            self._out(f"\n══ no answer: {reason.replace('_', ' ')} " + "═" * 20)
        if end.detail:
            self._out(f"   ({end.detail})")
        totals = end.totals
        self._out(
            f"-- ended: {reason} · {totals.iterations} step(s) · {totals.usage.input_tokens} in / "
            f"{totals.usage.output_tokens} out tokens · est. ${totals.estimated_cost_usd:.6f} · "
            f"{totals.duration.ToNanoseconds() / 1e6:.1f} ms"
        )


def _preview(content: str) -> str:
    flat = " ".join(content.split())
    return flat if len(flat) <= _RESULT_PREVIEW_CHARS else flat[:_RESULT_PREVIEW_CHARS] + " …"

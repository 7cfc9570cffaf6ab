"""`llmmesh agent "question"`: run the agent and watch each step."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

import grpc

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.cli.errors import EXIT_INTERRUPTED, address, mesh_error
from services.cli.main import DEFAULT_AGENT
from services.client import bearer_metadata
from services.common.channels import aio_channel
from services.common.errors import MeshError
from services.common.tls import TLSSettings, channel_security

_RESULT_PREVIEW_CHARS = 240

# Exit codes: 0 an answer, 1 an error, 3 a limit or the deadline ended the run first.
_EXIT_CODES = {apb.RUN_END_REASON_ANSWER: 0, apb.RUN_END_REASON_ERROR: 1}
_EXIT_LIMIT = 3

Printer = Callable[[str], None]


def agent(args: argparse.Namespace) -> None:
    target = address(args.agent, "LLMMESH_AGENT_ADDRESS", DEFAULT_AGENT, "--agent")
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
    try:
        end = asyncio.run(stream_task(target, task, timeout=args.timeout))
    except MeshError as error:
        raise mesh_error(
            error,
            target=target,
            service="agent",
            flag="--agent",
            variable="LLMMESH_AGENT_ADDRESS",
            timeout=args.timeout,
        ) from None
    except KeyboardInterrupt:
        print("\ncancelled: the agent stops the run and its calls.", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
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

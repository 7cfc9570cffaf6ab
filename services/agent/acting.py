"""Act: one run's tool calls, within its limits, each a span and a pair of events.

Per turn, `admit` picks the calls that may run (services/agent/tool_limits.py);
the others are answered at once with an error result naming the limit and
reported in one ToolCallsLimited event per limit. The admitted calls run
concurrently, at most `concurrent` at a time; each call's timeout starts when
it gets a slot, bounded by the run's time left then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping

import structlog
from google.protobuf import duration_pb2
from opentelemetry import trace

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import chat_pb2
from services.agent.tool_limits import ToolLimits, admit, limit_value, refusal
from services.agent.tools import Tool, ToolContext, execute
from services.common import telemetry_names as names
from services.common.telemetry import telemetry

log = structlog.get_logger(__name__)
Emit = Callable[[apb.RunEvent], None]


class RunTools:
    """The tool side of one run: counts, the concurrency slots, and the caller the calls are for."""

    def __init__(
        self,
        tools: Mapping[str, Tool],
        limits: ToolLimits,
        context: ToolContext,
        emit: Emit,
        *,
        timeout_seconds: float,
        time_left: Callable[[], float],
    ) -> None:
        self._tools = tools
        self._limits = limits
        self._context = context
        self._emit = emit
        self._timeout_seconds = timeout_seconds
        self._time_left = time_left
        self._slots = asyncio.Semaphore(limits.concurrent)
        self.ran = 0
        self.refused = 0

    async def act(self, step: int, calls: list[chat_pb2.ToolCall]) -> list[chat_pb2.ToolResult]:
        """The step's results in call order: the calls that ran, then the refused ones."""
        for call in calls:
            self._emit(apb.RunEvent(tool_call_requested=apb.ToolCallRequested(step=step, call=call)))
        admission = admit(calls, self._limits, already_run=self.ran)
        self.ran += len(admission.run)
        refused = self._refuse(step, len(calls), admission.refused)
        ran = await asyncio.gather(*(self._run(step, call) for call in admission.run))
        return [*ran, *refused]

    def _refuse(
        self, step: int, requested: int, refused: list[tuple[chat_pb2.ToolCall, apb.ToolCallLimit.ValueType]]
    ) -> list[chat_pb2.ToolResult]:
        if not refused:
            return []
        self.refused += len(refused)
        for limit in dict.fromkeys(limit for _, limit in refused):
            ids = [call.id for call, refused_by in refused if refused_by == limit]
            log.warning(
                "tool calls refused by a limit",
                run_id=self._context.run_id,
                step=step,
                limit=apb.ToolCallLimit.Name(limit),
                requested=requested,
                refused=len(ids),
            )
            limited = apb.ToolCallsLimited(
                step=step,
                limit=limit,
                max=limit_value(limit, self._limits),
                requested=requested,
                refused_call_ids=ids,
            )
            self._emit(apb.RunEvent(tool_calls_limited=limited))
        results = []
        for call, limit in refused:
            text = refusal(limit, self._limits, requested=requested)
            result = chat_pb2.ToolResult(tool_call_id=call.id, name=call.name, content=text, is_error=True)
            self._finished(step, result, started=time.monotonic())
            results.append(result)
        return results

    async def _run(self, step: int, call: chat_pb2.ToolCall) -> chat_pb2.ToolResult:
        async with self._slots:
            started = time.monotonic()
            timeout = max(0.01, min(self._timeout_seconds, self._time_left()))
            with _tool_span(step, call) as span:
                result = await execute(self._tools, call, timeout=timeout, context=self._context)
                if span.is_recording():
                    if result.is_error:
                        span.set_status(trace.Status(trace.StatusCode.ERROR, result.content[:300]))
                        span.set_attribute(names.ERROR_TYPE, "tool_error")
                    if telemetry().capture_content:
                        span.set_attribute(names.GEN_AI_TOOL_CALL_RESULT, result.content)
        self._finished(step, result, started=started)
        return result

    def _finished(self, step: int, result: chat_pb2.ToolResult, *, started: float) -> None:
        duration = duration_pb2.Duration()
        duration.FromNanoseconds(int((time.monotonic() - started) * 1e9))
        self._emit(apb.RunEvent(tool_call_finished=apb.ToolCallFinished(step=step, result=result, duration=duration)))


@contextlib.contextmanager
def _tool_span(step: int, call: chat_pb2.ToolCall) -> Iterator[trace.Span]:
    """The `execute_tool {name}` span, current while the call runs."""
    current = telemetry()
    with current.tracer.start_as_current_span(
        names.SPAN_EXECUTE_TOOL.format(name=call.name), record_exception=False
    ) as span:
        if span.is_recording():
            span.set_attributes(
                {
                    names.GEN_AI_OPERATION_NAME: names.OPERATION_EXECUTE_TOOL,
                    names.GEN_AI_TOOL_NAME: call.name,
                    names.GEN_AI_TOOL_CALL_ID: call.id,
                    names.GEN_AI_TOOL_TYPE: "function",
                    names.AGENT_STEP: step,
                }
            )
            if current.capture_content:
                span.set_attribute(names.GEN_AI_TOOL_CALL_ARGUMENTS, call.arguments_json)
        yield span

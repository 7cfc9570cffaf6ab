"""The ReAct loop: think (router chat) → act (tool calls, concurrently) → observe.

A run ends with exactly one RunEnd whose reason says why: a final answer
(an assistant turn without tool calls), the iteration limit, the token or
cost budget, the caller's deadline, or an error. A limit is never reported
as an answer, and a step whose known spend would cross a budget is not
started (services/agent/budget.py). Router calls wait for the router within
the run's deadline (wait_for_ready), so a router restart costs a pause, not
the run. See services/agent/__init__.py for the metadata sent to the router
with every step; tool calls are in services/agent/acting.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import structlog
from google.protobuf import duration_pb2
from opentelemetry.trace import SpanKind

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.agent import budget
from services.agent.acting import RunTools
from services.agent.plan import RunPlan
from services.agent.tools import META_RUN_ID, ToolContext
from services.common import telemetry_genai as genai
from services.common import telemetry_names as names
from services.common.errors import MeshError
from services.common.redaction import Redactor
from services.common.telemetry import telemetry

# gRPC metadata on every router call (documented in services/agent/__init__.py);
# META_RUN_ID also goes on every tool call.
META_PROFILE = "llmmesh-agent-profile"
META_STEP = "llmmesh-agent-step"
META_MAX_STEPS = "llmmesh-agent-max-steps"
META_REMAINING_TOKENS = "llmmesh-agent-remaining-tokens"
META_REMAINING_COST = "llmmesh-agent-remaining-cost-usd"
# The caller's key travels on to the router unchanged: the router then applies the
# caller's tenant (models, quotas), not the agent's. Trace context is not copied by
# hand: the channel's interceptor sends the current step's own.
_PASS_THROUGH = ("authorization",)

log = structlog.get_logger(__name__)
Emit = Callable[[apb.RunEvent], None]


class AgentLoop:
    """Runs plans against the router; one instance serves every run of the process."""

    def __init__(
        self,
        router: router_service_pb2_grpc.RouterServiceStub,
        *,
        tool_timeout_seconds: float,
        min_step_seconds: float,
        redactor: Redactor | None = None,
    ) -> None:
        self.router = router
        self.tool_timeout_seconds = tool_timeout_seconds
        self.min_step_seconds = min_step_seconds
        #: Knows the agent's own router key; each run adds its caller's key.
        self.redactor = redactor or Redactor()

    async def stream(
        self,
        plan: RunPlan,
        deadline: float,
        caller_metadata: Sequence[tuple[str, str]] = (),
        *,
        tenant: str = "",
    ) -> AsyncIterator[apb.RunEvent]:
        """The run's events as they happen, ending with the RunEnd.

        The run works in its own task; closing or cancelling this iterator
        (the caller went away) cancels it, and with it the router call and
        any tool call in flight.
        """
        queue: asyncio.Queue[apb.RunEvent] = asyncio.Queue()
        worker = asyncio.get_running_loop().create_task(
            _Run(self, plan, deadline, queue.put_nowait, caller_metadata, tenant).run()
        )
        try:
            while True:
                event = await queue.get()
                yield event
                if event.HasField("end"):
                    return
        finally:
            if not worker.done():
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker


class _Run:
    """The state of one run: conversation, totals, and the clock."""

    def __init__(
        self,
        loop: AgentLoop,
        plan: RunPlan,
        deadline: float,
        emit: Emit,
        caller_metadata: Sequence[tuple[str, str]],
        tenant: str,
    ) -> None:
        self._loop = loop
        self._plan = plan
        self._deadline = deadline
        self._emit = emit
        self._forwarded = tuple((k, v) for k, v in caller_metadata if k in _PASS_THROUGH)
        self._redact = loop.redactor.with_secrets(_credentials(self._forwarded))
        self._tools = RunTools(
            plan.tools,
            plan.tool_limits,
            ToolContext(plan.run_id, tenant, self._redact),
            emit,
            timeout_seconds=loop.tool_timeout_seconds,
            time_left=self._time_left,
        )
        self._started = time.monotonic()
        self._usage = chat_pb2.Usage()
        self._cost = 0.0
        self._steps = 0
        self._slowest_model_call = 0.0
        # The last step's usage and cost, and the tool result text added since: the next step's known spend.
        self._last_usage: chat_pb2.Usage | None = None
        self._last_cost = 0.0
        self._added_chars = 0
        self._messages: list[chat_pb2.Message] = []
        if plan.system_prompt:
            self._messages.append(_text_message(chat_pb2.ROLE_SYSTEM, plan.system_prompt))
        self._messages.extend(plan.history)
        self._messages.append(_text_message(chat_pb2.ROLE_USER, plan.input))
        self._definitions = [tool.definition() for tool in plan.tools.values()]

    async def run(self) -> None:
        log.info("run started", run_id=self._plan.run_id, profile=self._plan.profile, model=self._plan.model)
        try:
            end = await self._steps_until_end()
        except asyncio.CancelledError:
            log.info("run cancelled", run_id=self._plan.run_id, steps=self._steps)
            raise
        except Exception as error:  # a bug still ends the run with one RunEnd
            log.error("run failed", run_id=self._plan.run_id, exc_info=error)
            end = self._end(apb.RUN_END_REASON_ERROR, detail=f"internal error in the agent ({type(error).__name__})")
        log.info(
            "run ended",
            run_id=self._plan.run_id,
            reason=apb.RunEndReason.Name(end.reason),
            steps=self._steps,
            input_tokens=self._usage.input_tokens,
            output_tokens=self._usage.output_tokens,
        )
        self._emit(apb.RunEvent(end=end))

    async def _steps_until_end(self) -> apb.RunEnd:
        plan = self._plan
        while True:
            left = self._time_left()
            needed = max(self._loop.min_step_seconds, self._slowest_model_call)
            if left < needed:
                return self._end(
                    apb.RUN_END_REASON_DEADLINE,
                    detail=f"{max(left, 0):.2f}s left before the caller's deadline; a step needs about {needed:.2f}s",
                )
            refused = self._budget_refusal(f"step {self._steps + 1} was about to start", self._added_chars)
            if refused is not None:
                return refused
            self._steps += 1
            step = self._steps
            self._emit(apb.RunEvent(step_started=apb.StepStarted(step=step, model=plan.model)))
            response_or_end = await self._think(step, left)
            if isinstance(response_or_end, apb.RunEnd):
                return response_or_end
            response = response_or_end
            self._messages.append(response.message)
            calls = list(response.message.tool_calls)
            if not calls:
                detail = ""
                if response.finish_reason == chat_pb2.FINISH_REASON_LENGTH:
                    detail = "the answer was cut at the output token limit"
                return self._end(apb.RUN_END_REASON_ANSWER, answer=_text_of(response.message), detail=detail)
            limit = self._limit_reached(calls)
            if limit is not None:
                return limit
            await self._act(step, calls)

    async def _think(self, step: int, left: float) -> rpb.ChatResponse | apb.RunEnd:
        plan = self._plan
        request = rpb.ChatRequest(
            model=plan.model, messages=self._messages, tools=self._definitions, routing=plan.routing
        )
        if plan.settings is not None:
            request.settings.CopyFrom(plan.settings)
        started = time.monotonic()
        current = telemetry()
        with current.tracer.start_as_current_span(
            names.SPAN_CHAT.format(model=plan.model), kind=SpanKind.CLIENT, record_exception=False
        ) as span:
            if span.is_recording():
                genai.start_chat(span, plan.model, settings=plan.settings)
                span.set_attribute(names.AGENT_STEP, step)
                if current.capture_content:
                    genai.record_input(span, self._messages)
            try:
                # wait_for_ready: a router that is restarting is waited for, within the run's deadline.
                response: rpb.ChatResponse = await self._loop.router.Chat(
                    request, timeout=left, metadata=self._metadata(step), wait_for_ready=True
                )
            except grpc.aio.AioRpcError as rpc_error:
                genai.record_error(span, rpc_error.code(), self._redact(rpc_error.details() or ""))
                return self._model_call_failed(step, rpc_error)
            if span.is_recording():
                genai.record_answer(
                    span,
                    usage=response.usage,
                    finish_reason=response.finish_reason,
                    response_model=response.response_model,
                    provider=response.provider,
                )
                span.set_attribute(names.ROUTER_MODEL, response.model)
                if current.capture_content:
                    genai.record_output(span, response.message, response.finish_reason)
        self._slowest_model_call = max(self._slowest_model_call, time.monotonic() - started)
        _add_usage(self._usage, response.usage)
        self._cost += response.estimated_cost_usd
        self._last_usage, self._last_cost, self._added_chars = response.usage, response.estimated_cost_usd, 0
        self._emit(
            apb.RunEvent(
                model_output=apb.ModelOutput(
                    step=step,
                    text=_text_of(response.message),
                    model=response.model,
                    provider=response.provider,
                    usage=response.usage,
                    estimated_cost_usd=response.estimated_cost_usd,
                    attempts=response.attempts,
                )
            )
        )
        return response

    def _model_call_failed(self, step: int, rpc_error: grpc.aio.AioRpcError) -> apb.RunEnd:
        error = MeshError.from_rpc_error(rpc_error)
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and self._time_left() < self._loop.min_step_seconds:
            return self._end(
                apb.RUN_END_REASON_DEADLINE, detail=f"the caller's deadline arrived during step {step}'s model call"
            )
        reason = f" [{error.reason}]" if error.reason else ""
        return self._end(
            apb.RUN_END_REASON_ERROR,
            detail=f"step {step}: the model call failed: {error.code.name}{reason}: {self._redact(error.message)}",
        )

    def _limit_reached(self, calls: list[chat_pb2.ToolCall]) -> apb.RunEnd | None:
        """The model wants to act again: is another step still allowed?"""
        plan = self._plan
        wanted = f"the model asked for {len(calls)} more tool call(s) ({', '.join(c.name for c in calls)})"
        if self._steps >= plan.max_iterations:
            return self._end(
                apb.RUN_END_REASON_ITERATION_LIMIT, detail=f"{wanted} after {self._steps} steps, the limit"
            )
        return self._budget_refusal(wanted, added_chars=0)

    def _budget_refusal(self, why: str, added_chars: int) -> apb.RunEnd | None:
        """A budget reason when the next step's known spend would cross a budget (none before step 1)."""
        plan = self._plan
        if self._last_usage is None:
            return None
        estimate = budget.next_step(self._last_usage, self._last_cost, added_chars=added_chars)
        used = self._usage.input_tokens + self._usage.output_tokens
        if plan.max_total_tokens and used + estimate.input_tokens > plan.max_total_tokens:
            return self._end(
                apb.RUN_END_REASON_TOKEN_BUDGET,
                detail=f"{why}; {used} of {plan.max_total_tokens} tokens spent, and the next step would send "
                f"about {estimate.input_tokens} more (the whole conversation goes again)",
            )
        # `>=` as well: with an unpriced model the estimate is 0, and a spent budget still stops the run.
        if plan.max_cost_usd and (
            self._cost >= plan.max_cost_usd or self._cost + estimate.cost_usd > plan.max_cost_usd
        ):
            return self._end(
                apb.RUN_END_REASON_COST_BUDGET,
                detail=f"{why}; ${self._cost:.6f} of ${plan.max_cost_usd:.6f} spent, and the next step would "
                f"cost about ${estimate.cost_usd:.6f} more at the last step's rate",
            )
        return None

    async def _act(self, step: int, calls: list[chat_pb2.ToolCall]) -> None:
        """Runs the step's tool calls (within the run's tool limits) and appends their results in call order."""
        results = await self._tools.act(step, calls)
        for result in results:
            self._messages.append(chat_pb2.Message(role=chat_pb2.ROLE_TOOL, tool_result=result))
        self._added_chars = sum(len(result.content) for result in results)

    def _metadata(self, step: int) -> tuple[tuple[str, str], ...]:
        plan = self._plan
        metadata = [
            (META_RUN_ID, plan.run_id),
            (META_PROFILE, plan.profile),
            (META_STEP, str(step)),
            (META_MAX_STEPS, str(plan.max_iterations)),
        ]
        if plan.max_total_tokens:
            used = self._usage.input_tokens + self._usage.output_tokens
            metadata.append((META_REMAINING_TOKENS, str(max(plan.max_total_tokens - used, 0))))
        if plan.max_cost_usd:
            metadata.append((META_REMAINING_COST, f"{max(plan.max_cost_usd - self._cost, 0.0):.6f}"))
        return (*metadata, *self._forwarded)

    def _time_left(self) -> float:
        return self._deadline - asyncio.get_running_loop().time()

    def _end(self, reason: apb.RunEndReason.ValueType, *, answer: str = "", detail: str = "") -> apb.RunEnd:
        duration = duration_pb2.Duration()
        duration.FromNanoseconds(int((time.monotonic() - self._started) * 1e9))
        return apb.RunEnd(
            reason=reason,
            answer=answer,
            detail=detail,
            totals=apb.RunTotals(
                usage=self._usage,
                estimated_cost_usd=self._cost,
                iterations=self._steps,
                duration=duration,
                tool_calls=self._tools.ran,
                tool_calls_refused=self._tools.refused,
            ),
        )


def _credentials(metadata: Sequence[tuple[str, str]]) -> list[str]:
    """The caller's key from the forwarded authorization, so no error of this run repeats it."""
    values = [value for key, value in metadata if key == "authorization"]
    return [*values, *(value.split(" ", 1)[1] for value in values if " " in value)]


def _text_message(role: chat_pb2.Role.ValueType, text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, content=[chat_pb2.ContentPart(text=text)])


def _text_of(message: chat_pb2.Message) -> str:
    return "".join(part.text for part in message.content if part.WhichOneof("kind") == "text")


def _add_usage(total: chat_pb2.Usage, usage: chat_pb2.Usage) -> None:
    total.input_tokens += usage.input_tokens
    total.output_tokens += usage.output_tokens
    total.cached_input_tokens += usage.cached_input_tokens
    total.reasoning_tokens += usage.reasoning_tokens
    total.cache_write_input_tokens += usage.cache_write_input_tokens

"""AgentService: validates tasks, settles the plan, and runs the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace

from llmmesh.v1 import agent_service_pb2 as apb
from services.agent.loop import AgentLoop
from services.agent.metrics import observed
from services.agent.plan import RunPlan, plan_run
from services.agent.profiles import ProfilesFile
from services.agent.tool_limits import DEFAULT_LIMITS, ToolLimits
from services.agent.tools import ToolRegistry
from services.common import telemetry_names as names
from services.common.auth import current_tenant
from services.common.errors import handle_errors

# Kept back from the caller's deadline so the RunEnd reaches the caller in time.
END_MARGIN_SECONDS = 0.2


class AgentServicer:
    """The gRPC face of the agent."""

    def __init__(
        self,
        loop: AgentLoop,
        profiles: ProfilesFile,
        tools: ToolRegistry,
        *,
        default_deadline_seconds: float,
        router_key: str = "",
        tool_limits: ToolLimits = DEFAULT_LIMITS,
    ) -> None:
        self._loop = loop
        self._router_key = router_key
        self._tool_limits = tool_limits
        self._profiles = profiles
        self._tools = tools
        self._default_deadline = default_deadline_seconds

    @handle_errors
    async def StreamRun(  # noqa: N802 - gRPC method name
        self, request: apb.StreamRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.StreamRunResponse]:
        plan = plan_run(request.task, self._profiles, self._tools.available(), self._tool_limits)
        span = _name_run_span(plan)
        async for event in self._events(plan, context):
            if event.HasField("end"):
                _record_end(span, event.end)
            yield apb.StreamRunResponse(event=event)

    @handle_errors
    async def Run(self, request: apb.RunRequest, context: grpc.aio.ServicerContext) -> apb.RunResponse:  # noqa: N802
        plan = plan_run(request.task, self._profiles, self._tools.available(), self._tool_limits)
        span = _name_run_span(plan)
        response = apb.RunResponse()
        async for event in self._events(plan, context):
            response.events.append(event)
            if event.HasField("end"):
                response.end.CopyFrom(event.end)
                _record_end(span, event.end)
        return response

    @handle_errors
    async def ListProfiles(  # noqa: N802
        self, request: apb.ListProfilesRequest, context: grpc.aio.ServicerContext
    ) -> apb.ListProfilesResponse:
        available = self._tools.available()
        response = apb.ListProfilesResponse()
        for name, profile in self._profiles.profiles.items():
            tools = profile.tools if profile.tools is not None else list(available)
            response.profiles.append(
                apb.AgentProfile(
                    name=name,
                    description=profile.description,
                    model=profile.model,
                    tools=tools,
                    max_iterations=profile.max_iterations,
                )
            )
        return response

    def _events(self, plan: RunPlan, context: grpc.aio.ServicerContext) -> AsyncIterator[apb.RunEvent]:
        """The loop's events for `plan`, run for this call's caller (key, tenant) and deadline."""
        tenant = current_tenant.get()
        events = self._loop.stream(
            plan,
            self._deadline(context),
            _metadata(context, self._router_key),
            tenant=tenant.name if tenant is not None else "",
        )
        return observed(plan.profile, events, tools=plan.tools)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        """The run's deadline on the loop clock: the caller's, less the margin for the RunEnd."""
        remaining = context.time_remaining()
        if remaining is None:
            remaining = self._default_deadline
        return asyncio.get_running_loop().time() + remaining - END_MARGIN_SECONDS


def _metadata(context: grpc.aio.ServicerContext, router_key: str) -> tuple[tuple[str, str], ...]:
    """The caller's metadata; the agent's own router key only when the caller sent no credentials."""
    metadata = tuple((key, value) for key, value in context.invocation_metadata() or () if isinstance(value, str))
    if router_key and not any(key == "authorization" for key, _ in metadata):
        metadata += (("authorization", f"Bearer {router_key}"),)
    return metadata


def _name_run_span(plan: RunPlan) -> trace.Span:
    """The call's server span becomes the run's `invoke_agent {profile}` span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(names.SPAN_INVOKE_AGENT.format(name=plan.profile))
        span.set_attributes(
            {
                names.GEN_AI_OPERATION_NAME: names.OPERATION_INVOKE_AGENT,
                names.GEN_AI_AGENT_NAME: plan.profile,
                names.GEN_AI_REQUEST_MODEL: plan.model,
                names.GEN_AI_CONVERSATION_ID: plan.run_id,
                names.AGENT_RUN_ID: plan.run_id,
            }
        )
    return span


def _record_end(span: trace.Span, end: apb.RunEnd) -> None:
    if not span.is_recording():
        return
    usage = end.totals.usage
    span.set_attributes(
        {
            names.AGENT_END_REASON: apb.RunEndReason.Name(end.reason).removeprefix("RUN_END_REASON_").lower(),
            names.AGENT_STEP: end.totals.iterations,
            names.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
            names.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
        }
    )
    if end.reason == apb.RUN_END_REASON_ERROR:
        span.set_status(trace.Status(trace.StatusCode.ERROR, end.detail[:300]))

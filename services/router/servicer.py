"""RouterService: auth, quotas, validation and the caller's deadline in front of the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_genai as genai
from services.common.auth import current_tenant
from services.common.errors import handle_errors
from services.common.validation import DEFAULT_LIMITS, InputLimits, validate_chat_request
from services.router.balancer import Balancer
from services.router.engine import RouterEngine
from services.router.metrics import served
from services.router.quotas import QuotaGate


class RouterServicer:
    """The caller-facing gRPC service."""

    def __init__(
        self,
        engine: RouterEngine,
        balancer: Balancer,
        *,
        default_deadline_seconds: float,
        limits: InputLimits = DEFAULT_LIMITS,
        quotas: QuotaGate | None = None,
    ) -> None:
        self._engine = engine
        self._balancer = balancer
        self._default_deadline = default_deadline_seconds
        self._limits = limits
        self._quotas = quotas

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        """The caller's deadline on the loop clock; callers without one get the default."""
        remaining = context.time_remaining()
        if remaining is None:
            remaining = self._default_deadline
        return asyncio.get_running_loop().time() + remaining

    @handle_errors
    async def Chat(self, request: rpb.ChatRequest, context: grpc.aio.ServicerContext) -> rpb.ChatResponse:  # noqa: N802
        with served(self._engine.table, request.model, door="grpc", stream=False) as request_telemetry:
            validate_chat_request(request, limits=self._limits)
            tenant = current_tenant.get()
            if self._quotas is not None:
                await self._quotas.admit(tenant)
            genai.start_chat(trace.get_current_span(), request.model, settings=request.settings)
            response = await self._engine.chat(request, self._deadline(context))
            request_telemetry.answered(response)
        if self._quotas is not None:
            # Fan-out answers all cost money, not only the one returned first.
            answers = [response, *response.alternatives]
            await self._quotas.record(
                tenant,
                sum(answer.usage.input_tokens + answer.usage.output_tokens for answer in answers),
                sum(answer.estimated_cost_usd for answer in answers),
            )
        return response

    @handle_errors
    async def StreamChat(  # noqa: N802
        self, request: rpb.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.StreamChatResponse]:
        with served(self._engine.table, request.model, door="grpc", stream=True) as request_telemetry:
            validate_chat_request(request, limits=self._limits)
            tenant = current_tenant.get()
            if self._quotas is not None:
                await self._quotas.admit(tenant)
            genai.start_chat(trace.get_current_span(), request.model, stream=True, settings=request.settings)
            async for event in self._engine.stream_chat(request, self._deadline(context)):
                request_telemetry.event(event)
                if event.HasField("final") and self._quotas is not None:
                    usage = event.final.usage
                    await self._quotas.record(
                        tenant, usage.input_tokens + usage.output_tokens, event.final.estimated_cost_usd
                    )
                yield event

    @handle_errors
    async def ListModels(  # noqa: N802
        self, request: rpb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> rpb.ListModelsResponse:
        response = rpb.ListModelsResponse()
        models = list(self._engine.table.models())
        services = sorted({candidate.service for _, _, candidate in models})
        reachable = await asyncio.gather(*(self._balancer.pool(service).reachable() for service in services))
        available = dict(zip(services, reachable, strict=True))
        for name, route, candidate in models:
            response.models.append(
                chat_pb2.ModelInfo(
                    name=name,
                    provider=candidate.kind,
                    aliases=route.aliases,
                    context_window=route.context_window,
                    description=route.description,
                    mock=candidate.kind == "mock",
                    provider_instances=[candidate.provider],
                    available=available[candidate.service],
                )
            )
        return response

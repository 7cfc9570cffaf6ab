"""RouterService: admission (limits, quotas: admission.py, shared with the HTTP door) and the caller's deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_genai as genai
from services.common.auth import current_tenant
from services.common.errors import handle_errors
from services.router.admission import Admission
from services.router.balancer import Balancer
from services.router.embeddings import EmbeddingRouter
from services.router.engine import RouterEngine
from services.router.model_pages import capabilities_message, page_of
from services.router.served import current_served


class RouterServicer:
    """The caller-facing gRPC service."""

    def __init__(
        self,
        engine: RouterEngine,
        balancer: Balancer,
        *,
        default_deadline_seconds: float,
        admission: Admission | None = None,
    ) -> None:
        self._engine = engine
        self._balancer = balancer
        self._default_deadline = default_deadline_seconds
        self._admission = admission or Admission(engine.table)
        self._embeddings = EmbeddingRouter(engine)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        """The caller's deadline on the loop clock; callers without one get the default."""
        remaining = context.time_remaining()
        if remaining is None:
            remaining = self._default_deadline
        return asyncio.get_running_loop().time() + remaining

    @handle_errors
    async def Chat(self, request: rpb.ChatRequest, context: grpc.aio.ServicerContext) -> rpb.ChatResponse:  # noqa: N802
        # The record is opened (and finished, with the call's code) by RequestTelemetryInterceptor.
        record = current_served(self._engine.table)
        tenant = await self._admission.admit(request, record)
        genai.start_chat(trace.get_current_span(), request.model, settings=request.settings)
        response = await self._engine.chat(request, self._deadline(context))
        record.answered(response)
        # Fan-out answers all cost money, not only the one returned first.
        await self._admission.record(tenant, [response, *response.alternatives])
        return response

    @handle_errors
    async def StreamChat(  # noqa: N802
        self, request: rpb.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.StreamChatResponse]:
        record = current_served(self._engine.table)
        tenant = await self._admission.admit(request, record)
        genai.start_chat(trace.get_current_span(), request.model, stream=True, settings=request.settings)
        # aclosing: a caller that goes away closes the engine's stream now, which releases its attempt.
        async with contextlib.aclosing(self._engine.stream_chat(request, self._deadline(context))) as events:
            async for event in events:
                record.event(event)
                if event.HasField("final"):
                    await self._admission.record(tenant, [event.final])
                yield event

    @handle_errors
    async def Embed(self, request: rpb.EmbedRequest, context: grpc.aio.ServicerContext) -> rpb.EmbedResponse:  # noqa: N802
        record = current_served(self._engine.table)
        tenant = await self._admission.admit_embed(request, served=record)
        dimensions = request.dimensions if request.HasField("dimensions") else None
        genai.start_embeddings(trace.get_current_span(), request.model, dimensions=dimensions)
        response, paid = await self._embeddings.embed(request, self._deadline(context))
        record.embedded(response, paid)
        await self._admission.record_embed(tenant, response.usage.input_tokens, paid)
        return response

    @handle_errors
    async def ListModels(  # noqa: N802
        self, request: rpb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> rpb.ListModelsResponse:
        response = rpb.ListModelsResponse()
        # Only what this tenant may use: other tenants' models are not its business.
        visible = self._admission.visible_models(current_tenant.get())
        models, response.next_page_token = page_of(
            visible, [name for name, _, _ in visible], request.page_size, request.page_token
        )
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
                    capabilities=capabilities_message(candidate.capabilities),
                )
            )
        return response

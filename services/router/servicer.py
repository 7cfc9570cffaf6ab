"""RouterService: admission (limits, quotas: admission.py, shared with the HTTP door) and the caller's deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_genai as genai
from services.common import telemetry_names as names
from services.common.auth import current_tenant
from services.common.errors import MeshError, handle_errors
from services.common.telemetry import telemetry
from services.router.admission import Admission
from services.router.balancer import Balancer
from services.router.embeddings import EmbeddingRouter
from services.router.engine import RouterEngine


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
        tenant = await self._admission.admit(request)
        span = trace.get_current_span()
        genai.start_chat(span, request.model, settings=request.settings)
        with _Served(span) as served:
            response = await self._engine.chat(request, self._deadline(context))
            served.answered(response, response.finish_reason, response.usage)
        # Fan-out answers all cost money, not only the one returned first.
        await self._admission.record(tenant, [response, *response.alternatives])
        return response

    @handle_errors
    async def StreamChat(  # noqa: N802
        self, request: rpb.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.StreamChatResponse]:
        tenant = await self._admission.admit(request)
        span = trace.get_current_span()
        genai.start_chat(span, request.model, stream=True, settings=request.settings)
        # aclosing: a caller that goes away closes the engine's stream now, which releases its attempt.
        with _Served(span) as served:
            async with contextlib.aclosing(self._engine.stream_chat(request, self._deadline(context))) as events:
                async for event in events:
                    if event.HasField("final"):
                        served.answered(event.final, event.final.finish_reason, event.final.usage)
                        await self._admission.record(tenant, [event.final])
                    yield event

    @handle_errors
    async def Embed(self, request: rpb.EmbedRequest, context: grpc.aio.ServicerContext) -> rpb.EmbedResponse:  # noqa: N802
        tenant = await self._admission.admit_embed(request)
        span = trace.get_current_span()
        genai.start_embeddings(
            span, request.model, dimensions=request.dimensions if request.HasField("dimensions") else None
        )
        with _Served(span, names.OPERATION_EMBEDDINGS) as served:
            response, paid = await self._embeddings.embed(request, self._deadline(context))
            served.embedded(response)
        await self._admission.record_embed(tenant, response.usage.input_tokens, paid)
        return response

    @handle_errors
    async def ListModels(  # noqa: N802
        self, request: rpb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> rpb.ListModelsResponse:
        response = rpb.ListModelsResponse()
        # Only what this tenant may use: other tenants' models are not its business.
        models = self._admission.visible_models(current_tenant.get())
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


class _Served:
    """One caller request's telemetry: in-flight, duration, cost, and the answer on the span."""

    __slots__ = ("_attributes", "_instruments", "_span", "_started")

    def __init__(self, span: trace.Span, operation: str = names.OPERATION_CHAT) -> None:
        self._span = span
        self._instruments = telemetry().instruments
        self._attributes: dict[str, str] = {names.GEN_AI_OPERATION_NAME: operation}

    def __enter__(self) -> _Served:
        self._started = time.perf_counter()
        self._instruments.router_in_flight.value += 1
        return self

    def _count(self, answer: rpb.ChatResponse | rpb.StreamChatFinal | rpb.EmbedResponse) -> None:
        # The routing table's model name, not the caller's string: bounded metric cardinality.
        self._attributes[names.GEN_AI_REQUEST_MODEL] = answer.model
        self._attributes[names.GEN_AI_PROVIDER_NAME] = answer.provider
        if answer.estimated_cost_usd:
            self._instruments.router_cost.add(
                answer.estimated_cost_usd,
                ((names.GEN_AI_REQUEST_MODEL, answer.model), (names.GEN_AI_PROVIDER_NAME, answer.provider)),
            )

    def embedded(self, answer: rpb.EmbedResponse) -> None:
        self._count(answer)
        genai.record_embeddings(
            self._span,
            input_tokens=answer.usage.input_tokens,
            dimensions=answer.dimensions,
            response_model=answer.response_model,
            extra={
                names.GEN_AI_PROVIDER_NAME: answer.provider,
                names.ROUTER_MODEL: answer.model,
                names.ROUTER_ATTEMPTS: len(answer.attempts),
                names.ROUTER_ESTIMATED_COST: answer.estimated_cost_usd,
            },
        )

    def answered(
        self, answer: rpb.ChatResponse | rpb.StreamChatFinal, finish_reason: int, usage: chat_pb2.Usage
    ) -> None:
        self._count(answer)
        span = self._span
        if span.is_recording():
            genai.record_answer(
                span,
                usage=usage,
                finish_reason=finish_reason,
                response_model=answer.response_model,
                provider=answer.provider,
                extra={
                    names.ROUTER_MODEL: answer.model,
                    names.ROUTER_ATTEMPTS: len(answer.attempts),
                    names.ROUTER_ESTIMATED_COST: answer.estimated_cost_usd,
                },
            )

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        self._instruments.router_in_flight.value -= 1
        if isinstance(error, MeshError):
            self._attributes[names.ERROR_TYPE] = error.code.name
            genai.record_error(self._span, error.code, error.message)
        elif error is not None:
            self._attributes[names.ERROR_TYPE] = (
                "CANCELLED" if isinstance(error, (asyncio.CancelledError, GeneratorExit)) else "INTERNAL"
            )
        self._instruments.server_request_duration.record(time.perf_counter() - self._started, self._attributes)

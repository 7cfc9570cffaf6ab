"""ProviderService on top of any ProviderAdapter: the rules every adapter keeps.

Every MeshError leaving an adapter passes the adapter's `redactor` before
anything reads it (the span status, the gRPC status, the ErrorInfo): an
upstream may echo the provider key back in its error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import grpc
from opentelemetry import trace
from opentelemetry.metrics import Meter, Observation

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common import model_capabilities
from services.common import telemetry_genai as genai
from services.common import telemetry_names as names
from services.common.errors import (
    REASON_OVERLOADED,
    REASON_STREAM_TRUNCATED,
    REASON_UPSTREAM_MALFORMED,
    MeshError,
    handle_errors,
)
from services.common.telemetry import Tally, register_tally, telemetry
from services.common.validation import DEFAULT_LIMITS, InputLimits, validate_chat_request, validate_embed_request
from services.providers.base import ProviderAdapter
from services.providers.coalesce import coalesced

# Used when a caller sets no deadline; the router always sets one.
DEFAULT_TIMEOUT_SECONDS = 600.0


class ProviderServicer:
    """Validates, bounds in-flight calls, passes the time left, checks stream endings."""

    def __init__(self, adapter: ProviderAdapter, *, max_in_flight: int, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self._adapter = adapter
        self._limits = limits
        self._max_in_flight = max_in_flight
        self.in_flight = 0
        # The same count by call shape, for the metric the autoscalers read.
        self._calls = Tally()
        self._upstream_labels = ((names.GEN_AI_PROVIDER_NAME, adapter.provider),)

    def register_metrics(self, meter: Meter) -> None:
        """Exports in-flight calls and the limit (the saturation the autoscalers and alerts read); adapters only."""
        register_tally(
            meter,
            names.METRIC_ADAPTER_IN_FLIGHT,
            self._calls,
            unit="{call}",
            description="Calls being served, by llmmesh.call (unary or stream).",
            up_down=True,
        )
        limit = [Observation(self._max_in_flight, dict(self._upstream_labels))]
        meter.create_observable_gauge(
            names.METRIC_ADAPTER_IN_FLIGHT_LIMIT,
            callbacks=[lambda _: limit],
            unit="{call}",
            description="LLMMESH_MAX_IN_FLIGHT: calls past it are refused with RESOURCE_EXHAUSTED.",
        )
        for call in ("unary", "stream"):  # both series exist from the start, at 0
            self._calls.add(0, self._call_key(call))

    def _call_key(self, call: str) -> tuple[tuple[str, str], ...]:
        return (*self._upstream_labels, (names.CALL, call))

    def _admit(self) -> None:
        # Past the limit we refuse at once: a queue here would only move the
        # wait out of the router's sight and past its deadlines.
        if self.in_flight >= self._max_in_flight:
            raise MeshError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"adapter is at its in-flight limit ({self._max_in_flight}); try another instance",
                reason=REASON_OVERLOADED,
            )

    @staticmethod
    def _timeout(context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return DEFAULT_TIMEOUT_SECONDS if remaining is None else max(remaining, 0.0)

    @handle_errors
    async def Chat(  # noqa: N802 - gRPC method name
        self, request: pb.ProviderServiceChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderServiceChatResponse:
        validate_chat_request(request, limits=self._limits)
        self._admit()
        self.in_flight += 1
        self._calls.add(1, self._call_key("unary"))
        upstream = _UpstreamCall(self._adapter.provider, request)
        model_capabilities.current.set(model_capabilities.decode(context.invocation_metadata()))
        try:
            response = await self._adapter.chat(request, timeout=self._timeout(context))
            upstream.answered(response.usage, response.finish_reason, response.response_model, response.response_id)
            if upstream.capture:
                genai.record_output(upstream.span, response.message, response.finish_reason)
            return response
        except BaseException as error:
            upstream.failed(self._redacted(error))
            raise
        finally:
            self.in_flight -= 1
            self._calls.add(-1, self._call_key("unary"))
            upstream.done()

    @handle_errors
    async def StreamChat(  # noqa: N802 - gRPC method name
        self, request: pb.ProviderServiceStreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProviderServiceStreamChatResponse]:
        validate_chat_request(request, limits=self._limits)
        self._admit()
        self.in_flight += 1
        self._calls.add(1, self._call_key("stream"))
        upstream = _UpstreamCall(self._adapter.provider, request, stream=True)
        model_capabilities.current.set(model_capabilities.decode(context.invocation_metadata()))
        text: list[str] = []
        try:
            finished = False
            stream = cast(
                AsyncGenerator[pb.ProviderServiceStreamChatResponse, None],
                self._adapter.stream_chat(request, timeout=self._timeout(context)),
            )
            # aclosing: a cancelled call closes the adapter's generator (and with it the
            # SDK stream and its HTTP request) now, not whenever the GC gets to it.
            async with contextlib.aclosing(coalesced(stream)) as events:
                async for event in events:
                    if finished:
                        raise MeshError(grpc.StatusCode.INTERNAL, "adapter sent data after the final message")
                    finished = event.HasField("final")
                    if finished:
                        final = event.final
                        upstream.answered(final.usage, final.finish_reason, final.response_model, final.response_id)
                        if upstream.capture:
                            message = chat_pb2.Message(
                                role=chat_pb2.ROLE_ASSISTANT, content=[chat_pb2.ContentPart(text="".join(text))]
                            )
                            genai.record_output(upstream.span, message, final.finish_reason)
                    else:
                        upstream.first_token()
                        if upstream.capture:
                            text.append(event.delta.text)
                    yield event
            if not finished:
                raise MeshError(
                    grpc.StatusCode.UNAVAILABLE,
                    "upstream stream ended without a finish reason; the answer is truncated",
                    reason=REASON_STREAM_TRUNCATED,
                )
        except BaseException as error:
            upstream.failed(self._redacted(error))
            raise
        finally:
            self.in_flight -= 1
            self._calls.add(-1, self._call_key("stream"))
            upstream.done()

    def _redacted(self, error: BaseException) -> BaseException:
        """The same error, its upstream text (message, ErrorInfo values) redacted in place."""
        if isinstance(error, MeshError):
            self._adapter.redactor.error(error)
        return error

    @handle_errors
    async def Embed(  # noqa: N802 - gRPC method name
        self, request: pb.ProviderServiceEmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderServiceEmbedResponse:
        validate_embed_request(request, limits=self._limits)
        self._admit()
        self.in_flight += 1
        upstream = _UpstreamCall.embeddings(self._adapter.provider, request)
        try:
            response = await self._adapter.embed(request, timeout=self._timeout(context))
            _check_vectors(request, response)
            dimensions = len(response.embeddings[0].values)
            genai.record_embeddings(
                upstream.span,
                input_tokens=response.usage.input_tokens,
                dimensions=dimensions,
                response_model=response.response_model,
            )
            upstream.tokens(response.usage, response.response_model, output=False)
            return response
        except BaseException as error:
            upstream.failed(self._redacted(error))
            raise
        finally:
            self.in_flight -= 1
            upstream.done()

    @handle_errors
    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: pb.ProviderServiceListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderServiceListModelsResponse:
        return pb.ProviderServiceListModelsResponse(models=self._adapter.list_models(), provider=self._adapter.provider)


def _check_vectors(request: pb.ProviderServiceEmbedRequest, response: pb.ProviderServiceEmbedResponse) -> None:
    """One vector per input, all of one length (the one asked for): anything else is a malformed answer."""
    lengths = {len(embedding.values) for embedding in response.embeddings}
    asked = {request.dimensions} if request.HasField("dimensions") else lengths
    if len(response.embeddings) != len(request.inputs) or len(lengths) != 1 or 0 in lengths or lengths != asked:
        raise MeshError(
            grpc.StatusCode.UNAVAILABLE,
            f"upstream sent {len(response.embeddings)} vectors of lengths {sorted(lengths)} "
            f"for {len(request.inputs)} inputs",
            reason=REASON_UPSTREAM_MALFORMED,
        )


class _UpstreamCall:
    """The adapter's `chat {model}` span (the server span, renamed) and the GenAI client metrics."""

    __slots__ = ("_attributes", "_first_token", "_started", "capture", "span")

    def __init__(
        self,
        provider: str,
        request: pb.ProviderServiceChatRequest | pb.ProviderServiceStreamChatRequest,
        *,
        stream: bool = False,
    ) -> None:
        current = telemetry()
        self.span = trace.get_current_span()
        self.capture = current.capture_content and self.span.is_recording()
        genai.start_chat(self.span, request.model, provider=provider, stream=stream, settings=request.settings)
        if self.capture:
            genai.record_input(self.span, request.messages)
        self._attributes: dict[str, str] = {
            names.GEN_AI_OPERATION_NAME: names.OPERATION_CHAT,
            names.GEN_AI_PROVIDER_NAME: provider,
            names.GEN_AI_REQUEST_MODEL: request.model,
        }
        self._started = time.perf_counter()
        self._first_token: float | None = None

    def first_token(self) -> None:
        if self._first_token is None:
            self._first_token = time.perf_counter() - self._started

    @classmethod
    def embeddings(cls, provider: str, request: pb.ProviderServiceEmbedRequest) -> _UpstreamCall:
        """The same for an embeddings call: the span is `embeddings {model}`; inputs are never captured."""
        call = cls.__new__(cls)
        call.span = trace.get_current_span()
        call.capture = False
        dimensions = request.dimensions if request.HasField("dimensions") else None
        genai.start_embeddings(call.span, request.model, provider=provider, dimensions=dimensions)
        call._attributes = {
            names.GEN_AI_OPERATION_NAME: names.OPERATION_EMBEDDINGS,
            names.GEN_AI_PROVIDER_NAME: provider,
            names.GEN_AI_REQUEST_MODEL: request.model,
        }
        call._started = time.perf_counter()
        call._first_token = None
        return call

    def answered(self, usage: chat_pb2.Usage, finish_reason: int, response_model: str, response_id: str) -> None:
        genai.record_answer(
            self.span, usage=usage, finish_reason=finish_reason, response_model=response_model, response_id=response_id
        )
        self.tokens(usage, response_model)

    def tokens(self, usage: chat_pb2.Usage, response_model: str, *, output: bool = True) -> None:
        """The GenAI token usage histogram (embeddings have input tokens only)."""
        if response_model:
            self._attributes[names.GEN_AI_RESPONSE_MODEL] = response_model
        histogram = telemetry().instruments.token_usage
        histogram.record(usage.input_tokens, {**self._attributes, names.GEN_AI_TOKEN_TYPE: "input"})
        if output:
            histogram.record(usage.output_tokens, {**self._attributes, names.GEN_AI_TOKEN_TYPE: "output"})

    def failed(self, error: BaseException) -> None:
        if isinstance(error, MeshError):
            self._attributes[names.ERROR_TYPE] = error.code.name
            genai.record_error(self.span, error.code, error.message)
        else:
            self._attributes[names.ERROR_TYPE] = (
                "CANCELLED" if isinstance(error, (GeneratorExit, asyncio.CancelledError)) else type(error).__qualname__
            )

    def done(self) -> None:
        instruments = telemetry().instruments
        instruments.operation_duration.record(time.perf_counter() - self._started, self._attributes)
        if self._first_token is not None:
            instruments.adapter_time_to_first_token.record(self._first_token, self._attributes)

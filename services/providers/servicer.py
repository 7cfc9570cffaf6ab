"""ProviderService on top of any ProviderAdapter: the rules every adapter keeps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import grpc

from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import REASON_OVERLOADED, REASON_STREAM_TRUNCATED, MeshError, handle_errors
from services.common.validation import DEFAULT_LIMITS, InputLimits, validate_chat_request
from services.providers.base import ProviderAdapter

# Used when a caller sets no deadline; the router always sets one.
DEFAULT_TIMEOUT_SECONDS = 600.0


class ProviderServicer:
    """Validates, bounds in-flight calls, passes the time left, checks stream endings."""

    def __init__(self, adapter: ProviderAdapter, *, max_in_flight: int, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self._adapter = adapter
        self._limits = limits
        self._max_in_flight = max_in_flight
        self.in_flight = 0

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
        try:
            return await self._adapter.chat(request, timeout=self._timeout(context))
        finally:
            self.in_flight -= 1

    @handle_errors
    async def StreamChat(  # noqa: N802 - gRPC method name
        self, request: pb.ProviderServiceStreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProviderServiceStreamChatResponse]:
        validate_chat_request(request, limits=self._limits)
        self._admit()
        self.in_flight += 1
        try:
            finished = False
            # aclosing: a cancelled call closes the adapter's generator (and with it the
            # SDK stream and its HTTP request) now, not whenever the GC gets to it.
            stream = cast(
                AsyncGenerator[pb.ProviderServiceStreamChatResponse, None],
                self._adapter.stream_chat(request, timeout=self._timeout(context)),
            )
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if finished:
                        raise MeshError(grpc.StatusCode.INTERNAL, "adapter sent data after the final message")
                    finished = event.HasField("final")
                    yield event
            if not finished:
                raise MeshError(
                    grpc.StatusCode.UNAVAILABLE,
                    "upstream stream ended without a finish reason; the answer is truncated",
                    reason=REASON_STREAM_TRUNCATED,
                )
        finally:
            self.in_flight -= 1

    @handle_errors
    async def ListModels(  # noqa: N802 - gRPC method name
        self, request: pb.ProviderServiceListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderServiceListModelsResponse:
        return pb.ProviderServiceListModelsResponse(models=self._adapter.list_models(), provider=self._adapter.provider)

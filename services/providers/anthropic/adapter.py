"""AnthropicAdapter: ProviderService calls on one shared `anthropic.AsyncAnthropic` client.

Messages calls go through the SDK's low-level `post` with the body as plain
JSON, and answers and stream events are read as decoded JSON
(services/providers/anthropic/wire.py): the SDK's headers, auth, timeout and
status errors, without its typed transform or a pydantic model per event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import anthropic
import grpc
import httpx2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common import model_capabilities
from services.common.errors import REASON_STREAM_TRUNCATED, REASON_UPSTREAM_TIMEOUT, MeshError
from services.common.redaction import Redactor
from services.providers.anthropic import wire
from services.providers.anthropic.mapping import (
    PROVIDER,
    answers_with_json_tool,
    build_create_kwargs,
    ignored_settings,
)
from services.providers.anthropic.responses import (
    assistant_message,
    finish_reason,
    message_usage,
    response_extension,
    set_extension,
)
from services.providers.anthropic.streaming import PrefixSeam, StreamAssembler
from services.providers.anthropic.upstream import headroom, map_error
from services.providers.base import ProviderAdapter
from services.providers.upstream_errors import check_event_stream, reading_body

# Current models (anthropic 2.10 ModelParam) served when LLMMESH_MODELS is empty.
DEFAULT_MODELS = (
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-opus-4-8",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)

# What the SDK and its transport raise for upstream faults. ValueError covers a
# stream event that is not JSON; TimeoutError our own deadline guard.
_UPSTREAM_ERRORS = (anthropic.AnthropicError, httpx2.HTTPError, TimeoutError, ValueError)


class AnthropicAdapter(ProviderAdapter):
    """Maps the unified contract onto the Messages API."""

    provider = PROVIDER

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        *,
        models: list[str],
        default_max_tokens: int,
        instance: str = PROVIDER,
        adaptive_thinking_models: frozenset[str] = frozenset(),
    ) -> None:
        self._client = client
        self.redactor = Redactor([client.api_key or "", client.auth_token or ""])
        self._models = models or list(DEFAULT_MODELS)
        self._default_max_tokens = default_max_tokens
        self._adaptive = adaptive_thinking_models
        self._instance = instance

    def list_models(self) -> list[chat_pb2.ModelInfo]:
        return [
            chat_pb2.ModelInfo(name=name, provider=self.provider, provider_instances=[self._instance], available=True)
            for name in self._models
        ]

    async def chat(self, request: pb.ProviderServiceChatRequest, *, timeout: float) -> pb.ProviderServiceChatResponse:
        kwargs = build_create_kwargs(
            request,
            default_max_tokens=self._default_max_tokens,
            adaptive_models=self._adaptive,
            sampling=_takes_sampling(),
        )
        _check_time_left(timeout)
        try:
            async with asyncio.timeout(timeout):
                raw = await self._post(kwargs, timeout=timeout, stream=False)
                message = wire.message(raw)
        except _UPSTREAM_ERRORS as error:
            raise map_error(error) from None
        with reading_body(PROVIDER):
            json_tool = answers_with_json_tool(request)
            response = pb.ProviderServiceChatResponse(
                message=assistant_message(message, json_tool=json_tool),
                finish_reason=finish_reason(message.stop_reason, json_tool=json_tool),
                usage=message_usage(message),
                response_model=message.model,
                response_id=message.id,
                headroom=headroom(raw.headers),
            )
            set_extension(
                response.extensions,
                response_extension(
                    stop_reason=message.stop_reason,
                    stop_sequence=message.stop_sequence,
                    stop_details=message.stop_details,
                    ignored=ignored_settings(request, sampling=_takes_sampling()),
                ),
            )
        return response

    async def stream_chat(
        self, request: pb.ProviderServiceStreamChatRequest, *, timeout: float
    ) -> AsyncIterator[pb.ProviderServiceStreamChatResponse]:
        kwargs = build_create_kwargs(
            request,
            default_max_tokens=self._default_max_tokens,
            adaptive_models=self._adaptive,
            sampling=_takes_sampling(),
        )
        _check_time_left(timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        json_tool = answers_with_json_tool(request)
        assembler = StreamAssembler(json_tool=json_tool)
        seam = PrefixSeam(request.assistant_prefix)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._post(kwargs, timeout=timeout, stream=True)
        except _UPSTREAM_ERRORS as error:
            raise map_error(error) from None
        # `aclosing` closes the HTTP response on every exit, cancellation included:
        # a cancelled gRPC call aborts the upstream request.
        async with contextlib.aclosing(response):
            check_event_stream(PROVIDER, response.headers)
            events = wire.events(self._client, response)
            while True:
                try:
                    # The deadline guards each step, not the yields: a timeout must
                    # fire inside the SDK's await, never in the consumer's code.
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events, None)
                except _UPSTREAM_ERRORS as error:
                    raise map_error(error) from None
                if event is None:
                    break
                with reading_body(PROVIDER):
                    deltas = assembler.feed(event)
                for delta in deltas:
                    joined = seam.join(delta)
                    if joined is not None:
                        yield pb.ProviderServiceStreamChatResponse(delta=joined)
            _check_usage(assembler)
            with reading_body(PROVIDER):
                final = pb.ProviderStreamFinal(
                    finish_reason=finish_reason(assembler.stop_reason, json_tool=json_tool),
                    usage=assembler.usage(),
                    response_model=assembler.model,
                    response_id=assembler.message_id,
                    headroom=headroom(response.headers),
                )
        with reading_body(PROVIDER):
            extension: dict[str, Any] = response_extension(
                stop_reason=assembler.stop_reason,
                stop_sequence=assembler.stop_sequence,
                stop_details=assembler.stop_details,
                ignored=ignored_settings(request, sampling=_takes_sampling()),
            )
            set_extension(final.extensions, extension)
        yield pb.ProviderServiceStreamChatResponse(final=final)

    async def aclose(self) -> None:
        await self._client.close()

    async def _post(self, kwargs: dict[str, Any], *, timeout: float, stream: bool) -> httpx2.Response:
        """`POST /v1/messages` through the SDK; the raw answer, its body unread when `stream`."""
        content, options = wire.body_bytes(kwargs, stream=stream), wire.options(timeout)
        if stream:
            # stream_cls is never used: cast_to httpx2.Response hands back the response itself.
            streamed = await self._client.post(
                wire.MESSAGES_PATH,
                content=content,
                cast_to=httpx2.Response,
                options=options,
                stream=True,
                stream_cls=anthropic.AsyncStream[Any],
            )
            return cast(httpx2.Response, streamed)
        return await self._client.post(wire.MESSAGES_PATH, content=content, cast_to=httpx2.Response, options=options)


def _takes_sampling() -> bool:
    """The router said this call's model takes temperature / top_p (routing file `sampling: true`)."""
    told = model_capabilities.current.get()
    return told is not None and "sampling" in told


def _check_usage(assembler: StreamAssembler) -> None:
    """The stop reason came without the usage message_delta carries: cost and quotas would undercount."""
    if assembler.stop_reason is not None and not assembler.final_usage_seen:
        raise MeshError(
            grpc.StatusCode.UNAVAILABLE,
            "anthropic: upstream stream ended without the final usage (message_delta.usage); the answer is incomplete",
            reason=REASON_STREAM_TRUNCATED,
        )


def _check_time_left(timeout: float) -> None:
    if timeout <= 0:
        raise MeshError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "anthropic: no time left for the upstream call",
            reason=REASON_UPSTREAM_TIMEOUT,
        )

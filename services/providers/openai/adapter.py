"""ProviderAdapter for OpenAI Chat Completions and OpenAI-compatible servers.

One `openai.AsyncOpenAI` client per process, built with `max_retries=0` (the
router owns retries); each call passes the caller's time left as the SDK
timeout. Chat calls go through the SDK's low-level `post` with the body the
adapter already holds as plain JSON: the SDK still builds the headers (auth,
user agent, its `x-stainless-*` set), applies the timeout and raises its own
`APIStatusError` subclasses, but skips the typed transform of the arguments
and the pydantic model of the answer, which the mapping would only take apart
again. The answer comes back as the raw `httpx2.Response` (rate-limit headers
for headroom) and is decoded with orjson. Streams are closed in `finally`, so
a cancelled gRPC call aborts the upstream HTTP request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import httpx2
import orjson
import structlog
from openai import AsyncOpenAI, RequestOptions
from openai.types import CreateEmbeddingResponse

from llmmesh.v1 import chat_pb2, embeddings_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import REASON_STREAM_TRUNCATED, REASON_UPSTREAM_TIMEOUT, MeshError
from services.common.redaction import Redactor
from services.providers.base import ProviderAdapter
from services.providers.openai import events, mapping
from services.providers.openai.errors import UPSTREAM_ERRORS, malformed, mesh_error
from services.providers.upstream_errors import check_event_stream, headroom_from_headers, reading_body

log = structlog.get_logger(__name__)

#: Served when LLMMESH_MODELS is empty: current OpenAI chat models.
DEFAULT_MODELS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4.1-mini", 1_047_576),
    ("gpt-4.1-nano", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4o-mini", 128_000),
    ("o4-mini", 200_000),
    ("text-embedding-3-small", 8_191),
    ("text-embedding-3-large", 8_191),
)


class OpenAIAdapter(ProviderAdapter):
    """OpenAI (or an OpenAI-compatible server) through the official async SDK."""

    provider = "openai"

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        instance: str = "openai",
        models: Sequence[str] = (),
        max_tokens_field: mapping.MaxTokensField = "max_completion_tokens",
        stream_usage: bool = True,
    ) -> None:
        self._client = client
        self._instance = instance
        self._configured_models = list(models)
        self._max_tokens_field: mapping.MaxTokensField = max_tokens_field
        self._stream_usage = stream_usage
        self.redactor = Redactor([client.api_key] if isinstance(client.api_key, str) else [])

    def list_models(self) -> list[chat_pb2.ModelInfo]:
        known = dict(DEFAULT_MODELS)
        names = self._configured_models or list(known)
        return [
            chat_pb2.ModelInfo(
                name=name,
                provider=self.provider,
                context_window=known.get(name, 0),
                description=f"OpenAI Chat Completions via instance {self._instance}",
                provider_instances=[self._instance],
                available=True,
            )
            for name in names
        ]

    async def chat(self, request: pb.ProviderServiceChatRequest, *, timeout: float) -> pb.ProviderServiceChatResponse:
        body = self._body(request, stream=False)
        _check_budget(timeout)
        started = time.monotonic()
        try:
            answer = await self._post(body, timeout=timeout)
            headers = dict(answer.headers)
            completion = _json_body(answer)
        except UPSTREAM_ERRORS as error:
            raise self._upstream_failure(error, request.model, started) from None
        if not isinstance(completion, dict) or not completion.get("choices"):
            # A non-JSON 200 comes back from the SDK as plain text, not as an error.
            unusable = malformed("the upstream returned no choices (is the base URL an OpenAI-compatible API?)")
            raise self._upstream_failure(unusable, request.model, started)
        with reading_body(self.provider):
            response = mapping.response_from_completion(completion)
        response.headroom.CopyFrom(_headroom(headers))
        return response

    async def stream_chat(
        self, request: pb.ProviderServiceStreamChatRequest, *, timeout: float
    ) -> AsyncIterator[pb.ProviderServiceStreamChatResponse]:
        body = self._body(request, stream=True)
        _check_budget(timeout)
        started = time.monotonic()
        state = mapping.StreamState()
        try:
            response = await self._post(body, timeout=timeout, stream=True)
        except UPSTREAM_ERRORS as error:
            raise self._upstream_failure(error, request.model, started) from None
        headroom = _headroom(dict(response.headers))
        try:
            check_event_stream(self.provider, response.headers)
            async for chunk in events.chunks(response):
                event = pb.ProviderServiceStreamChatResponse()
                with reading_body(self.provider):
                    filled = state.delta_into(chunk, event.delta)
                if filled:
                    yield event
        except UPSTREAM_ERRORS as error:
            raise self._upstream_failure(error, request.model, started) from None
        finally:
            # Also runs on cancellation and GeneratorExit: closing the response aborts the HTTP request.
            await response.aclose()
        if state.raw_finish_reason is None:
            # The SDK ends quietly on a body cut cleanly, with or without [DONE] (docs/sdk-notes.md).
            raise MeshError(
                grpc.StatusCode.UNAVAILABLE,
                "openai: upstream stream ended without a finish reason; the answer is truncated",
                reason=REASON_STREAM_TRUNCATED,
            )
        if self._stream_usage and state.usage is None:
            # The usage chunk comes after the finish chunk: without it cost and quotas would count 0.
            raise MeshError(
                grpc.StatusCode.UNAVAILABLE,
                "openai: upstream stream ended after the finish reason but before the usage it was asked for"
                " (stream_options.include_usage); the answer is incomplete",
                reason=REASON_STREAM_TRUNCATED,
            )
        with reading_body(self.provider):
            final = state.final(headroom)
        yield pb.ProviderServiceStreamChatResponse(final=final)

    async def embed(
        self, request: pb.ProviderServiceEmbedRequest, *, timeout: float
    ) -> pb.ProviderServiceEmbedResponse:
        _check_budget(timeout)
        started = time.monotonic()
        try:
            # No encoding_format: the SDK then asks for base64 (a quarter of the bytes) and decodes it,
            # and still accepts floats from OpenAI-compatible servers that ignore the field.
            raw = await self._client.embeddings.with_raw_response.create(**_embed_kwargs(request), timeout=timeout)
            headers = dict(raw.headers)
            answer = raw.parse()
        except _EMBED_ERRORS as error:
            # A bare ValueError: the SDK's decoder found no data, or base64 it cannot read.
            unreadable = not isinstance(error, UPSTREAM_ERRORS)
            failure = malformed("the upstream returned no readable embeddings") if unreadable else error
            raise self._upstream_failure(failure, request.model, started) from None
        if not isinstance(answer, CreateEmbeddingResponse):
            unusable = malformed("the upstream returned no embeddings (is the base URL an OpenAI-compatible API?)")
            raise self._upstream_failure(unusable, request.model, started)
        with reading_body(self.provider):
            response = _embed_response(answer)
        response.headroom.CopyFrom(_headroom(headers))
        return response

    async def aclose(self) -> None:
        await self._client.close()

    def _body(self, request: mapping.Request, *, stream: bool) -> dict[str, Any]:
        return mapping.request_body(
            request, stream=stream, max_tokens_field=self._max_tokens_field, stream_usage=self._stream_usage
        )

    async def _post(self, body: dict[str, Any], *, timeout: float, stream: bool = False) -> httpx2.Response:
        """`POST /chat/completions` through the SDK (its headers, auth, timeout, status errors); the raw answer,
        its body unread when `stream`."""
        return await self._client.post(
            "/chat/completions",
            content=orjson.dumps(body),
            cast_to=httpx2.Response,
            options=_options(timeout),
            stream=stream,
        )

    def _upstream_failure(self, error: BaseException, model: str, started: float) -> MeshError:
        result = mesh_error(error, model=model, served_models=self._configured_models)
        # Never the request, headers or message text: they may hold prompts or keys.
        log.warning(
            "upstream call failed",
            model=model,
            code=result.code.name,
            reason=result.reason,
            upstream_status=result.metadata.get("upstream_status", ""),
            error_type=type(error).__name__,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return result


def _check_budget(timeout: float) -> None:
    if timeout <= 0:
        raise MeshError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "openai: no time left for the upstream call",
            reason=REASON_UPSTREAM_TIMEOUT,
        )


def _options(timeout: float) -> RequestOptions:
    # The bearer key, as the SDK's own create() asks for it.
    return {"timeout": timeout, "security": {"bearer_auth": True}}


def _json_body(answer: httpx2.Response) -> Any:
    """The decoded body, as the SDK decodes one: JSON whatever the content type; None for a non-JSON
    body under a non-JSON content type (the SDK hands back text then); broken JSON under a JSON
    content type raises (orjson's JSONDecodeError is json's)."""
    try:
        return orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        content_type = answer.headers.get("content-type", "*").split(";")[0]
        if content_type.endswith("json"):
            raise
        return None


#: A bare ValueError comes from the SDK's base64 decoder (no data, or bytes it cannot read).
_EMBED_ERRORS: tuple[type[Exception], ...] = (*UPSTREAM_ERRORS, ValueError)


def _embed_kwargs(request: pb.ProviderServiceEmbedRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": request.model, "input": list(request.inputs)}
    if request.HasField("dimensions"):
        kwargs["dimensions"] = request.dimensions
    if request.user:
        kwargs["user"] = request.user
    return kwargs


def _embed_response(answer: CreateEmbeddingResponse) -> pb.ProviderServiceEmbedResponse:
    # OpenAI answers in input order with an index on each; sort anyway, the servicer checks the count.
    data = sorted(answer.data, key=lambda item: item.index)
    usage = answer.usage.prompt_tokens if answer.usage is not None else 0
    return pb.ProviderServiceEmbedResponse(
        embeddings=[embeddings_pb2.Embedding(index=item.index, values=list(item.embedding)) for item in data],
        usage=chat_pb2.Usage(input_tokens=usage),
        response_model=answer.model or "",
    )


def _headroom(headers: dict[str, str]) -> chat_pb2.RateLimitHeadroom:
    return headroom_from_headers(
        headers,
        remaining_requests="x-ratelimit-remaining-requests",
        limit_requests="x-ratelimit-limit-requests",
        remaining_tokens="x-ratelimit-remaining-tokens",
        limit_tokens="x-ratelimit-limit-tokens",
        requests_reset="x-ratelimit-reset-requests",
        tokens_reset="x-ratelimit-reset-tokens",
    )

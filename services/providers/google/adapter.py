"""The Google Gemini adapter on google-genai.

Requests are built with the SDK's own transform and sent through its API
client (`async_request`, and for streams `wire.chunks` on the client's own
request and SSE decoding: auth, headers, timeout, APIError raising); the answers are read as decoded JSON through
`wire.Fields` instead of the SDK's per-chunk pydantic models (wire.py).

One `genai.Client` per process, created at start and kept for the process
life (a Client closes its HTTP client when garbage-collected). The adapter
owns the httpx2.AsyncClient it hands to the SDK: that pins the SDK to httpx2
(with aiohttp installed the SDK would switch to aiohttp, which silently
retries a dropped connection after 1-10 s) and lets the adapter size the
connection pool to its in-flight limit.

No retries anywhere: the SDK gets no HttpRetryOptions (tenacity stops after
one attempt), automatic function calling and automatic stream continuation
are off (both send follow-up requests), and httpx2's transport keeps its
default of no connect retries. No custom transport is passed, so the standard
HTTPS_PROXY / NO_PROXY variables still apply for enterprise proxies.

Each call's timeout is the gRPC time left, given to the SDK per call through
`config.http_options.timeout`, which google-genai takes in MILLISECONDS.

Headroom: Gemini sends no rate-limit headers, so `headroom` stays empty in
every response and final; its 429 retry delay comes from the error body.

Mapping details and the `extensions["google"]` keys: see mapping.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import httpx2
import structlog
from google import genai
from google.genai import types

from llmmesh.v1 import chat_pb2, embeddings_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import (
    REASON_STREAM_TRUNCATED,
    REASON_UPSTREAM_TIMEOUT,
    REASON_UPSTREAM_UNAVAILABLE,
    MeshError,
)
from services.common.redaction import Redactor
from services.providers.base import ProviderAdapter
from services.providers.google import wire
from services.providers.google.error_mapping import (
    UPSTREAM_ERRORS,
    escaped_sdk_error,
    map_sdk_error,
    prompt_blocked,
)
from services.providers.google.mapping import (
    GeminiRequest,
    Request,
    ResponseReader,
    assistant_turn,
    build_request,
)
from services.providers.upstream_errors import SHAPE_ERRORS, reading_body

log = structlog.get_logger(__name__)
_END = object()  # marks the end of the SDK stream in the pump queue

#: Served when LLMMESH_MODELS is empty, with their input context windows.
DEFAULT_MODELS: dict[str, int] = {
    "gemini-2.5-pro": 1_048_576,
    "gemini-2.5-flash": 1_048_576,
    "gemini-2.5-flash-lite": 1_048_576,
    "gemini-embedding-001": 2_048,
}


class GoogleAdapter(ProviderAdapter):
    """ProviderAdapter for the Gemini Developer API."""

    provider = "google"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        api_version: str,
        models: Sequence[str] = (),
        instance: str = "google",
        max_connections: int = 256,
    ) -> None:
        self._models = list(models) or list(DEFAULT_MODELS)
        self._instance = instance
        self.redactor = Redactor([api_key])
        self._http = httpx2.AsyncClient(
            timeout=None,  # every request carries its own timeout (the gRPC time left)
            follow_redirects=True,  # as the SDK's own client does
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=min(max_connections, 64)),
        )
        self._client = genai.Client(
            vertexai=False,
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url or None, api_version=api_version, httpx_async_client=self._http
            ),
        )
        #: The SDK's API client: auth headers, timeout and APIError raising for wire.request's bodies.
        self._api = self._client._api_client

    def list_models(self) -> list[chat_pb2.ModelInfo]:
        return [
            chat_pb2.ModelInfo(
                name=name,
                provider=self.provider,
                context_window=DEFAULT_MODELS.get(name, 0),
                description="Google Gemini (google-genai)",
                provider_instances=[self._instance],
                available=True,
            )
            for name in self._models
        ]

    async def chat(self, request: pb.ProviderServiceChatRequest, *, timeout: float) -> pb.ProviderServiceChatResponse:
        mapped = build_request(request)
        config = _with_timeout(mapped, timeout)
        try:
            async with asyncio.timeout(timeout):
                path, body, http_options = wire.request(
                    self._api, model=mapped.model, contents=mapped.contents, config=config, stream=False
                )
                raw = await self._api.async_request("post", path, body, http_options)
        except TimeoutError:
            raise _deadline_spent() from None
        except UPSTREAM_ERRORS as error:
            raise self._mapped(error, request.model) from None
        except SHAPE_ERRORS as error:
            mapped_error = escaped_sdk_error(error)
            if mapped_error is error:
                raise
            raise mapped_error from None
        reader = ResponseReader(turn=assistant_turn(request))
        with reading_body(self.provider):
            reader.feed(wire.answer(raw.body))
            self._check_answered(reader)
            return pb.ProviderServiceChatResponse(
                message=reader.message(),
                finish_reason=reader.unified_finish_reason(),
                usage=reader.unified_usage(),
                response_model=reader.model_version or request.model,
                response_id=reader.response_id,
                extensions=reader.response_extensions(),
            )

    async def stream_chat(
        self, request: pb.ProviderServiceStreamChatRequest, *, timeout: float
    ) -> AsyncIterator[pb.ProviderServiceStreamChatResponse]:
        mapped = build_request(request)
        config = _with_timeout(mapped, timeout)
        reader = ResponseReader(turn=assistant_turn(request))
        async for chunk in self._chunks(mapped, config, request):
            with reading_body(self.provider):
                deltas = reader.feed(chunk)
            for delta in deltas:
                yield pb.ProviderServiceStreamChatResponse(delta=delta)
        self._check_answered(reader)
        if reader.finish_reason is None:
            # The SDK ends such a stream as if it were complete (docs/sdk-notes.md).
            raise MeshError(
                grpc.StatusCode.UNAVAILABLE,
                "google: upstream stream ended without a finish reason; the answer is truncated",
                reason=REASON_STREAM_TRUNCATED,
            )
        if reader.usage is None:
            # Gemini's last chunk carries finishReason and usageMetadata together; usage
            # missing means a broken stream, and cost and quotas would count 0.
            raise MeshError(
                grpc.StatusCode.UNAVAILABLE,
                "google: upstream stream ended without usage metadata; the answer is incomplete",
                reason=REASON_STREAM_TRUNCATED,
            )
        with reading_body(self.provider):
            final = pb.ProviderStreamFinal(
                finish_reason=reader.unified_finish_reason(),
                usage=reader.unified_usage(),
                response_model=reader.model_version or request.model,
                response_id=reader.response_id,
                extensions=reader.response_extensions(),
            )
        yield pb.ProviderServiceStreamChatResponse(final=final)

    async def _chunks(
        self, mapped: GeminiRequest, config: types.GenerateContentConfig, request: Request
    ) -> AsyncIterator[Any]:
        """The stream's decoded chunks (`wire.chunks`), read by a pump task that dies with the gRPC handler task.

        grpc.aio cancels the handler task while this generator may sit at a
        `yield`; the SDK's nested generators would then close only when the
        garbage collector gets to them, leaving the upstream request open.
        Reading in a separate task and cancelling it when the handler task
        ends puts the CancelledError right at the SDK's socket read, so the
        HTTP request is aborted at once.
        """
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        pump = asyncio.create_task(self._pump(mapped, config, request.model, queue))
        handler = asyncio.current_task()

        def _stop(_: object) -> None:
            pump.cancel()

        if handler is not None:
            handler.add_done_callback(_stop)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            pump.cancel()
            if handler is not None:
                handler.remove_done_callback(_stop)

    async def _pump(
        self, mapped: GeminiRequest, config: types.GenerateContentConfig, model: str, queue: asyncio.Queue[object]
    ) -> None:
        stream: AsyncIterator[Any] | None = None
        try:
            path, body, http_options = wire.request(
                self._api, model=mapped.model, contents=mapped.contents, config=config, stream=True
            )
            stream = wire.chunks(self._api, path, body, http_options)
            async for chunk in stream:
                await queue.put(chunk)
            await queue.put(_END)
        except UPSTREAM_ERRORS as error:
            await queue.put(self._mapped(error, model))
        except Exception as error:  # noqa: BLE001 - not swallowed: the consumer re-raises it
            await queue.put(escaped_sdk_error(error))
        finally:
            if stream is not None:
                await stream.aclose()  # type: ignore[attr-defined]

    def _mapped(self, error: Exception, model: str) -> MeshError:
        mapped = map_sdk_error(error, served_models=self._models, model=model)
        log.info("upstream call failed", code=mapped.code.name, reason=mapped.reason, error_type=type(error).__name__)
        return mapped

    @staticmethod
    def _check_answered(reader: ResponseReader) -> None:
        if reader.saw_candidate:
            return
        if reader.block_reason:
            raise prompt_blocked(reader.block_reason, reader.block_message)
        raise MeshError(
            grpc.StatusCode.UNAVAILABLE,
            "google: upstream returned no candidate and no block reason",
            reason=REASON_UPSTREAM_UNAVAILABLE,
        )

    async def embed(
        self, request: pb.ProviderServiceEmbedRequest, *, timeout: float
    ) -> pb.ProviderServiceEmbedResponse:
        config = types.EmbedContentConfig(
            output_dimensionality=request.dimensions if request.HasField("dimensions") else None,
            http_options=types.HttpOptions(timeout=_milliseconds(timeout)),
        )
        try:
            async with asyncio.timeout(timeout):
                # One batchEmbedContents request for every input.
                response = await self._client.aio.models.embed_content(
                    model=request.model, contents=list(request.inputs), config=config
                )
        except TimeoutError:
            raise _deadline_spent() from None
        except UPSTREAM_ERRORS as error:
            raise self._mapped(error, request.model) from None
        except SHAPE_ERRORS as error:
            mapped_error = escaped_sdk_error(error)
            if mapped_error is error:
                raise
            raise mapped_error from None
        with reading_body(self.provider):
            return _embed_response(response, request.model)

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()
        await self._http.aclose()


def _with_timeout(mapped: GeminiRequest, timeout: float) -> types.GenerateContentConfig:
    """The request config with this call's timeout, in milliseconds as google-genai wants."""
    return mapped.config.model_copy(update={"http_options": types.HttpOptions(timeout=_milliseconds(timeout))})


def _milliseconds(timeout: float) -> int:
    """The SDK's per-call timeout, which google-genai takes in milliseconds."""
    if timeout <= 0:
        raise _deadline_spent()
    # Round up: a 0 ms timeout would mean "no timeout" to the SDK.
    return max(1, math.ceil(timeout * 1000))


def _embed_response(response: types.EmbedContentResponse, model: str) -> pb.ProviderServiceEmbedResponse:
    # Gemini answers in request order without indexes; the servicer checks the count and lengths.
    vectors = [list(embedding.values or []) for embedding in response.embeddings or []]
    usage = response.usage_metadata.prompt_token_count if response.usage_metadata else None
    return pb.ProviderServiceEmbedResponse(
        embeddings=[embeddings_pb2.Embedding(index=i, values=values) for i, values in enumerate(vectors)],
        usage=chat_pb2.Usage(input_tokens=usage or 0),
        response_model=model,
    )


def _deadline_spent() -> MeshError:
    return MeshError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "google: the call's deadline was spent before upstream answered",
        reason=REASON_UPSTREAM_TIMEOUT,
    )

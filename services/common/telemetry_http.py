"""The vendor SDKs' HTTP calls as CLIENT spans.

The SDKs here send through `httpx2`, which opentelemetry-instrumentation-httpx
does not know (it patches `httpx`). openai and google-genai have no spans of
their own; anthropic has (`anthropic.messages.create`, metadata only), and
the HTTP span then nests under it. So the default transport every
`httpx2.AsyncClient` uses is wrapped once per process: a span per request,
named `{method} {path}`, ended when the response body is closed (a stream's
span covers the whole stream), with W3C trace context in the request headers
for upstreams that trace (vLLM, gateways). The query string is never
recorded: some APIs accept keys there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from services.common import telemetry_names as names

_PATCHED_FLAG = "_llmmesh_traced"


class _SpanEndingStream(httpx2.AsyncByteStream):
    """The response body; its span ends when the body is closed or fully read."""

    def __init__(self, wrapped: httpx2.AsyncByteStream, span: trace.Span) -> None:
        self._wrapped = wrapped
        self._span = span

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._wrapped:
                yield chunk
        except Exception as error:
            self._span.set_attribute(names.ERROR_TYPE, type(error).__qualname__)
            self._span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            raise

    async def aclose(self) -> None:
        try:
            await self._wrapped.aclose()
        finally:
            self._span.end()


def instrument_httpx2(tracer: Tracer) -> None:
    """Wraps httpx2's default async transport; idempotent."""
    transport = httpx2.AsyncHTTPTransport
    if getattr(transport.handle_async_request, _PATCHED_FLAG, False):
        return
    original = transport.handle_async_request

    async def handle_async_request(self: httpx2.AsyncHTTPTransport, request: httpx2.Request) -> httpx2.Response:
        if not trace.get_current_span().get_span_context().is_valid:
            return await original(self, request)  # no trace to join (e.g. a health probe)
        url = request.url
        span = tracer.start_span(
            f"{request.method} {url.path}",
            kind=SpanKind.CLIENT,
            attributes={
                names.HTTP_REQUEST_METHOD: request.method,
                names.SERVER_ADDRESS: url.host,
                names.SERVER_PORT: url.port or (443 if url.scheme == "https" else 80),
                names.URL_FULL: str(url.copy_with(query=None)),
            },
        )
        propagate.inject(request.headers, context=trace.set_span_in_context(span))
        try:
            response = await original(self, request)
        except BaseException as error:
            span.set_attribute(names.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            span.end()
            raise
        span.set_attribute(names.HTTP_RESPONSE_STATUS_CODE, response.status_code)
        if response.status_code >= 400:
            span.set_attribute(names.ERROR_TYPE, str(response.status_code))
            span.set_status(Status(StatusCode.ERROR))
        response.stream = _SpanEndingStream(response.stream, span)  # type: ignore[arg-type]
        return response

    setattr(handle_async_request, _PATCHED_FLAG, True)
    transport.handle_async_request = handle_async_request  # type: ignore[method-assign]

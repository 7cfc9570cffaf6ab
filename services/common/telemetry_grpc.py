"""W3C trace context over gRPC: a server interceptor that opens one SERVER span
per call, and `trace_metadata`, which services.common.channels puts on the
metadata of every outgoing call.

Our own small interceptors rather than opentelemetry-instrumentation-grpc:
the server span is the one the servicer renames to its GenAI name
(`chat {model}`, `invoke_agent {profile}`), so each hop costs one span, not
an RPC span plus a GenAI span under it; the client side only injects,
because the calling code already holds the span that describes the call
(the router's attempt, the agent's step, the tool execution); and both work
the same on grpc.aio servers and channels with no monkeypatching.

Health and reflection calls are not traced: probes every few seconds would
bury the traces people look for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from services.common import telemetry_names as names
from services.common.telemetry import telemetry

_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
_TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage"})
# Codes that are the server's fault (RPC semantic conventions); the rest are the caller's.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _extract(metadata: Sequence[tuple[str, Any]] | None) -> otel_context.Context | None:
    """The caller's context, or None (cheap) when it sent none."""
    if not metadata:
        return None
    carrier = {key: value for key, value in metadata if key in _TRACE_KEYS and isinstance(value, str)}
    return propagate.extract(carrier) if carrier else None


class ServerTracingInterceptor(grpc.aio.ServerInterceptor):
    """One SERVER span per call, child of the caller's trace context."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self._tracer = tracer
        # Per-method names and attributes, built once rather than per call.
        self._methods: dict[str, tuple[str, dict[str, str]]] = {}

    @property
    def tracer(self) -> Tracer:
        return self._tracer or telemetry().tracer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(_UNTRACED_PREFIXES):
            return handler
        if handler.request_streaming:
            return handler  # llmmesh has no client-streaming RPCs; pass them through untraced
        name, attributes = self._describe(method)
        if handler.response_streaming:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, name, attributes))  # type: ignore[attr-defined]
        return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, name, attributes))  # type: ignore[attr-defined]

    def _describe(self, method: str) -> tuple[str, dict[str, str]]:
        described = self._methods.get(method)
        if described is None:
            service, _, rpc = method.lstrip("/").rpartition("/")
            attributes = {names.RPC_SYSTEM: "grpc", names.RPC_SERVICE: service, names.RPC_METHOD: rpc}
            described = self._methods[method] = (method.lstrip("/"), attributes)
        return described

    def _wrap_unary(self, behavior: Any, name: str, attributes: dict[str, str]) -> Any:
        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
            parent = _extract(context.invocation_metadata())
            with self.tracer.start_as_current_span(
                name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await behavior(request, context)
                finally:
                    _record_status(span, context)

        return traced

    def _wrap_stream(self, behavior: Any, name: str, attributes: dict[str, str]) -> Any:
        async def traced(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            parent = _extract(context.invocation_metadata())
            span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
            # The context with the span current, built once: attaching it per message is all a message costs.
            current = trace.set_span_in_context(span)
            try:
                # The span is current only while the handler runs, never across our own yields.
                events = behavior(request, context)
                while True:
                    token = otel_context.attach(current)
                    try:
                        event = await events.__anext__()
                    except StopAsyncIteration:
                        return
                    finally:
                        otel_context.detach(token)
                    yield event
            finally:
                _record_status(span, context)
                span.end()

        return traced


def _record_status(span: trace.Span, context: grpc.aio.ServicerContext) -> None:
    if not span.is_recording():
        return
    try:
        code = context.code() or grpc.StatusCode.OK
    except Exception:  # noqa: BLE001 - an older grpc without code(): treat as OK
        code = grpc.StatusCode.OK
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    span.set_attribute(names.RPC_GRPC_STATUS_CODE, code.value[0])
    if code in _SERVER_ERRORS:
        span.set_attribute(names.ERROR_TYPE, code.name)
        span.set_status(Status(StatusCode.ERROR, code.name))


def trace_metadata(metadata: Sequence[tuple[str, Any]] | None = None) -> grpc.aio.Metadata | None:
    """`metadata` with the current trace context in place of any the caller put there (None: nothing to send)."""
    carrier = _current_carrier()
    if not carrier:
        return metadata if metadata is None or isinstance(metadata, grpc.aio.Metadata) else grpc.aio.Metadata(*metadata)
    merged = grpc.aio.Metadata()
    for key, value in metadata or ():
        if key not in _TRACE_KEYS:
            merged.add(key, value)
    for key, value in carrier.items():
        merged.add(key, value)
    return merged


def _w3c_only() -> bool:
    """True while the global propagators are W3C trace context (and baggage), the default."""
    propagator = propagate.get_global_textmap()
    if propagator is not _W3C_CHECKED[0]:
        fields = propagator.fields
        _W3C_CHECKED[:] = [propagator, fields <= {"traceparent", "tracestate", "baggage"}]
    return bool(_W3C_CHECKED[1])


# (the propagator last checked, whether it is W3C-only): set_global_textmap is rare.
_W3C_CHECKED: list[Any] = [None, False]


def _current_carrier() -> dict[str, str]:
    """The W3C headers of the current context.

    Fast path for the default propagators (tracecontext, baggage) with no
    baggage: format `traceparent` directly, which is a fraction of the cost
    of the composite propagator on the router's hot path. Anything else goes
    through the configured propagators.
    """
    if _w3c_only() and not baggage.get_all():
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return {}
        carrier = {
            "traceparent": f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"
        }
        if span_context.trace_state:
            carrier["tracestate"] = span_context.trace_state.to_header()
        return carrier
    carrier = {}
    propagate.inject(carrier)
    return carrier

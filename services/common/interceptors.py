"""Server interceptor plumbing: run a check before any handler, and refuse undecodable requests.

grpc.aio interceptors only see the method name and metadata; checks that
need the call's context (the peer's certificate, aborting with rich
details) run inside a wrapped handler instead. `guard_handler` wraps any of
the four handler kinds with such a check.

`DecodeGuardInterceptor` answers INVALID_ARGUMENT for bytes that are not the
method's request message: grpc would otherwise answer UNKNOWN with the
protobuf exception, which callers cannot act on.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from services.common.errors import REASON_INVALID_REQUEST, MeshError
from services.common.json_depth import MAX_JSON_DEPTH
from services.common.undecodable import locate

#: Runs before the handler; raises MeshError to refuse the call.
Gate = Callable[[grpc.aio.ServicerContext], Awaitable[None]]

# Health and reflection stay open: probes and grpcurl carry no credentials.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def is_open_method(method: str) -> bool:
    return method.startswith(OPEN_METHOD_PREFIXES)


def guard_handler(handler: grpc.RpcMethodHandler | None, gate: Gate) -> grpc.RpcMethodHandler | None:
    """The same handler, with `gate` run first; a MeshError from it aborts the call with its status."""
    if handler is None:
        return None

    async def enter(context: grpc.aio.ServicerContext) -> None:
        try:
            await gate(context)
        except MeshError as error:
            await context.abort_with_status(error.to_status())

    return _rewrap(handler, enter, handler.request_deserializer)


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    """Turns a request that does not decode into INVALID_ARGUMENT instead of UNKNOWN."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        # Streamed requests (reflection) are decoded message by message by their own code.
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        deserialize = handler.request_deserializer
        method = handler_call_details.method

        message_class = getattr(deserialize, "__self__", None)

        def tolerant(data: bytes) -> Any:
            try:
                return deserialize(data)
            except (DecodeError, ValueError, TypeError) as error:
                field = None
                if isinstance(message_class, type) and issubclass(message_class, Message):
                    with contextlib.suppress(Exception):  # best effort: never worse than `request`
                        field = locate(message_class, data)
                return _Undecodable(type(error).__name__, field, "MaxDepth" in str(error))

        async def refuse_undecodable(context: grpc.aio.ServicerContext, request: Any) -> None:
            if isinstance(request, _Undecodable):
                await context.abort_with_status(_undecodable_error(method, request).to_status())

        return _rewrap(handler, None, tolerant, request_check=refuse_undecodable)


class _Undecodable:
    __slots__ = ("field", "too_deep", "why")

    def __init__(self, why: str, field: str | None = None, too_deep: bool = False) -> None:
        self.why = why
        self.field = field
        self.too_deep = too_deep


def _undecodable_error(method: str, request: _Undecodable) -> MeshError:
    if request.field is None:
        message = (
            f"request: the bytes sent to {method} are not a valid request message ({request.why}); "
            "send the message type the .proto names for this method"
        )
    elif request.too_deep:
        message = (
            f"{request.field}: nests deeper than protobuf decodes (100 message levels); JSON in schemas and "
            f"extensions may nest at most {MAX_JSON_DEPTH} levels"
        )
    else:
        message = f"{request.field}: is not valid UTF-8 text (a lone surrogate?); send Unicode text"
    return MeshError(
        grpc.StatusCode.INVALID_ARGUMENT, message, reason=REASON_INVALID_REQUEST, field=request.field or "request"
    )


def _rewrap(
    handler: grpc.RpcMethodHandler,
    enter: Callable[[grpc.aio.ServicerContext], Awaitable[None]] | None,
    deserializer: Callable[[bytes], Any] | None,
    *,
    request_check: Callable[[grpc.aio.ServicerContext, Any], Awaitable[None]] | None = None,
) -> grpc.RpcMethodHandler:
    async def before(request: Any, context: grpc.aio.ServicerContext) -> None:
        if enter is not None:
            await enter(context)
        if request_check is not None:
            await request_check(context, request)

    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def guarded_unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(request, context)
            return await unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded_unary_unary, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream
        if not inspect.isasyncgenfunction(unary_stream):
            # A coroutine that writes with context.write (the health Watch) must stay one:
            # grpc refuses a handler that both yields and writes.
            async def guarded_writer(request: Any, context: grpc.aio.ServicerContext) -> None:
                await before(request, context)
                await unary_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                guarded_writer, request_deserializer=deserializer, response_serializer=serializer
            )

        async def guarded_unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await before(request, context)
            async for item in unary_stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            guarded_unary_stream, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def guarded_stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            if enter is not None:
                await enter(context)
            return await stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            guarded_stream_unary, request_deserializer=deserializer, response_serializer=serializer
        )
    stream_stream = handler.stream_stream
    if not inspect.isasyncgenfunction(stream_stream):

        async def guarded_stream_writer(requests: Any, context: grpc.aio.ServicerContext) -> None:
            if enter is not None:
                await enter(context)
            await stream_stream(requests, context)

        return grpc.stream_stream_rpc_method_handler(
            guarded_stream_writer, request_deserializer=deserializer, response_serializer=serializer
        )

    async def guarded_stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if enter is not None:
            await enter(context)
        async for item in stream_stream(requests, context):
            yield item

    return grpc.stream_stream_rpc_method_handler(
        guarded_stream_stream, request_deserializer=deserializer, response_serializer=serializer
    )

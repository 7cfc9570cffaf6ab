"""The bare pass-through proxy: the limit of one Python gRPC hop.

A grpc.aio server with one generic handler that forwards every call's bytes
to one upstream over one channel and does nothing else: no deserialising,
no validation, no routing. The router does all of that on top of the same
hop, so router ÷ proxy is what the router's own work costs.

Run as a process (`python -m tests.bench.proxy`) with LLMMESH_BENCH_UPSTREAM
set; it binds LLMMESH_HOST:LLMMESH_PORT (port 0: a free one) and writes the
bound port to LLMMESH_READY_FILE, like every llmmesh service.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool

import llmmesh.v1.provider_service_pb2
import llmmesh.v1.router_service_pb2  # noqa: F401 - registers the services whose streaming shape we look up
from services.common.channels import CHANNEL_OPTIONS
from services.common.server import SERVER_OPTIONS

Handler = grpc.RpcMethodHandler


class PassThrough(grpc.GenericRpcHandler):
    """Forwards each call as bytes to `channel`; the deadline travels on, status comes back."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = self._build(method)
        return handler

    def _build(self, method: str) -> Handler:
        if _server_streaming(method):
            upstream_stream = self._channel.unary_stream(method)

            async def forward_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
                call = upstream_stream(request, timeout=context.time_remaining())
                try:
                    async for chunk in call:
                        yield chunk
                except grpc.aio.AioRpcError as error:
                    await _abort_like(context, error)
                finally:
                    call.cancel()

            return grpc.unary_stream_rpc_method_handler(forward_stream)

        upstream_unary = self._channel.unary_unary(method)

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await upstream_unary(request, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as error:
                await _abort_like(context, error)
                raise  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(forward)


async def _abort_like(context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError) -> None:
    """The upstream's status, details and trailers (rich error details included)."""
    await context.abort(error.code(), error.details() or "", error.trailing_metadata() or ())


def _server_streaming(method: str) -> bool:
    """True for server-streaming methods of the llmmesh services, from their descriptors."""
    service_name, _, method_name = method.lstrip("/").partition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return False
    found = service.methods_by_name.get(method_name)
    return bool(found is not None and found.server_streaming)


async def serve(upstream: str, host: str, port: int, ready_file: str) -> None:
    channel = grpc.aio.insecure_channel(upstream, options=CHANNEL_OPTIONS)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((PassThrough(channel),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    if ready_file:
        _write_ready(Path(ready_file), bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)
    await channel.close()


def _write_ready(path: Path, port: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    temporary.replace(path)


def main() -> None:
    import uvloop

    upstream = os.environ["LLMMESH_BENCH_UPSTREAM"]
    host = os.environ.get("LLMMESH_HOST", "127.0.0.1")
    port = int(os.environ.get("LLMMESH_PORT", "0"))
    uvloop.run(serve(upstream, host, port, os.environ.get("LLMMESH_READY_FILE", "")))


if __name__ == "__main__":
    main()

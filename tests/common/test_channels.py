"""Fixed metadata and trace context ride every call type of an aio_channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from services.common.channels import aio_channel, check_single_call_type, metadata_interceptors

TOKEN = ("llmmesh-internal-token", "s3cret")
_METHODS = {
    "UnaryUnary": "unary_unary",
    "UnaryStream": "unary_stream",
    "StreamUnary": "stream_unary",
    "StreamStream": "stream_stream",
}


class _Recorder(grpc.GenericRpcHandler):
    """Answers every call type with the value of the token header it saw (b"" when absent)."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        kind = _METHODS.get(handler_call_details.method.rsplit("/", 1)[-1])
        if kind is None:
            return None
        seen = dict(handler_call_details.invocation_metadata).get(TOKEN[0], "").encode()

        async def unary(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
            return seen

        async def stream(_request: bytes, _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            yield seen

        async def from_stream(requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext) -> bytes:
            async for _ in requests:
                pass
            return seen

        async def stream_to_stream(
            requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            async for _ in requests:
                pass
            yield seen

        factory = {
            "unary_unary": (grpc.unary_unary_rpc_method_handler, unary),
            "unary_stream": (grpc.unary_stream_rpc_method_handler, stream),
            "stream_unary": (grpc.stream_unary_rpc_method_handler, from_stream),
            "stream_stream": (grpc.stream_stream_rpc_method_handler, stream_to_stream),
        }[kind]
        return factory[0](factory[1])


@pytest.fixture
async def server_address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Recorder(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def _requests() -> Iterator[bytes]:
    yield b"x"


async def _seen(channel: grpc.aio.Channel, kind: str) -> bytes:
    path = f"/test.Recorder/{next(name for name, value in _METHODS.items() if value == kind)}"
    identity = {"request_serializer": None, "response_deserializer": None}
    if kind == "unary_unary":
        return await channel.unary_unary(path, **identity)(b"x", timeout=5)  # type: ignore[no-any-return]
    if kind == "unary_stream":
        return await _only(channel.unary_stream(path, **identity)(b"x", timeout=5))
    if kind == "stream_unary":
        return await channel.stream_unary(path, **identity)(_requests(), timeout=5)  # type: ignore[no-any-return]
    return await _only(channel.stream_stream(path, **identity)(_requests(), timeout=5))


async def _only(call: AsyncIterator[bytes]) -> bytes:
    (item,) = [item async for item in call]
    return item


class TestFixedMetadata:
    @pytest.mark.parametrize("kind", list(_METHODS.values()))
    async def test_token_on_every_call_type(self, server_address: str, kind: str) -> None:
        """The channel's fixed metadata reaches the server on unary and each streaming call type."""
        async with aio_channel(server_address, metadata=(TOKEN,)) as channel:
            assert await _seen(channel, kind) == TOKEN[1].encode()

    async def test_fixed_value_replaces_the_callers(self, server_address: str) -> None:
        """A caller cannot override the fixed token by sending the same key."""
        async with aio_channel(server_address, metadata=(TOKEN,)) as channel:
            call = channel.unary_unary("/test.Recorder/UnaryUnary")
            assert await call(b"x", timeout=5, metadata=((TOKEN[0], "forged"),)) == TOKEN[1].encode()

    async def test_no_metadata_means_none_added(self, server_address: str) -> None:
        """Without fixed metadata nothing is invented."""
        async with aio_channel(server_address) as channel:
            assert await _seen(channel, "unary_stream") == b""


class TestOneObjectPerCallType:
    def test_factory_covers_all_four_types(self) -> None:
        """metadata_interceptors returns one single-interface interceptor per call type."""
        interceptors = metadata_interceptors(lambda metadata: metadata)
        kinds = {
            kind
            for interceptor in interceptors
            for kind in (
                grpc.aio.UnaryUnaryClientInterceptor,
                grpc.aio.UnaryStreamClientInterceptor,
                grpc.aio.StreamUnaryClientInterceptor,
                grpc.aio.StreamStreamClientInterceptor,
            )
            if isinstance(interceptor, kind)
        }
        assert len(interceptors) == len(kinds) == 4

    def test_dual_interface_interceptor_is_refused(self) -> None:
        """An object implementing two call types (grpc.aio would skip the second) raises at once, naming both."""

        class Both(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
            async def intercept_unary_unary(self, *args: object) -> None: ...

            async def intercept_unary_stream(self, *args: object) -> None: ...

        with pytest.raises(TypeError, match="UnaryStreamClientInterceptor"):
            check_single_call_type(Both())

"""The Python client internal services import to call the mesh.

    async with MeshClient("llmmesh-router:50051") as mesh:
        answer = await mesh.chat("gpt-4o-mini", "Summarise this ticket: ...")
        print(text_of(answer.message), answer.model, answer.attempts)

One channel per client (keepalive, message limits), a deadline on every
call (the client default unless given), and typed helpers; errors arrive as
`MeshError` with the router's code, reason and retry delay.

Credentials: `api_key` (else $LLMMESH_API_KEY) goes out as
`authorization: Bearer <key>`; TLS follows LLMMESH_TLS_CA_FILE (and
LLMMESH_TLS_CERT_FILE / _KEY_FILE for mTLS) unless `security` is given.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import TypeAlias

import grpc

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.channels import aio_channel
from services.common.errors import MeshError
from services.common.tls import ChannelSecurity, TLSSettings, channel_security

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_SECONDS = 60.0

Conversation: TypeAlias = str | chat_pb2.Message | Sequence[chat_pb2.Message]


def message(role: chat_pb2.Role.ValueType, text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, content=[chat_pb2.ContentPart(text=text)])


def user(text: str) -> chat_pb2.Message:
    return message(chat_pb2.ROLE_USER, text)


def system(text: str) -> chat_pb2.Message:
    return message(chat_pb2.ROLE_SYSTEM, text)


def assistant(text: str) -> chat_pb2.Message:
    return message(chat_pb2.ROLE_ASSISTANT, text)


def text_of(answer: chat_pb2.Message) -> str:
    """The text parts of a message, joined."""
    return "".join(part.text for part in answer.content if part.WhichOneof("kind") == "text")


def _messages(conversation: Conversation) -> list[chat_pb2.Message]:
    if isinstance(conversation, str):
        return [user(conversation)]
    if isinstance(conversation, chat_pb2.Message):
        return [conversation]
    return list(conversation)


def bearer_metadata(api_key: str | None = None) -> tuple[tuple[str, str], ...]:
    """`authorization: Bearer <key>` for `api_key`, else $LLMMESH_API_KEY; nothing without a key."""
    key = api_key if api_key is not None else os.environ.get("LLMMESH_API_KEY", "")
    return (("authorization", f"Bearer {key}"),) if key else ()


class MeshClient:
    """An asyncio client for RouterService."""

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        metadata: Iterable[tuple[str, str]] = (),
        api_key: str | None = None,
        security: ChannelSecurity | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds above 0, not {timeout!r}")
        self.target = target or os.environ.get("LLMMESH_ROUTER_ADDRESS", DEFAULT_TARGET)
        if not self.target.strip():
            raise ValueError("LLMMESH_ROUTER_ADDRESS is empty: set it to the router's host:port, or unset it")
        self.timeout = timeout
        self._metadata = (*bearer_metadata(api_key), *metadata)
        self._channel = aio_channel(self.target, security if security is not None else channel_security(TLSSettings()))
        self.stub = router_service_pb2_grpc.RouterServiceStub(self._channel)

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def _request(
        self,
        cls: type[rpb.ChatRequest] | type[rpb.StreamChatRequest],
        model: str,
        conversation: Conversation,
        *,
        tools: Sequence[chat_pb2.ToolDefinition] = (),
        settings: chat_pb2.GenerationSettings | None = None,
        routing: rpb.RoutingPolicy | None = None,
    ) -> rpb.ChatRequest | rpb.StreamChatRequest:
        return cls(model=model, messages=_messages(conversation), tools=tools, settings=settings, routing=routing)

    async def chat(
        self,
        model: str,
        conversation: Conversation,
        *,
        tools: Sequence[chat_pb2.ToolDefinition] = (),
        settings: chat_pb2.GenerationSettings | None = None,
        routing: rpb.RoutingPolicy | None = None,
        timeout: float | None = None,
    ) -> rpb.ChatResponse:
        """One complete answer; raises MeshError."""
        request = self._request(rpb.ChatRequest, model, conversation, tools=tools, settings=settings, routing=routing)
        try:
            return await self.stub.Chat(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise MeshError.from_rpc_error(error) from None

    async def stream_chat(
        self,
        model: str,
        conversation: Conversation,
        *,
        tools: Sequence[chat_pb2.ToolDefinition] = (),
        settings: chat_pb2.GenerationSettings | None = None,
        routing: rpb.RoutingPolicy | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[rpb.StreamChatResponse]:
        """Deltas then the final message; raises MeshError, also when the stream ends without a final."""
        request = self._request(
            rpb.StreamChatRequest, model, conversation, tools=tools, settings=settings, routing=routing
        )
        call = self.stub.StreamChat(request, timeout=timeout or self.timeout, metadata=self._metadata)
        finished = False
        try:
            async for event in call:
                finished = event.HasField("final")
                yield event
        except grpc.aio.AioRpcError as error:
            raise MeshError.from_rpc_error(error) from None
        finally:
            call.cancel()
        if not finished:
            raise MeshError(grpc.StatusCode.UNAVAILABLE, "stream ended without a final message")

    async def embed(
        self,
        model: str,
        inputs: Sequence[str],
        *,
        dimensions: int | None = None,
        routing: rpb.RoutingPolicy | None = None,
        timeout: float | None = None,
    ) -> rpb.EmbedResponse:
        """One vector per input, in order; raises MeshError."""
        request = rpb.EmbedRequest(model=model, inputs=inputs, dimensions=dimensions, routing=routing)
        try:
            return await self.stub.Embed(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise MeshError.from_rpc_error(error) from None

    async def list_models(self, *, timeout: float | None = None) -> list[chat_pb2.ModelInfo]:
        try:
            response = await self.stub.ListModels(
                rpb.ListModelsRequest(), timeout=timeout or self.timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise MeshError.from_rpc_error(error) from None
        return list(response.models)

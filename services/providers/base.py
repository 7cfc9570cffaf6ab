"""The one small interface a provider adapter implements.

An adapter maps ProviderService requests to its vendor SDK and back. It
raises `MeshError` (services.common.errors) for every upstream failure,
mapped per docs/errors.md, and sets `redactor` to know its provider key.
Validation, the in-flight limit, deadlines, redaction of every error that
leaves the adapter and the stream-must-end-with-final rule live in
`ProviderServicer`, not here.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import ClassVar

import grpc

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import REASON_EMBEDDINGS_UNSUPPORTED, MeshError
from services.common.redaction import Redactor


class ProviderAdapter(abc.ABC):
    """One provider kind (openai, anthropic, google, mock)."""

    #: Provider kind; also the key of this provider in `extensions` fields.
    provider: ClassVar[str]
    #: Applied by ProviderServicer to every error leaving the adapter; SDK adapters
    #: replace it with one that knows their key (`Redactor([api_key])`).
    redactor: Redactor = Redactor()

    @abc.abstractmethod
    async def chat(self, request: pb.ProviderServiceChatRequest, *, timeout: float) -> pb.ProviderServiceChatResponse:
        """One complete answer; `timeout` is the caller's time left, in seconds."""

    @abc.abstractmethod
    def stream_chat(
        self, request: pb.ProviderServiceStreamChatRequest, *, timeout: float
    ) -> AsyncIterator[pb.ProviderServiceStreamChatResponse]:
        """Deltas, then exactly one final message. Ending without it is a failure."""

    @abc.abstractmethod
    def list_models(self) -> list[chat_pb2.ModelInfo]:
        """The models this adapter instance serves."""

    async def embed(
        self, request: pb.ProviderServiceEmbedRequest, *, timeout: float
    ) -> pb.ProviderServiceEmbedResponse:
        """Vectors for `request.inputs`, in order; providers without embeddings keep this default."""
        raise MeshError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{self.provider} offers no embeddings; route embedding models to an openai, google or mock provider",
            reason=REASON_EMBEDDINGS_UNSUPPORTED,
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters keep the default
        """Releases the SDK client at shutdown."""

"""Requests and answers keep one shape across unary, stream, router and provider messages, so they cannot drift."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor

from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb


def _fields(descriptor: Descriptor, *, leave_out: set[str]) -> dict[str, tuple[int, str, bool]]:
    """Name → (type, message type name, repeated) of every field but those left out."""
    return {
        field.name: (field.type, field.message_type.full_name if field.message_type else "", field.is_repeated)
        for field in descriptor.fields
        if field.name not in leave_out
    }


class TestResponseShapes:
    def test_router_stream_final_has_every_answer_field_of_chat_response(self) -> None:
        """StreamChatFinal carries what ChatResponse says about an answer (extensions, response id included)."""
        unary = _fields(rpb.ChatResponse.DESCRIPTOR, leave_out={"message", "alternatives"})
        final = _fields(rpb.StreamChatFinal.DESCRIPTOR, leave_out={"continued"})
        assert final == unary

    def test_provider_stream_final_has_every_answer_field_of_chat_response(self) -> None:
        """ProviderStreamFinal carries what ProviderServiceChatResponse says about an answer."""
        unary = _fields(ppb.ProviderServiceChatResponse.DESCRIPTOR, leave_out={"message"})
        final = _fields(ppb.ProviderStreamFinal.DESCRIPTOR, leave_out=set())
        assert final == unary


def _numbered(descriptor: Descriptor, *, leave_out: set[str]) -> dict[str, tuple[int, int, str, bool]]:
    """Name → (number, type, message type name, repeated): requests are copied field by field."""
    return {
        name: (descriptor.fields_by_name[name].number, *shape)
        for name, shape in _fields(descriptor, leave_out=leave_out).items()
    }


class TestRequestShapes:
    """Four request messages, one shape: the unary and stream requests of each service, and what the router forwards.

    They stay four messages because each RPC's request type is part of the contract (changing it breaks
    `buf breaking` and every generated client); this keeps them from drifting instead.
    """

    def test_router_stream_request_is_the_chat_request(self) -> None:
        assert _numbered(rpb.StreamChatRequest.DESCRIPTOR, leave_out=set()) == _numbered(
            rpb.ChatRequest.DESCRIPTOR, leave_out=set()
        )

    def test_provider_stream_request_is_the_provider_chat_request(self) -> None:
        assert _numbered(ppb.ProviderServiceStreamChatRequest.DESCRIPTOR, leave_out=set()) == _numbered(
            ppb.ProviderServiceChatRequest.DESCRIPTOR, leave_out=set()
        )

    def test_provider_request_carries_every_field_the_router_forwards(self) -> None:
        """All but the router's own `routing`, and the adapter-only `assistant_prefix`, at the same numbers."""
        router = _numbered(rpb.ChatRequest.DESCRIPTOR, leave_out={"routing"})
        provider = _numbered(ppb.ProviderServiceChatRequest.DESCRIPTOR, leave_out={"assistant_prefix"})
        assert provider == router

"""Unary answers and stream finals have one shape, so the two paths cannot drift."""

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

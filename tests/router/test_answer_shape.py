"""Unary answers and stream finals say the same about an answer (router → mock adapter, real processes)."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


def _mock_options(**options: object) -> struct_pb2.Struct:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": options})
    return extensions


EXTRAS = {"thinking": [{"type": "thinking", "signature": "sig-1"}], "ignored_settings": ["seed"]}


class TestStreamFinalKeepsProviderData:
    async def test_stream_final_carries_extensions_and_response_id(self, router_stub) -> None:
        """A stream's final has the adapter's extensions and upstream response id, as the unary answer has."""
        options = _mock_options(response_extensions=EXTRAS)
        unary = await router_stub.Chat(
            rpb.ChatRequest(model="mock-small", messages=[_user("hi")], extensions=options), timeout=5
        )
        events = [
            event
            async for event in router_stub.StreamChat(
                rpb.StreamChatRequest(model="mock-small", messages=[_user("hi")], extensions=options), timeout=5
            )
        ]
        final = events[-1].final
        assert json_format.MessageToDict(final.extensions) == {"mock": EXTRAS}
        assert json_format.MessageToDict(unary.extensions) == {"mock": EXTRAS}
        assert final.response_id.startswith("mock-")
        assert unary.response_id.startswith("mock-")

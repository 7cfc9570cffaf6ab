"""Reasoning with tools on a stream, in the production shape: the signed thought survives the next turn."""

from __future__ import annotations

import base64
import json

import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.reasoning import ReasoningAssembler
from services.testing.production import ProductionMesh
from tests.production.helpers import MODELS, WEATHER_TOOL, messages, script_thinking_tool_stream, weather_tool

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]
THOUGHT = "The weather needs the tool."
SIGNATURE = b"sig-prod-42"


def _thinking() -> chat_pb2.GenerationSettings:
    return chat_pb2.GenerationSettings(
        reasoning=chat_pb2.ReasoningSettings(budget_tokens=2048, include_thoughts=True), max_output_tokens=4096
    )


def _stream(mesh: ProductionMesh, request: rpb.StreamChatRequest) -> list[rpb.StreamChatResponse]:
    with mesh.channel() as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        return list(stub.StreamChat(request, timeout=30, metadata=mesh.caller("team-b")))


def _turn(events: list[rpb.StreamChatResponse]) -> chat_pb2.Message:
    """The assistant turn a caller assembles from the deltas: reasoning parts, then the calls (extensions left out)."""
    assembler = ReasoningAssembler()
    calls: dict[int, chat_pb2.ToolCall] = {}
    for event in events[:-1]:
        if event.delta.HasField("reasoning"):
            assembler.add(event.delta.reasoning)
        for delta in event.delta.tool_calls:
            call = calls.setdefault(delta.index, chat_pb2.ToolCall(id=delta.id, name=delta.name))
            call.arguments_json += delta.arguments_json_delta
    return chat_pb2.Message(
        role=chat_pb2.ROLE_ASSISTANT,
        content=[chat_pb2.ContentPart(reasoning=part) for part in assembler.parts()],
        tool_calls=[calls[index] for index in sorted(calls)],
    )


@pytest.mark.parametrize("kind", ["anthropic", "google"])
def test_streamed_reasoning_with_a_tool_continues(mesh: ProductionMesh, kind: str) -> None:
    """A thinking stream that calls a tool; the caller sends the assembled turn back with the result and the
    provider receives its own thought, signature intact, in the place it requires."""
    script_thinking_tool_stream(mesh, kind, THOUGHT, SIGNATURE)
    request = rpb.StreamChatRequest(
        model=MODELS[kind], messages=messages("weather in Oslo?"), tools=[weather_tool()], settings=_thinking()
    )
    first = _stream(mesh, request)
    assert first[-1].final.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assistant = _turn(first)
    assert assistant.content[0].reasoning.text == THOUGHT
    [call] = assistant.tool_calls
    assert (call.name, json.loads(call.arguments_json)) == (WEATHER_TOOL, {"city": "Oslo"})
    result = chat_pb2.Message(
        role=chat_pb2.ROLE_TOOL, tool_result=chat_pb2.ToolResult(tool_call_id=call.id, name=WEATHER_TOOL, content="9")
    )
    again = rpb.StreamChatRequest(
        model=MODELS[kind],
        messages=[*messages("weather in Oslo?"), assistant, result],
        tools=[weather_tool()],
        settings=_thinking(),
    )
    second = _stream(mesh, again)
    assert "".join(event.delta.text for event in second[:-1]).strip() == "Sunny."
    if kind == "anthropic":
        blocks = mesh.anthropic.requests[1].body["messages"][1]["content"]
        assert blocks[0] == {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE.decode()}
        assert blocks[1]["type"] == "tool_use"
    else:
        parts = mesh.google.requests[1].body["contents"][1]["parts"]
        assert parts[0] == {"text": THOUGHT, "thought": True}
        assert base64.urlsafe_b64decode(parts[1]["thoughtSignature"]) == SIGNATURE

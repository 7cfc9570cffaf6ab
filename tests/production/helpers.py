"""Requests and upstream scripts for the production-shaped suite (one model per adapter kind)."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.testing import fake_anthropic, fake_google, fake_openai
from services.testing.production import ProductionMesh

# The prod routing's model for each kind (the mock's from ROUTING_ADDITIONS).
MODELS = {"mock": "mock-small", "openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}
SDK_KINDS = ("openai", "anthropic", "google")
WEATHER_TOOL = "get_weather"


def messages(text: str) -> list[chat_pb2.Message]:
    return [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])]


def weather_tool() -> chat_pb2.ToolDefinition:
    parameters = struct_pb2.Struct()
    parameters.update({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    return chat_pb2.ToolDefinition(name=WEATHER_TOOL, description="Weather in a city", parameters=parameters)


def chat(model: str, text: str = "hello", **fields: Any) -> rpb.ChatRequest:
    return rpb.ChatRequest(model=model, messages=messages(text), **fields)


def stream_chat(model: str, text: str = "hello", **fields: Any) -> rpb.StreamChatRequest:
    return rpb.StreamChatRequest(model=model, messages=messages(text), **fields)


def reset_upstreams(mesh: ProductionMesh) -> None:
    """Every fake forgets its script and requests: each case scripts exactly what it expects."""
    mesh.openai.script()
    mesh.anthropic.reset()
    mesh.google.script()


def script_text(mesh: ProductionMesh, kind: str, text: str, *, stream: bool = False, **timing: float) -> None:
    """One answer of `text` from `kind`'s fake (`delay`, `event_delay` slow it down)."""
    words = [word + " " for word in text.split()]
    if kind == "openai":
        reply = (
            fake_openai.Reply.stream(fake_openai.text_stream(words), **timing)
            if stream
            else fake_openai.Reply.json(fake_openai.completion(text), delay=timing.get("delay", 0.0))
        )
        mesh.openai.script(reply)
    elif kind == "anthropic":
        body = fake_anthropic.message(text=text)
        mesh.anthropic.script(
            fake_anthropic.Reply(events=fake_anthropic.stream_events(body, pieces=3), **timing)
            if stream
            else fake_anthropic.json_reply(body, delay=timing.get("delay", 0.0))
        )
    elif kind == "google":
        mesh.google.script(
            fake_google.Reply(events=fake_google.text_stream(words), **timing)
            if stream
            else fake_google.Reply(
                body=fake_google.response([fake_google.text_part(text)], usage_metadata=fake_google.usage(5, 2)),
                delay=timing.get("delay", 0.0),
            )
        )


def script_tool_call(mesh: ProductionMesh, kind: str, name: str, arguments: dict[str, Any]) -> None:
    """One answer from `kind`'s fake that calls tool `name` with `arguments`."""
    if kind == "openai":
        call = fake_openai.tool_call("call_1", name, arguments)
        mesh.openai.script(
            fake_openai.Reply.json(fake_openai.completion(None, tool_calls=[call], finish_reason="tool_calls"))
        )
    elif kind == "anthropic":
        body = fake_anthropic.message(tool_calls=[("toolu_1", name, arguments)], stop_reason="tool_use")
        mesh.anthropic.script(fake_anthropic.json_reply(body))
    elif kind == "google":
        part = fake_google.call_part(name, arguments, call_id="call_1")
        mesh.google.script(fake_google.Reply(body=fake_google.response([part], usage_metadata=fake_google.usage(5, 2))))


def upstream_requests(mesh: ProductionMesh, kind: str) -> int:
    """How many requests `kind`'s fake received since its last script."""
    return len(
        {"openai": mesh.openai.chat_requests, "anthropic": mesh.anthropic.requests, "google": mesh.google.requests}[
            kind
        ]
    )


def script_thinking_tool_stream(mesh: ProductionMesh, kind: str, thought: str, signature: bytes) -> None:
    """A streamed answer from `kind` (anthropic or google) that thinks, signs, then calls the weather tool;
    then a plain streamed answer for the next turn."""
    if kind == "anthropic":
        body = fake_anthropic.message(
            thinking=[(thought, signature.decode())],
            tool_calls=[("toolu_1", WEATHER_TOOL, {"city": "Oslo"})],
            stop_reason="tool_use",
        )
        mesh.anthropic.script(
            fake_anthropic.sse_reply(fake_anthropic.stream_events(body)),
            fake_anthropic.sse_reply(fake_anthropic.stream_events(fake_anthropic.message(text="Sunny."))),
        )
    else:
        events = [
            fake_google.response([fake_google.thought_part(thought)], finish_reason=None),
            fake_google.response(
                [fake_google.call_part(WEATHER_TOOL, {"city": "Oslo"}, thought_signature=signature)],
                usage_metadata=fake_google.usage(8, 5, thoughts=12),
            ),
        ]
        mesh.google.script(
            fake_google.Reply(events=events), fake_google.Reply(events=fake_google.text_stream(["Sunny."]))
        )

"""Request builders and golden-file checks for the OpenAI adapter tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb

GOLDEN = Path(__file__).parent / "golden"


def text(role: chat_pb2.Role.ValueType, value: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, content=[chat_pb2.ContentPart(text=value)])


def user(value: str) -> chat_pb2.Message:
    return text(chat_pb2.ROLE_USER, value)


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def chat_request(
    *messages: chat_pb2.Message, model: str = "gpt-4o-mini", **fields: Any
) -> pb.ProviderServiceChatRequest:
    return pb.ProviderServiceChatRequest(model=model, messages=list(messages) or [user("Hi")], **fields)


def stream_request(
    *messages: chat_pb2.Message, model: str = "gpt-4o-mini", **fields: Any
) -> pb.ProviderServiceStreamChatRequest:
    return pb.ProviderServiceStreamChatRequest(model=model, messages=list(messages) or [user("Hi")], **fields)


def weather_tool() -> chat_pb2.ToolDefinition:
    return chat_pb2.ToolDefinition(
        name="get_weather",
        description="Current weather for a city.",
        parameters=struct(
            {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
                "required": ["city"],
            }
        ),
    )


def assert_golden(name: str, body: Any) -> None:
    """The JSON body the fake received equals golden/<name>.json (LLMMESH_UPDATE_GOLDEN=1 rewrites it)."""
    path = GOLDEN / f"{name}.json"
    rendered = json.dumps(body, indent=2, sort_keys=True) + "\n"
    if os.environ.get("LLMMESH_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert json.loads(path.read_text()) == body, f"mapped request differs from {path}"

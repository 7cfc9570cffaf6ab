"""The requests every scenario sends, serialised once."""

from __future__ import annotations

import json

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb

ROUTER_CHAT = "/llmmesh.v1.RouterService/Chat"
ROUTER_STREAM = "/llmmesh.v1.RouterService/StreamChat"
PROVIDER_CHAT = "/llmmesh.v1.ProviderService/Chat"
PROVIDER_STREAM = "/llmmesh.v1.ProviderService/StreamChat"
AGENT_RUN = "/llmmesh.v1.AgentService/Run"

PROMPT = "Hello, mesh! How much does one hop cost?"


def user(text: str = PROMPT) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


def provider_chat(model: str) -> bytes:
    return ppb.ProviderServiceChatRequest(model=model, messages=[user()]).SerializeToString()


def provider_stream(model: str) -> bytes:
    return ppb.ProviderServiceStreamChatRequest(model=model, messages=[user()]).SerializeToString()


def router_chat(model: str, routing: rpb.RoutingPolicy | None = None) -> bytes:
    return rpb.ChatRequest(model=model, messages=[user()], routing=routing).SerializeToString()


def router_stream(model: str) -> bytes:
    return rpb.StreamChatRequest(model=model, messages=[user()]).SerializeToString()


def openai_chat_json(model: str, *, stream: bool = False) -> bytes:
    """The same question as an OpenAI chat completions body (HTTP targets: upstream, door, LiteLLM)."""
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()

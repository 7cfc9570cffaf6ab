"""Calls through the production-shaped mesh: every provider, unary, streaming and tools, both doors, the agent."""

from __future__ import annotations

import json

import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from services.testing.production import ProductionMesh
from tests.production.helpers import (
    MODELS,
    SDK_KINDS,
    WEATHER_TOOL,
    chat,
    script_text,
    script_tool_call,
    stream_chat,
    upstream_requests,
    weather_tool,
)

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]


class TestEveryProvider:
    @pytest.mark.parametrize("kind", list(MODELS))
    def test_unary(self, mesh: ProductionMesh, kind: str) -> None:
        """A unary chat through the Service address reaches the kind's adapter (over mTLS, with the token) and back."""
        script_text(mesh, kind, f"hello from {kind}")
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS[kind], f"hello {kind}"), timeout=30, metadata=mesh.caller()
            )
        assert response.model == MODELS[kind]
        assert response.finish_reason == chat_pb2.FINISH_REASON_STOP
        if kind == "mock":
            assert f"hello {kind}" in response.message.content[0].text
        else:
            assert response.message.content[0].text.strip() == f"hello from {kind}"
            assert upstream_requests(mesh, kind) == 1

    @pytest.mark.parametrize("kind", list(MODELS))
    def test_streaming(self, mesh: ProductionMesh, kind: str) -> None:
        """A stream carries the answer in deltas and ends with the final message (the token rides streams too)."""
        script_text(mesh, kind, f"streamed words from {kind}", stream=True)
        with mesh.channel() as channel:
            events = list(
                router_service_pb2_grpc.RouterServiceStub(channel).StreamChat(
                    stream_chat(MODELS[kind], f"stream {kind} please"), timeout=30, metadata=mesh.caller("team-b")
                )
            )
        text = "".join(event.delta.text for event in events if event.HasField("delta"))
        final = events[-1]
        assert final.HasField("final"), events
        assert final.final.model == MODELS[kind]
        assert final.final.finish_reason == chat_pb2.FINISH_REASON_STOP
        expected = f"stream {kind} please" if kind == "mock" else f"streamed words from {kind}"
        assert expected in text
        assert final.final.usage.output_tokens > 0

    @pytest.mark.parametrize("kind", SDK_KINDS)
    def test_tool_call(self, mesh: ProductionMesh, kind: str) -> None:
        """The tool definition reaches the provider and its tool call comes back in the unified shape."""
        script_tool_call(mesh, kind, WEATHER_TOOL, {"city": "Oslo"})
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS[kind], "weather in Oslo?", tools=[weather_tool()]), timeout=30, metadata=mesh.caller()
            )
        assert response.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        [call] = response.message.tool_calls
        assert call.name == WEATHER_TOOL
        assert json.loads(call.arguments_json) == {"city": "Oslo"}
        assert WEATHER_TOOL in json.dumps(_upstream_body(mesh, kind))


def _upstream_body(mesh: ProductionMesh, kind: str) -> object:
    requests = {
        "openai": mesh.openai.chat_requests,
        "anthropic": mesh.anthropic.requests,
        "google": mesh.google.requests,
    }
    [request] = requests[kind]
    return request.body

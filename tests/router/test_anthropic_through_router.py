"""The router in front of the real Anthropic adapter (its SDK against the loopback fake) and the mock.

End to end for issue 15: provider data reaching stream finals, a capability
refusal moving on, and a stream continued by Anthropic prefill.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.common.reasoning import ReasoningAssembler
from services.testing.fake_anthropic import FakeAnthropic, message, sse_reply, stream_events
from services.testing.mesh import start_router
from services.testing.streams import kind_runs, text_before

CLAUDE = "claude-haiku-4-5"
ROUTING = {
    "providers": {"anthropic": {"kind": "anthropic", "continues_prefix": True}, "mock": {"kind": "mock"}},
    "models": {
        CLAUDE: {"provider": "anthropic", "fallbacks": ["mock-small"]},
        "mock-small": {"provider": "mock"},
        "mock-first": {"provider": "mock", "upstream_model": "mock-small", "fallbacks": [CLAUDE]},
    },
}


KEY = f"test-key-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def router(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("anthropic-router")
    started: list[ServiceProcess] = []
    try:
        started.append(
            start_service(
                ["-m", "services.providers.anthropic"],
                name="anthropic",
                workdir=workdir,
                env={"ANTHROPIC_API_KEY": KEY, "LLMMESH_ANTHROPIC_BASE_URL": fake.url, "LLMMESH_MODELS": CLAUDE},
            )
        )
        started.append(start_service(["-m", "services.providers.mock"], name="mock", workdir=workdir))
        static = {"llmmesh-provider-anthropic": [started[0].address], "llmmesh-provider-mock": [started[1].address]}
        started.append(start_router(workdir, ROUTING, static))
        yield started[-1]
    finally:
        for process in reversed(started):
            process.terminate()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeAnthropic) -> None:
    fake.reset()


@pytest.fixture
async def stub(router: ServiceProcess):
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _object_schema() -> struct_pb2.Struct:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"city": {"type": "string"}}})
    return schema


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


async def _events(stub, request: rpb.StreamChatRequest) -> list[rpb.StreamChatResponse]:
    return [event async for event in stub.StreamChat(request, timeout=20)]


class TestAnthropicThroughTheRouter:
    async def test_stream_keeps_thinking_and_ignored_settings(self, stub, fake) -> None:
        """Thinking with its signature reaches the caller as reasoning deltas; ignored settings and the
        response id reach the stream final."""
        fake.script(sse_reply(stream_events(message(thinking=[("Hmm.", "sig-42")], text="Done."))))
        request = rpb.StreamChatRequest(model=CLAUDE, messages=[_user("Hi")])
        request.settings.temperature = 0.5
        events = await _events(stub, request)
        assembler = ReasoningAssembler()
        for event in events[:-1]:
            if event.delta.HasField("reasoning"):
                assembler.add(event.delta.reasoning)
        assert assembler.parts() == [chat_pb2.ReasoningPart(text="Hmm.", signature="sig-42", provider="anthropic")]
        final = events[-1].final
        extension = json_format.MessageToDict(final.extensions)["anthropic"]
        assert extension["ignored_settings"] == ["temperature"]
        assert final.response_id == "msg_fake_01"

    async def test_streamed_thinking_with_tool_use_continues_next_turn(self, stub, fake) -> None:
        """A reasoning stream asking for a tool: the caller sends the assembled reasoning part back with the
        tool result and Anthropic receives the thinking block, signature intact, before the tool_use."""
        body = message(
            thinking=[("Weather needs the tool.", "sig-tool")],
            tool_calls=[("toolu_1", "get_weather", {"city": "Oslo"})],
            stop_reason="tool_use",
        )
        fake.script(sse_reply(stream_events(body)), sse_reply(stream_events(message(text="Sunny."))))
        tool = chat_pb2.ToolDefinition(name="get_weather", parameters=_object_schema())
        settings = chat_pb2.GenerationSettings(reasoning=chat_pb2.ReasoningSettings(budget_tokens=2048))
        first = await _events(
            stub, rpb.StreamChatRequest(model=CLAUDE, messages=[_user("Oslo?")], tools=[tool], settings=settings)
        )
        assembler = ReasoningAssembler()
        for event in first[:-1]:
            if event.delta.HasField("reasoning"):
                assembler.add(event.delta.reasoning)
        assistant = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[chat_pb2.ContentPart(reasoning=part) for part in assembler.parts()],
            tool_calls=[chat_pb2.ToolCall(id="toolu_1", name="get_weather", arguments_json='{"city": "Oslo"}')],
        )
        result = chat_pb2.Message(
            role=chat_pb2.ROLE_TOOL, tool_result=chat_pb2.ToolResult(tool_call_id="toolu_1", content="sunny")
        )
        history = [_user("Oslo?"), assistant, result]
        second = await _events(
            stub, rpb.StreamChatRequest(model=CLAUDE, messages=history, tools=[tool], settings=settings)
        )
        assert second[-1].final.finish_reason == chat_pb2.FINISH_REASON_STOP
        sent = fake.requests[1].body
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert sent["messages"][1]["content"][:2] == [
            {"type": "thinking", "thinking": "Weather needs the tool.", "signature": "sig-tool"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ]

    async def test_budget_anthropic_cannot_take_moves_on(self, stub, fake) -> None:
        """A thinking budget below Anthropic's minimum is UNSUPPORTED_FEATURE; the next candidate answers."""
        request = rpb.ChatRequest(model=CLAUDE, messages=[_user("Think")])
        request.settings.reasoning.budget_tokens = 100
        response = await stub.Chat(request, timeout=20)
        assert response.model == "mock-small"
        assert (response.attempts[0].model, response.attempts[0].reason) == (CLAUDE, "UNSUPPORTED_FEATURE")
        assert fake.requests == []

    async def test_json_object_mode_streams_from_anthropic(self, stub, fake) -> None:
        """Schema-less JSON mode on Claude: the forced tool's input reaches the caller as the streamed text."""
        body = message(tool_calls=[("toolu_j", "json_object", {"answer": 42})], stop_reason="tool_use")
        fake.script(sse_reply(stream_events(body)))
        request = rpb.StreamChatRequest(model=CLAUDE, messages=[_user("Give JSON")])
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        events = await _events(stub, request)
        assert json.loads("".join(event.delta.text for event in events)) == {"answer": 42}
        assert (events[-1].final.model, events[-1].final.finish_reason) == (CLAUDE, chat_pb2.FINISH_REASON_STOP)
        assert fake.requests[0].body["tool_choice"] == {"type": "tool", "name": "json_object"}

    async def test_json_object_mode_with_tools_moves_on_from_anthropic(self, stub, fake) -> None:
        """With tools of its own, JSON mode cannot force Anthropic's tool: UNSUPPORTED_FEATURE, the mock answers."""
        request = rpb.ChatRequest(model=CLAUDE, messages=[_user("Give JSON")])
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        request.tools.add(name="lookup", description="Looks things up")
        response = await stub.Chat(request, timeout=20)
        assert response.model == "mock-small"
        assert (response.attempts[0].model, response.attempts[0].reason) == (CLAUDE, "UNSUPPORTED_FEATURE")
        assert fake.requests == []

    async def test_stream_continued_by_anthropic_prefill(self, stub, fake) -> None:
        """A mock stream cut mid-answer continues on Claude: prefill without trailing whitespace, one seamless text."""
        fake.script(sse_reply(stream_events(message(text=" and the rest."))))
        extensions = struct_pb2.Struct()
        extensions.update({"mock": {"text": "The first part", "stream_cut_after": 2}})
        request = rpb.StreamChatRequest(
            model="mock-first",
            messages=[_user("Go")],
            extensions=extensions,
            routing=rpb.RoutingPolicy(allow_mid_stream_continuation=True),
        )
        events = await _events(stub, request)
        assert kind_runs(events)[:2] == ["delta", "continuation"]
        assert text_before(events, "continuation") == "The first "
        assert "".join(event.delta.text for event in events) == "The first and the rest."
        assert (events[-1].final.model, events[-1].final.continued) == (CLAUDE, True)
        sent = fake.requests[0].body["messages"]
        assert sent[-1] == {"role": "assistant", "content": [{"type": "text", "text": "The first"}]}

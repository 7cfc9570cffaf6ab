"""The router in front of the real Gemini adapter (google-genai against the loopback fake).

Gemini's reasoning end to end: thoughts and thought signatures come out as
reasoning parts and deltas, and a caller that sends back only those (as the
HTTP door does) continues a Gemini 3 tool conversation, which the fake, like
Gemini 3, refuses when the first call of a model turn has no signature.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import grpc
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.common.reasoning import ReasoningAssembler
from services.testing import fake_google as fg
from services.testing.fake_google import FakeGemini, Reply
from services.testing.mesh import start_router

GEMINI_3 = "gemini-3-pro-preview"
ROUTING = {"providers": {"google": {"kind": "google"}}, "models": {GEMINI_3: {"provider": "google"}}}
KEY = f"test-key-{secrets.token_hex(8)}"
CALL_SIGNATURE = b"\x01gemini-call-signature"
WEATHER = chat_pb2.ToolDefinition(name="get_weather", description="Weather for a city.")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def router(fake: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("google-router")
    started: list[ServiceProcess] = []
    try:
        env = {
            "GEMINI_API_KEY": KEY,
            "GOOGLE_API_KEY": "",
            "LLMMESH_GOOGLE_BASE_URL": fake.url,
            "LLMMESH_MODELS": GEMINI_3,
        }
        started.append(start_service(["-m", "services.providers.google"], name="google", workdir=workdir, env=env))
        started.append(start_router(workdir, ROUTING, {"llmmesh-provider-google": [started[0].address]}))
        yield started[-1]
    finally:
        for process in reversed(started):
            process.terminate()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeGemini) -> None:
    fake.script()


@pytest.fixture
async def stub(router: ServiceProcess):
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


def _result(call_id: str) -> chat_pb2.Message:
    return chat_pb2.Message(
        role=chat_pb2.ROLE_TOOL, tool_result=chat_pb2.ToolResult(tool_call_id=call_id, name="get_weather", content="9")
    )


def _thinking() -> chat_pb2.GenerationSettings:
    return chat_pb2.GenerationSettings(
        reasoning=chat_pb2.ReasoningSettings(effort=chat_pb2.REASONING_EFFORT_HIGH, include_thoughts=True)
    )


class TestGeminiReasoningThroughTheRouter:
    async def test_streamed_thoughts_and_call_signature_continue_next_turn(self, stub, fake) -> None:
        """A Gemini 3 stream asking for a tool: the caller keeps only the assembled reasoning parts and the
        calls (no extensions) and the next turn reaches Gemini with the call's signature on its call."""
        fake.script(
            Reply(
                events=[
                    fg.response([fg.thought_part("Weather needs the tool.")], finish_reason=None),
                    fg.response(
                        [fg.call_part("get_weather", {"city": "Oslo"}, thought_signature=CALL_SIGNATURE)],
                        usage_metadata=fg.usage(8, 5, thoughts=13),
                    ),
                ]
            )
        )
        request = rpb.StreamChatRequest(
            model=GEMINI_3, messages=[_user("Oslo?")], tools=[WEATHER], settings=_thinking()
        )
        events = [event async for event in stub.StreamChat(request, timeout=20)]
        assembler = ReasoningAssembler()
        calls: list[chat_pb2.ToolCall] = []
        for event in events[:-1]:
            if event.delta.HasField("reasoning"):
                assembler.add(event.delta.reasoning)
            calls.extend(
                chat_pb2.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json_delta)
                for c in event.delta.tool_calls
            )
        final = events[-1].final
        assert final.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        assert final.usage.reasoning_tokens == 13
        parts = assembler.parts()
        assert [(p.text, p.signature) for p in parts] == [
            ("Weather needs the tool.", ""),
            ("", base64.b64encode(CALL_SIGNATURE).decode()),
        ]
        assistant = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[chat_pb2.ContentPart(reasoning=part) for part in parts],
            tool_calls=calls,
        )
        fake.script(Reply(events=fg.text_stream(["Nine degrees."])))
        again = rpb.StreamChatRequest(
            model=GEMINI_3, messages=[_user("Oslo?"), assistant, _result(calls[0].id)], tools=[WEATHER]
        )
        answer = [event async for event in stub.StreamChat(again, timeout=20)]
        assert "".join(event.delta.text for event in answer[:-1]) == "Nine degrees."
        model_turn = fake.requests[0].body["contents"][1]["parts"]
        assert model_turn[0] == {"text": "Weather needs the tool.", "thought": True}
        assert base64.urlsafe_b64decode(model_turn[1]["thoughtSignature"]) == CALL_SIGNATURE

    async def test_unary_thought_round_trip(self, stub, fake) -> None:
        """Unary: a signed thought and a signed answer come back as reasoning parts and return as Gemini sent them."""
        text_signature = b"text-signature"
        fake.script(
            Reply(
                body=fg.response(
                    [
                        fg.thought_part("Short.", thought_signature=b"thought"),
                        fg.text_part("Hi.", thought_signature=text_signature),
                    ]
                )
            )
        )
        reply = await stub.Chat(
            rpb.ChatRequest(model=GEMINI_3, messages=[_user("Hi")], settings=_thinking()), timeout=20
        )
        assert [p.WhichOneof("kind") for p in reply.message.content] == ["reasoning", "reasoning", "text"]
        fake.script(Reply(body=fg.response([fg.text_part("Again.")])))
        await stub.Chat(
            rpb.ChatRequest(model=GEMINI_3, messages=[_user("Hi"), reply.message, _user("More")]), timeout=20
        )
        parts = fake.requests[0].body["contents"][1]["parts"]
        assert [(p["text"], p.get("thought"), base64.urlsafe_b64decode(p["thoughtSignature"])) for p in parts] == [
            ("Short.", True, b"thought"),
            ("Hi.", None, text_signature),
        ]

    async def test_history_from_another_provider_reaches_gemini_3(self, stub, fake) -> None:
        """Tool calls another provider made (its signed reasoning dropped) reach Gemini 3 with Google's dummy
        signature, so Gemini answers instead of refusing with 400."""
        foreign = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[
                chat_pb2.ContentPart(
                    reasoning=chat_pb2.ReasoningPart(text="tool time", signature="c2lnLWE=", provider="anthropic")
                )
            ],
            tool_calls=[chat_pb2.ToolCall(id="toolu_1", name="get_weather", arguments_json='{"city":"Oslo"}')],
        )
        fake.script(Reply(body=fg.response([fg.text_part("Nine degrees.")])))
        request = rpb.ChatRequest(
            model=GEMINI_3, messages=[_user("Oslo?"), foreign, _result("toolu_1")], tools=[WEATHER]
        )
        reply = await stub.Chat(request, timeout=20)
        assert reply.message.content[-1].text == "Nine degrees."
        parts = fake.requests[0].body["contents"][1]["parts"]
        assert parts == [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                "thoughtSignature": "skip_thought_signature_validator",
            }
        ]

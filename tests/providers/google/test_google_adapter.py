"""The Gemini adapter as a real process, its real SDK talking to the loopback fake Gemini."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, start_service
from services.common.reasoning import ReasoningAssembler
from services.testing import fake_google as fg
from services.testing.fake_google import FakeGemini, Reply

API_KEY = "test-key-google-5ecret-value"
MODEL = "gemini-2.5-flash"
GOLDEN = Path(__file__).parent / "golden"
SIGNATURE = b"\x00sig\xffnature"
B64_SIGNATURE = base64.b64encode(SIGNATURE).decode()
GEMINI_3 = "gemini-3-pro-preview"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def adapter(fake: FakeGemini) -> Iterator[ServiceProcess]:
    service = start_service(
        ["-m", "services.providers.google"],
        name="google-adapter",
        env={
            "GEMINI_API_KEY": API_KEY,
            "GOOGLE_API_KEY": "",
            "LLMMESH_GOOGLE_BASE_URL": fake.url,
            "LLMMESH_MODELS": f"gemini-2.5-flash,gemini-2.5-pro,{GEMINI_3}",
            "LLMMESH_LOG_LEVEL": "debug",
        },
    )
    yield service
    service.terminate()


@pytest.fixture(scope="module")
def stub(adapter: ServiceProcess) -> Iterator[provider_service_pb2_grpc.ProviderServiceStub]:
    with grpc.insecure_channel(adapter.address) as channel:
        yield provider_service_pb2_grpc.ProviderServiceStub(channel)


@pytest.fixture(autouse=True)
def _fresh_script(fake: FakeGemini) -> None:
    fake.script()


# ------------------------------------------------------------------- helpers


def text(value: str) -> chat_pb2.ContentPart:
    return chat_pb2.ContentPart(text=value)


def message(role: chat_pb2.Role.ValueType, *parts: str, **kwargs: Any) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, content=[text(part) for part in parts], **kwargs)


def user(*parts: str) -> chat_pb2.Message:
    return message(chat_pb2.ROLE_USER, *parts)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def chat_request(*messages: chat_pb2.Message, **kwargs: Any) -> pb.ProviderServiceChatRequest:
    return pb.ProviderServiceChatRequest(model=kwargs.pop("model", MODEL), messages=list(messages), **kwargs)


def stream_request(*messages: chat_pb2.Message, **kwargs: Any) -> pb.ProviderServiceStreamChatRequest:
    return pb.ProviderServiceStreamChatRequest(model=kwargs.pop("model", MODEL), messages=list(messages), **kwargs)


def _consume(call: Any, *args: Any, **kwargs: Any) -> None:
    result = call(*args, **kwargs)
    if not isinstance(result, pb.ProviderServiceChatResponse):
        list(result)  # a stream fails while it is read


def failure(call: Any, *args: Any, **kwargs: Any) -> MeshError:
    """The MeshError (details included) a unary or streaming call ends with."""
    with pytest.raises(grpc.RpcError) as info:
        _consume(call, *args, **kwargs)
    return MeshError.from_rpc_error(info.value)


def collect(
    stub: provider_service_pb2_grpc.ProviderServiceStub, request: Any, timeout: float = 10.0
) -> tuple[list[chat_pb2.ChatDelta], pb.ProviderStreamFinal]:
    deltas, finals = [], []
    for event in stub.StreamChat(request, timeout=timeout):
        (finals if event.HasField("final") else deltas).append(event.final if event.HasField("final") else event.delta)
    assert len(finals) == 1
    return deltas, finals[0]


def ext(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def assert_golden(name: str, body: Any) -> None:
    """The mapped request body, compared exactly; LLMMESH_UPDATE_GOLDEN=1 rewrites the file."""
    path = GOLDEN / f"{name}.json"
    if os.environ.get("LLMMESH_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    assert body == json.loads(path.read_text()), f"mapped request differs from {path}"


WEATHER_TOOL = chat_pb2.ToolDefinition(
    name="get_weather",
    description="Current weather for a city.",
    parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
)
TIME_TOOL = chat_pb2.ToolDefinition(
    name="get_time",
    description="Local time for a city.",
    parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}}),
)


# --------------------------------------------------------------------- tests


class TestChat:
    def test_plain_chat(self, stub: Any, fake: FakeGemini) -> None:
        """Text in, text out, with usage, model version and response id mapped."""
        fake.script(
            Reply(
                body=fg.response(
                    [fg.text_part("Hello there.")],
                    usage_metadata=fg.usage(11, 5, thoughts=3, cached=4),
                    response_id="resp-plain",
                )
            )
        )
        reply = stub.Chat(chat_request(user("Say hello.")), timeout=10)
        assert [part.text for part in reply.message.content] == ["Hello there."]
        assert reply.message.role == chat_pb2.ROLE_ASSISTANT
        assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert reply.usage == chat_pb2.Usage(
            input_tokens=11, output_tokens=8, cached_input_tokens=4, reasoning_tokens=3
        )
        assert (reply.response_model, reply.response_id) == ("gemini-2.5-flash-001", "resp-plain")
        assert not reply.HasField("headroom")  # Gemini sends no rate-limit headers
        assert ext(reply.extensions) == {"google": {"finish_reason": "STOP"}}
        [seen] = fake.requests
        assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent"
        assert seen.had_api_key
        assert 1 <= int(seen.headers["X-Server-Timeout"]) <= 10
        assert_golden("plain_chat", seen.body)

    def test_system_prompt_and_settings(self, stub: Any, fake: FakeGemini) -> None:
        """System messages become system_instruction; settings and JSON schema land in generationConfig."""
        fake.script(Reply(body=fg.response([fg.text_part('{"answer": 4}')])))
        settings = chat_pb2.GenerationSettings(
            temperature=0.2,
            top_p=0.9,
            max_output_tokens=256,
            stop=["END"],
            seed=7,
            response_format=chat_pb2.ResponseFormat(
                type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=struct({"type": "object", "properties": {"answer": {"type": "integer"}}}),
            ),
        )
        request = chat_request(
            message(chat_pb2.ROLE_SYSTEM, "You are terse."),
            user("What is 2+2?"),
            message(chat_pb2.ROLE_ASSISTANT, "4"),
            user("Again, as JSON."),
            settings=settings,
            extensions=struct({"google": {"top_k": 40, "thinking_config": {"thinking_budget": 512}}}),
        )
        reply = stub.Chat(request, timeout=10)
        assert reply.message.content[0].text == '{"answer": 4}'
        assert_golden("system_and_settings", fake.requests[0].body)

    def test_shared_reasoning_settings_become_thinking_config(self, stub: Any, fake: FakeGemini) -> None:
        """A budget goes as thinking_budget (never beside a level, which Gemini refuses); an effort alone as thinking_level."""
        cases = [
            (
                chat_pb2.ReasoningSettings(
                    effort=chat_pb2.REASONING_EFFORT_LOW, budget_tokens=2048, include_thoughts=True
                ),
                {"thinking_budget": 2048, "include_thoughts": True},
            ),
            (chat_pb2.ReasoningSettings(effort=chat_pb2.REASONING_EFFORT_HIGH), {"thinking_level": "HIGH"}),
        ]
        for reasoning, expected in cases:
            fake.script(Reply(body=fg.response([fg.text_part("ok")])))
            stub.Chat(
                chat_request(user("Think."), settings=chat_pb2.GenerationSettings(reasoning=reasoning)), timeout=10
            )
            assert fake.requests[-1].body["generationConfig"]["thinkingConfig"] == expected

    def test_foreign_reasoning_parts_left_out_of_history(self, stub: Any, fake: FakeGemini) -> None:
        """Another provider's signed reasoning in an assistant turn is not sent: Gemini rejects signatures it did not make."""
        fake.script(Reply(body=fg.response([fg.text_part("ok")])))
        thought = chat_pb2.ContentPart(
            reasoning=chat_pb2.ReasoningPart(text="hmm", signature="c2ln", provider="anthropic")
        )
        assistant = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, content=[thought, text("4")])
        stub.Chat(chat_request(user("2+2?"), assistant, user("Again.")), timeout=10)
        contents = fake.requests[0].body["contents"]
        assert contents[1] == {"role": "model", "parts": [{"text": "4"}]}

    def test_images(self, stub: Any, fake: FakeGemini) -> None:
        """Image bytes and data URLs go inline; https URLs go as file_data with a MIME type."""
        fake.script(Reply(body=fg.response([fg.text_part("Two cats.")])))
        png = b"\x89PNG\r\n\x1a\nfake"
        request = chat_request(
            chat_pb2.Message(
                role=chat_pb2.ROLE_USER,
                content=[
                    text("What is in these?"),
                    chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=png, mime_type="image/png")),
                    chat_pb2.ContentPart(image=chat_pb2.ImagePart(url="https://example.com/cat.jpg")),
                    chat_pb2.ContentPart(
                        image=chat_pb2.ImagePart(url="data:image/gif;base64," + base64.b64encode(b"GIF89a").decode())
                    ),
                ],
            )
        )
        stub.Chat(request, timeout=10)
        assert_golden("images", fake.requests[0].body)

    def test_http_image_url_refused(self, stub: Any, fake: FakeGemini) -> None:
        """A plain http:// image URL is INVALID_ARGUMENT UNSUPPORTED_FEATURE naming the field; nothing goes upstream."""
        request = chat_request(
            chat_pb2.Message(
                role=chat_pb2.ROLE_USER,
                content=[text("Look"), chat_pb2.ContentPart(image=chat_pb2.ImagePart(url="http://example.com/a.png"))],
            )
        )
        error = failure(stub.Chat, request, timeout=10)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == "messages[0].content[1].image.url"
        assert error.reason == "UNSUPPORTED_FEATURE"
        assert fake.requests == []

    def test_unknown_request_option_refused(self, stub: Any, fake: FakeGemini) -> None:
        """extensions.google accepts only its allowlist; others are INVALID_ARGUMENT naming the key."""
        request = chat_request(user("hi"), extensions=struct({"google": {"candidate_count": 2}}))
        error = failure(stub.Chat, request, timeout=10)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == "extensions.google.candidate_count"
        assert fake.requests == []

    @pytest.mark.parametrize(
        ("gemini", "unified"),
        [
            ("MAX_TOKENS", chat_pb2.FINISH_REASON_LENGTH),
            ("SAFETY", chat_pb2.FINISH_REASON_CONTENT_FILTER),
            ("RECITATION", chat_pb2.FINISH_REASON_CONTENT_FILTER),
            ("PROHIBITED_CONTENT", chat_pb2.FINISH_REASON_CONTENT_FILTER),
            ("MALFORMED_FUNCTION_CALL", chat_pb2.FINISH_REASON_OTHER),
        ],
    )
    def test_finish_reasons(self, stub: Any, fake: FakeGemini, gemini: str, unified: int) -> None:
        """Gemini finish reasons map to the unified enum; the raw value stays in extensions."""
        fake.script(Reply(body=fg.response([fg.text_part("partial")], finish_reason=gemini)))
        reply = stub.Chat(chat_request(user("hi")), timeout=10)
        assert reply.finish_reason == unified
        assert ext(reply.extensions)["google"]["finish_reason"] == gemini

    def test_prompt_blocked(self, stub: Any, fake: FakeGemini) -> None:
        """A prompt Gemini blocks (no candidates, block_reason) is FAILED_PRECONDITION CONTENT_FILTERED."""
        fake.script(Reply(body=fg.response(None, finish_reason=None, block_reason="SAFETY")))
        error = failure(stub.Chat, chat_request(user("something bad")), timeout=10)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONTENT_FILTERED")
        assert "SAFETY" in error.message


class TestTools:
    def test_allowed_tools_are_allowed_function_names(self, stub: Any, fake: FakeGemini) -> None:
        """A model's choice among some tools is VALIDATED with allowedFunctionNames (Gemini takes the names only
        with ANY or VALIDATED); a required one is ANY; parallel_tool_calls true is Gemini's default."""
        fake.script(Reply(body=fg.response([fg.text_part("ok")])), Reply(body=fg.response([fg.text_part("ok")])))
        choice = chat_pb2.ToolChoice(
            mode=chat_pb2.TOOL_CHOICE_MODE_AUTO, allowed_tools=["get_time"], parallel_tool_calls=True
        )
        stub.Chat(chat_request(user("Time?"), tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice), timeout=10)
        body = fake.requests[0].body
        assert body["toolConfig"]["functionCallingConfig"] == {
            "mode": "VALIDATED",
            "allowedFunctionNames": ["get_time"],
        }
        assert_golden("allowed_tools", body)
        choice.mode = chat_pb2.TOOL_CHOICE_MODE_REQUIRED
        stub.Chat(chat_request(user("Time?"), tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice), timeout=10)
        assert fake.requests[-1].body["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"

    def test_no_parallel_calls_is_unsupported(self, stub: Any, fake: FakeGemini) -> None:
        """Gemini cannot turn parallel calls off: UNSUPPORTED_FEATURE naming the field, so the router moves on."""
        choice = chat_pb2.ToolChoice(parallel_tool_calls=False)
        error = failure(stub.Chat, chat_request(user("Time?"), tools=[WEATHER_TOOL], tool_choice=choice), timeout=10)
        assert (error.code, error.reason, error.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_FEATURE",
            "tool_choice.parallel_tool_calls",
        )
        assert fake.requests == []

    def test_parallel_tool_calls(self, stub: Any, fake: FakeGemini) -> None:
        """Several function calls in one turn come back as ToolCalls, ids kept or synthesised, signature kept."""
        fake.script(
            Reply(
                body=fg.response(
                    [
                        fg.call_part("get_weather", {"city": "Paris"}, call_id="fc-1", thought_signature=SIGNATURE),
                        fg.call_part("get_time", {"city": "Paris"}),
                    ]
                )
            )
        )
        request = chat_request(
            user("Weather and time in Paris?"),
            tools=[WEATHER_TOOL, TIME_TOOL],
            tool_choice=chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_REQUIRED),
        )
        reply = stub.Chat(request, timeout=10)
        assert reply.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        first, second = reply.message.tool_calls
        assert (first.id, first.name, json.loads(first.arguments_json)) == ("fc-1", "get_weather", {"city": "Paris"})
        assert ext(first.extensions) == {
            "google": {"thought_signature": base64.b64encode(SIGNATURE).decode(), "upstream_id": True}
        }
        assert (second.id, second.name) == ("call_0_1", "get_time")
        assert not second.extensions.fields
        body = fake.requests[0].body
        assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == ["get_weather", "get_time"]

    @pytest.mark.parametrize(
        ("choice", "mode"),
        [(chat_pb2.TOOL_CHOICE_MODE_UNSPECIFIED, "VALIDATED"), (chat_pb2.TOOL_CHOICE_MODE_REQUIRED, "ANY")],
    )
    def test_strict_tool_holds_calls_to_their_schemas(
        self, stub: Any, fake: FakeGemini, choice: int, mode: str
    ) -> None:
        """A strict tool asks for VALIDATED function calling where the model chooses; a required call is ANY."""
        fake.script(Reply(body=fg.response([fg.text_part("Sunny.")])))
        strict = chat_pb2.ToolDefinition()
        strict.CopyFrom(WEATHER_TOOL)
        strict.strict = True
        stub.Chat(chat_request(user("Paris?"), tools=[strict, TIME_TOOL], tool_choice=chat_pb2.ToolChoice(mode=choice)))
        assert fake.requests[0].body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}

    def test_caller_labels_are_gemini_labels(self, stub: Any, fake: FakeGemini) -> None:
        """Labels go to Gemini's `labels`; Gemini has no end-user field, so the user goes nowhere."""
        fake.script(Reply(body=fg.response([fg.text_part("Hi.")])))
        caller = chat_pb2.CallerContext(user="u-9", labels={"team": "ads"})
        stub.Chat(chat_request(user("hi"), caller=caller), timeout=10)
        body = fake.requests[0].body
        assert body["labels"] == {"team": "ads"}
        assert "u-9" not in json.dumps(body)

    def test_tool_results_round_trip(self, stub: Any, fake: FakeGemini) -> None:
        """Calls go back as model functionCall parts (signature, upstream ids only), results as one user turn."""
        fake.script(Reply(body=fg.response([fg.text_part("Sunny, 14:00.")])))
        signature = base64.b64encode(SIGNATURE).decode()
        assistant = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            tool_calls=[
                chat_pb2.ToolCall(
                    id="fc-1",
                    name="get_weather",
                    arguments_json='{"city": "Paris"}',
                    extensions=struct({"google": {"thought_signature": signature, "upstream_id": True}}),
                ),
                chat_pb2.ToolCall(id="call_0_1", name="get_time", arguments_json='{"city":"Paris"}'),
            ],
        )
        request = chat_request(
            user("Weather and time in Paris?"),
            assistant,
            chat_pb2.Message(
                role=chat_pb2.ROLE_TOOL,
                tool_result=chat_pb2.ToolResult(tool_call_id="fc-1", content='{"sky": "sunny"}'),
            ),
            chat_pb2.Message(
                role=chat_pb2.ROLE_TOOL,
                tool_result=chat_pb2.ToolResult(
                    tool_call_id="call_0_1", name="get_time", content="clock broken", is_error=True
                ),
            ),
            tools=[WEATHER_TOOL, TIME_TOOL],
            tool_choice=chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_NAMED, name="get_time"),
        )
        reply = stub.Chat(request, timeout=10)
        assert reply.message.content[0].text == "Sunny, 14:00."
        body = fake.requests[0].body
        model_turn = body["contents"][1]["parts"]
        # google-genai sends bytes as URL-safe base64; Gemini reads both alphabets.
        assert base64.urlsafe_b64decode(model_turn[0]["thoughtSignature"]) == SIGNATURE
        assert model_turn[0]["functionCall"]["id"] == "fc-1"
        assert "id" not in model_turn[1]["functionCall"]  # synthesised ids never go upstream
        assert_golden("tool_round_trip", body)

    def test_text_thought_signature_round_trip(self, stub: Any, fake: FakeGemini) -> None:
        """A signature on answer text is a signature-only reasoning part, sent back on the last text part."""
        fake.script(Reply(body=fg.response([fg.text_part("Thinking done.", thought_signature=SIGNATURE)])))
        first = stub.Chat(chat_request(user("Think.")), timeout=10)
        assert [part.WhichOneof("kind") for part in first.message.content] == ["reasoning", "text"]
        assert first.message.content[0].reasoning == chat_pb2.ReasoningPart(signature=B64_SIGNATURE, provider="google")
        assert not first.message.extensions.fields
        fake.script(Reply(body=fg.response([fg.text_part("OK.")])))
        stub.Chat(chat_request(user("Think."), first.message, user("And?")), timeout=10)
        sent = fake.requests[0].body["contents"][1]
        assert sent == {
            "role": "model",
            "parts": [{"text": "Thinking done.", "thoughtSignature": base64.urlsafe_b64encode(SIGNATURE).decode()}],
        }

    def test_refusal_in_history_goes_back_as_text(self, stub: Any, fake: FakeGemini) -> None:
        """An assistant turn's Message.refusal reaches Gemini as the model turn's text (it has no refusal part)."""
        fake.script(Reply(body=fg.response([fg.text_part("OK.")])))
        refused = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, refusal="I can't help with that.")
        stub.Chat(chat_request(user("Bad"), refused, user("Fine?")), timeout=10)
        assert fake.requests[0].body["contents"][1] == {"role": "model", "parts": [{"text": "I can't help with that."}]}

    def test_older_extension_signature_still_read(self, stub: Any, fake: FakeGemini) -> None:
        """Message.extensions.google.thought_signature (the older form) still goes back on the last text part."""
        fake.script(Reply(body=fg.response([fg.text_part("OK.")])))
        older = message(
            chat_pb2.ROLE_ASSISTANT, "Done.", extensions=struct({"google": {"thought_signature": B64_SIGNATURE}})
        )
        stub.Chat(chat_request(user("Think."), older, user("And?")), timeout=10)
        part = fake.requests[0].body["contents"][1]["parts"][0]
        assert base64.urlsafe_b64decode(part["thoughtSignature"]) == SIGNATURE

    def test_thoughts_and_signatures_round_trip(self, stub: Any, fake: FakeGemini) -> None:
        """Thoughts become one reasoning part per run, signatures parts of their own; all go back where they came."""
        call_signature = b"call-signature"
        fake.script(
            Reply(
                body=fg.response(
                    [
                        fg.thought_part("Need the weather; "),
                        fg.thought_part("call the tool.", thought_signature=SIGNATURE),
                        fg.text_part("Checking Paris."),
                        fg.call_part(
                            "get_weather", {"city": "Paris"}, call_id="fc-1", thought_signature=call_signature
                        ),
                        fg.call_part("get_time", {"city": "Paris"}, call_id="fc-2"),
                    ],
                    usage_metadata=fg.usage(10, 8, thoughts=21),
                )
            )
        )
        settings = chat_pb2.GenerationSettings(reasoning=chat_pb2.ReasoningSettings(include_thoughts=True))
        first = stub.Chat(chat_request(user("Paris?"), tools=[WEATHER_TOOL, TIME_TOOL], settings=settings), timeout=10)
        reasoning = [part.reasoning for part in first.message.content if part.WhichOneof("kind") == "reasoning"]
        assert reasoning == [
            chat_pb2.ReasoningPart(text="Need the weather; call the tool.", signature=B64_SIGNATURE, provider="google"),
            chat_pb2.ReasoningPart(signature=base64.b64encode(call_signature).decode(), provider="google"),
        ]
        assert first.message.content[-1].text == "Checking Paris."
        assert first.usage.reasoning_tokens == 21
        # The reasoning parts alone (what the HTTP door carries) place the signature back on the first call.
        for call in first.message.tool_calls:
            call.extensions.Clear()
        fake.script(Reply(body=fg.response([fg.text_part("Sunny.")])))
        results = [
            chat_pb2.Message(
                role=chat_pb2.ROLE_TOOL, tool_result=chat_pb2.ToolResult(tool_call_id=call_id, content="1")
            )
            for call_id in ("fc-1", "fc-2")
        ]
        stub.Chat(chat_request(user("Paris?"), first.message, *results, tools=[WEATHER_TOOL, TIME_TOOL]), timeout=10)
        assert_golden("reasoning_round_trip", fake.requests[0].body)
        parts = fake.requests[0].body["contents"][1]["parts"]
        assert parts[0] == {
            "text": "Need the weather; call the tool.",
            "thought": True,
            "thoughtSignature": base64.urlsafe_b64encode(SIGNATURE).decode(),
        }
        assert base64.urlsafe_b64decode(parts[2]["thoughtSignature"]) == call_signature
        assert "thoughtSignature" not in parts[1]
        assert "thoughtSignature" not in parts[3]

    def test_foreign_history_gets_googles_dummy_signature_on_gemini_3(self, stub: Any, fake: FakeGemini) -> None:
        """Calls another provider made reach a Gemini 3 model with the dummy signature Google documents; 2.5 gets none."""
        anthropic_turn = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[
                chat_pb2.ContentPart(
                    reasoning=chat_pb2.ReasoningPart(text="hmm", signature="c2ln", provider="anthropic")
                )
            ],
            tool_calls=[
                chat_pb2.ToolCall(id="toolu_1", name="get_weather", arguments_json='{"city":"Rome"}'),
                chat_pb2.ToolCall(id="toolu_2", name="get_time", arguments_json='{"city":"Rome"}'),
            ],
        )
        results = [
            chat_pb2.Message(
                role=chat_pb2.ROLE_TOOL, tool_result=chat_pb2.ToolResult(tool_call_id=call_id, content="1")
            )
            for call_id in ("toolu_1", "toolu_2")
        ]
        history = (user("Rome?"), anthropic_turn, *results)
        fake.script(Reply(body=fg.response([fg.text_part("Sunny.")], model_version="gemini-3-pro-preview")))
        reply = stub.Chat(chat_request(*history, tools=[WEATHER_TOOL, TIME_TOOL], model=GEMINI_3), timeout=10)
        assert reply.message.content[-1].text == "Sunny."  # the fake, like Gemini 3, refuses an unsigned first call
        assert_golden("foreign_history_gemini_3", fake.requests[0].body)
        parts = fake.requests[0].body["contents"][1]["parts"]
        assert [part.get("thoughtSignature") for part in parts] == ["skip_thought_signature_validator", None]
        fake.script(Reply(body=fg.response([fg.text_part("Sunny.")])))
        stub.Chat(chat_request(*history, tools=[WEATHER_TOOL, TIME_TOOL]), timeout=10)
        assert all("thoughtSignature" not in part for part in fake.requests[0].body["contents"][1]["parts"])

    def test_gemini_3_fake_refuses_unsigned_calls(self) -> None:
        """The fake speaks Gemini 3's refusal, so the dummy-signature test above can fail."""
        body = {"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}]}
        assert fg.missing_signature(body) is not None
        body["contents"][0]["parts"][0]["thoughtSignature"] = "skip_thought_signature_validator"
        assert fg.missing_signature(body) is None

    def test_tool_result_without_known_name_refused(self, stub: Any, fake: FakeGemini) -> None:
        """A tool result with no name and no matching earlier call is INVALID_ARGUMENT naming the field."""
        request = chat_request(
            user("hi"),
            chat_pb2.Message(role=chat_pb2.ROLE_TOOL, tool_result=chat_pb2.ToolResult(tool_call_id="x", content="1")),
        )
        error = failure(stub.Chat, request, timeout=10)
        assert error.field == "messages[1].tool_result.name"
        assert fake.requests == []


class TestLogprobs:
    def test_logprobs_asked_for_and_mapped_back(self, stub: Any, fake: FakeGemini) -> None:
        """settings.logprobs is responseLogprobs (top_logprobs: logprobs); logprobsResult comes back as
        Message.logprobs, each chosen token with its step's top candidates."""
        steps = [("Hi", -0.1, {"Hi": -0.1, "Hello": -2.5}), ("!", -0.2, {"!": -0.2})]
        fake.script(Reply(body=fg.response([fg.text_part("Hi!")], logprobs=steps)))
        settings = chat_pb2.GenerationSettings(logprobs=True, top_logprobs=2)
        response = stub.Chat(chat_request(user("Hi"), settings=settings), timeout=10)
        config = fake.requests[0].body["generationConfig"]
        assert (config["responseLogprobs"], config["logprobs"]) == (True, 2)
        assert_golden("logprobs", fake.requests[0].body)
        first = response.message.logprobs[0]
        assert (first.token, first.logprob) == ("Hi", -0.1)
        assert [(top.token, top.logprob) for top in first.top_logprobs] == [("Hi", -0.1), ("Hello", -2.5)]
        assert [item.token for item in response.message.logprobs] == ["Hi", "!"]

    def test_streamed_logprobs_ride_their_deltas(self, stub: Any, fake: FakeGemini) -> None:
        events = [
            fg.response([fg.text_part("Hi")], finish_reason=None, logprobs=[("Hi", -0.1, {})]),
            fg.response([fg.text_part("!")], usage_metadata=fg.usage(3, 2), logprobs=[("!", -0.2, {})]),
        ]
        fake.script(Reply(events=events))
        settings = chat_pb2.GenerationSettings(logprobs=True)
        received = list(stub.StreamChat(stream_request(user("Hi"), settings=settings), timeout=10))
        pairs = [(e.delta.text, [t.token for t in e.delta.logprobs]) for e in received[:-1]]
        assert pairs == [("Hi", ["Hi"]), ("!", ["!"])]


def _cited(citations: Any) -> list[tuple[Any, ...]]:
    return [
        (
            c.kind,
            c.url,
            c.title,
            c.start_index if c.HasField("start_index") else None,
            c.end_index if c.HasField("end_index") else None,
            c.cited_text,
            c.source_id,
        )
        for c in citations
    ]


class TestCitations:
    def test_grounding_and_citation_sources_mapped(self, stub: Any, fake: FakeGemini) -> None:
        """Grounding supports (UTF-8 byte offsets in their part) become Citations spanning characters of the
        joined text; unnamed chunks come back unplaced; citationSources are URL citations too."""
        grounding = fg.web_grounding(
            [("https://a.example", "A"), ("https://b.example", "B"), ("https://c.example", "C")],
            [(0, 5, [0], 0), (0, 7, [1, 3], 1)],
            documents=(("gs://kb/z.txt", "Z doc", "Zurich facts", "corpora/kb/documents/z"),),
        )
        sources = [fg.types.Citation(uri="https://q.example", title="Q", start_index=0, end_index=5)]
        parts = [fg.text_part("Café au lait. "), fg.text_part("Zürich is big.")]
        fake.script(Reply(body=fg.response(parts, grounding=grounding, citation_sources=sources)))
        response = stub.Chat(chat_request(user("Tell me.")), timeout=10)
        url, document = chat_pb2.CITATION_KIND_URL, chat_pb2.CITATION_KIND_DOCUMENT
        assert _cited(response.message.citations) == [
            (url, "https://a.example", "A", 0, 4, "", ""),
            (url, "https://b.example", "B", 14, 20, "", ""),
            (document, "gs://kb/z.txt", "Z doc", 14, 20, "Zurich facts", "corpora/kb/documents/z"),
            (url, "https://c.example", "C", None, None, "", ""),
            (url, "https://q.example", "Q", 0, 4, "", ""),
        ]
        text_value = "".join(part.text for part in response.message.content)
        assert text_value[14:20] == "Zürich"

    def test_streamed_grounding_sent_once(self, stub: Any, fake: FakeGemini) -> None:
        """Grounding on a stream's chunk comes as a delta of its own after its text; repeated metadata is not
        sent again; segments past the chunk's own part count bytes of the whole answer."""
        grounding = fg.web_grounding([("https://a.example", "A")], [(0, 14, [0], None)])
        events = [
            fg.response([fg.text_part("Café ")], finish_reason=None),
            fg.response([fg.text_part("Zürich.")], finish_reason=None, grounding=grounding),
            fg.response([], usage_metadata=fg.usage(3, 2), grounding=grounding),
        ]
        fake.script(Reply(events=events))
        received = list(stub.StreamChat(stream_request(user("Hi")), timeout=10))
        carriers = [event.delta for event in received[:-1] if event.delta.citations]
        assert len(carriers) == 1
        assert not carriers[0].text
        assert _cited(carriers[0].citations) == [(chat_pb2.CITATION_KIND_URL, "https://a.example", "A", 0, 12, "", "")]
        assert [event.delta.text for event in received[:-1]] == ["Café ", "Zürich.", ""]

    def test_citations_in_history_are_not_sent_upstream(self, stub: Any, fake: FakeGemini) -> None:
        """An assistant turn with citations is accepted; Gemini's model turn gets its text only."""
        fake.script(Reply(body=fg.response([fg.text_part("ok")])))
        earlier = message(chat_pb2.ROLE_ASSISTANT, "Zürich.")
        earlier.citations.add(kind=chat_pb2.CITATION_KIND_URL, url="https://a.example", start_index=0, end_index=6)
        stub.Chat(chat_request(user("Hi"), earlier, user("More?")), timeout=10)
        assert fake.requests[0].body["contents"][1] == {"role": "model", "parts": [{"text": "Zürich."}]}


class TestStreaming:
    def test_streaming_text(self, stub: Any, fake: FakeGemini) -> None:
        """SSE chunks become text deltas, then exactly one final with finish reason and usage."""
        fake.script(Reply(events=fg.text_stream(["Hel", "lo ", "world"], usage_metadata=fg.usage(4, 3))))
        deltas, final = collect(stub, stream_request(user("Say hello world.")))
        assert "".join(d.text for d in deltas) == "Hello world"
        assert final.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert final.usage == chat_pb2.Usage(input_tokens=4, output_tokens=3)
        assert final.response_model == "gemini-2.5-flash-001"
        assert fake.requests[0].path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"

    def test_streaming_tool_calls(self, stub: Any, fake: FakeGemini) -> None:
        """Function calls in a stream become ToolCallDeltas with index, id, name, arguments and signature."""
        fake.script(
            Reply(
                events=[
                    fg.response([fg.text_part("Checking.")], finish_reason=None),
                    fg.response(
                        [fg.call_part("get_weather", {"city": "Oslo"}, thought_signature=SIGNATURE)],
                        finish_reason=None,
                    ),
                    fg.response(
                        [fg.call_part("get_time", {"city": "Oslo"}, call_id="fc-9")], usage_metadata=fg.usage(9, 6)
                    ),
                ]
            )
        )
        deltas, final = collect(stub, stream_request(user("Oslo?"), tools=[WEATHER_TOOL, TIME_TOOL]))
        assert deltas[0].text == "Checking."
        calls = [call for delta in deltas for call in delta.tool_calls]
        assert [(c.index, c.id, c.name, json.loads(c.arguments_json_delta)) for c in calls] == [
            (0, "call_0_0", "get_weather", {"city": "Oslo"}),
            (1, "fc-9", "get_time", {"city": "Oslo"}),
        ]
        assert ext(calls[0].extensions) == {"google": {"thought_signature": base64.b64encode(SIGNATURE).decode()}}
        assert final.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        assert final.usage.input_tokens == 9

    def test_streamed_thoughts_and_signatures(self, stub: Any, fake: FakeGemini) -> None:
        """Thought chunks are ReasoningDeltas of one index; a signature gets its own; assembled they equal the unary parts."""
        fake.script(
            Reply(
                events=[
                    fg.response([fg.thought_part("Weather first, ")], finish_reason=None),
                    fg.response([fg.thought_part("then answer.")], finish_reason=None),
                    fg.response([fg.text_part("Checking.")], finish_reason=None),
                    fg.response(
                        [fg.call_part("get_weather", {"city": "Oslo"}, thought_signature=SIGNATURE)],
                        usage_metadata=fg.usage(9, 6, thoughts=12),
                    ),
                ]
            )
        )
        deltas, final = collect(stub, stream_request(user("Oslo?"), tools=[WEATHER_TOOL]))
        reasoning = [delta.reasoning for delta in deltas if delta.HasField("reasoning")]
        assert [(r.index, r.text, r.signature, r.provider) for r in reasoning] == [
            (0, "Weather first, ", "", "google"),
            (0, "then answer.", "", "google"),
            (1, "", B64_SIGNATURE, "google"),
        ]
        assembler = ReasoningAssembler()
        for delta in reasoning:
            assembler.add(delta)
        assert assembler.parts() == [
            chat_pb2.ReasoningPart(text="Weather first, then answer.", provider="google"),
            chat_pb2.ReasoningPart(signature=B64_SIGNATURE, provider="google"),
        ]
        assert final.usage.reasoning_tokens == 12
        assert not final.extensions.fields["google"].struct_value.fields.get("thought_signature")

    def test_truncated_stream(self, stub: Any, fake: FakeGemini) -> None:
        """A stream that ends cleanly without a finish reason is UNAVAILABLE STREAM_TRUNCATED, not complete."""
        fake.script(Reply(events=fg.text_stream(["Half an ", "answer"], finish_reason=None)))
        error = failure(stub.StreamChat, stream_request(user("hi")), timeout=10)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "STREAM_TRUNCATED")

    def test_streamed_safety_stop_is_content_filter(self, stub: Any, fake: FakeGemini) -> None:
        """A stream Gemini ends with SAFETY has a final with FINISH_REASON_CONTENT_FILTER and the raw reason."""
        fake.script(Reply(events=fg.text_stream(["Well, ", "no"], finish_reason="SAFETY")))
        _, final = collect(stub, stream_request(user("hi")))
        assert final.finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER
        assert ext(final.extensions)["google"]["finish_reason"] == "SAFETY"

    def test_stream_without_usage_is_truncated(self, stub: Any, fake: FakeGemini) -> None:
        """A finish reason but no usageMetadata at all: UNAVAILABLE STREAM_TRUNCATED, never OK with usage 0."""
        fake.script(Reply(events=fg.text_stream(["All of ", "it"], usage_metadata=None)))
        error = failure(stub.StreamChat, stream_request(user("hi")), timeout=10)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "STREAM_TRUNCATED")
        assert "usage" in error.message

    def test_assistant_prefix_is_unsupported(self, stub: Any, fake: FakeGemini) -> None:
        """Gemini cannot continue an assistant prefix: UNSUPPORTED_FEATURE naming it, nothing sent upstream."""
        error = failure(stub.StreamChat, stream_request(user("hi"), assistant_prefix="Once upon"), timeout=10)
        assert (error.code, error.reason, error.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_FEATURE",
            "assistant_prefix",
        )
        assert fake.requests == []

    def test_connection_cut_mid_stream(self, stub: Any, fake: FakeGemini) -> None:
        """An abrupt close mid-stream (raw httpx2 error) is UNAVAILABLE, with no second request."""
        fake.script(Reply(events=fg.text_stream(["Half"], finish_reason=None), ending="abrupt"))
        error = failure(stub.StreamChat, stream_request(user("hi")), timeout=10)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert len(fake.requests) == 1

    def test_continuation_token_not_followed(self, stub: Any, fake: FakeGemini) -> None:
        """The SDK's automatic stream continuation is off: a cut after a continuationToken sends nothing more."""
        event = fg.response([fg.text_part("Part one")], finish_reason=None)
        event["candidates"][0]["continuationToken"] = base64.b64encode(b"resume-here").decode()
        fake.script(Reply(events=[event], ending="abrupt"), Reply(events=fg.text_stream(["Part two"])))
        error = failure(stub.StreamChat, stream_request(user("hi")), timeout=10)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert len(fake.requests) == 1

    @pytest.mark.parametrize(
        ("code", "expected"),
        [(503, grpc.StatusCode.UNAVAILABLE), (429, grpc.StatusCode.RESOURCE_EXHAUSTED)],
    )
    def test_in_stream_error_event(self, stub: Any, fake: FakeGemini, code: int, expected: grpc.StatusCode) -> None:
        """An error event inside a 200 stream maps by its code."""
        events = [*fg.text_stream(["Start"], finish_reason=None), fg.error_body(code, "overloaded mid-stream")]
        fake.script(Reply(events=events))
        error = failure(stub.StreamChat, stream_request(user("hi")), timeout=10)
        assert error.code == expected

    def test_in_stream_error_without_code(self, stub: Any, fake: FakeGemini) -> None:
        """An in-stream error event with no code (the SDK trips on it with a TypeError) is UNAVAILABLE."""
        events = [
            *fg.text_stream(["Start"], finish_reason=None),
            {"error": {"message": "boom", "status": "UNAVAILABLE"}},
        ]
        fake.script(Reply(events=events))
        error = failure(stub.StreamChat, stream_request(user("hi")), timeout=10)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")

    def test_stream_http_error(self, stub: Any, fake: FakeGemini) -> None:
        """A 429 on the stream endpoint is RESOURCE_EXHAUSTED with the body's RetryInfo delay."""
        fake.script(fg.error_reply(429, "Resource has been exhausted (e.g. check quota)."))
        error = failure(stub.StreamChat, stream_request(user("hi")), timeout=10)
        assert (error.code, error.retry_after) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 17.0)
        assert len(fake.requests) == 1

    def test_cancel_mid_stream(self, stub: Any, fake: FakeGemini) -> None:
        """Cancelling the gRPC call aborts the upstream HTTP request: the fake sees the connection close."""
        fake.script(Reply(events=fg.text_stream(["first "], finish_reason=None), ending="hold"))
        call = stub.StreamChat(stream_request(user("long answer please")), timeout=10)
        first = next(call)
        assert first.delta.text == "first "
        call.cancel()
        assert fake.wait_for_disconnect(2.0)


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "code", "reason"),
        [
            (400, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
            (401, grpc.StatusCode.UNAUTHENTICATED, "PROVIDER_AUTH_FAILED"),
            (403, grpc.StatusCode.PERMISSION_DENIED, "PROVIDER_AUTH_FAILED"),
            (404, grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
            (413, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"),
            (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
            (500, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
            (503, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
            (504, grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
        ],
    )
    def test_status_mapping(self, stub: Any, fake: FakeGemini, status: int, code: grpc.StatusCode, reason: str) -> None:
        """Each upstream status maps per docs/errors.md, after exactly one upstream request (no hidden retry)."""
        fake.script(fg.error_reply(status))
        error = failure(stub.Chat, chat_request(user("hi")), timeout=10)
        assert (error.code, error.reason) == (code, reason)
        assert len(fake.requests) == 1
        if status == 429:
            assert error.retry_after == 17.0

    def test_unknown_model_lists_close_matches(self, stub: Any, fake: FakeGemini) -> None:
        """A 404 for the model is NOT_FOUND and names the served models that look alike."""
        fake.script(
            fg.error_reply(404, "models/gemini-2.5-flsh is not found for API version v1beta, or is not supported.")
        )
        error = failure(stub.Chat, chat_request(user("hi"), model="gemini-2.5-flsh"), timeout=10)
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert "gemini-2.5-flash" in error.message

    def test_context_window_exceeded(self, stub: Any, fake: FakeGemini) -> None:
        """Gemini's 400 about the input token count is INVALID_ARGUMENT CONTEXT_WINDOW_EXCEEDED."""
        fake.script(
            fg.error_reply(
                400,
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            )
        )
        error = failure(stub.Chat, chat_request(user("a very long prompt")), timeout=10)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_WINDOW_EXCEEDED")

    def test_bad_key(self, stub: Any, fake: FakeGemini) -> None:
        """Gemini's 400 API_KEY_INVALID is UNAUTHENTICATED, and the key is not in the message."""
        fake.script(Reply(status=400, body=fg.bad_key_body()))
        error = failure(stub.Chat, chat_request(user("hi")), timeout=10)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "PROVIDER_AUTH_FAILED")
        assert API_KEY not in error.message

    def test_deadline_shorter_than_upstream(self, stub: Any, adapter: ServiceProcess, fake: FakeGemini) -> None:
        """A slow upstream past the caller's deadline is DEADLINE_EXCEEDED; the SDK got the time left as timeout."""
        fake.script(Reply(body=fg.response([fg.text_part("late")]), delay=2.0))
        started = time.monotonic()
        error = failure(stub.Chat, chat_request(user("hi")), timeout=0.8)
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1.8
        assert fake.requests[0].headers["X-Server-Timeout"] == "1"
        assert len(fake.requests) == 1

    def test_dropped_connection_not_retried(self, stub: Any, fake: FakeGemini) -> None:
        """A connection closed without an answer is UNAVAILABLE at once, after exactly one request."""
        fake.script(Reply(ending="no_response"), Reply(body=fg.response([fg.text_part("retried")])))
        started = time.monotonic()
        error = failure(stub.Chat, chat_request(user("hi")), timeout=10)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert len(fake.requests) == 1
        assert time.monotonic() - started < 1.0

    def test_broken_body(self, stub: Any, fake: FakeGemini) -> None:
        """A body cut short is UNAVAILABLE, never INTERNAL."""
        fake.script(Reply(body=fg.response([fg.text_part("cut")]), ending="abrupt"))
        error = failure(stub.Chat, chat_request(user("hi")), timeout=10)
        assert error.code == grpc.StatusCode.UNAVAILABLE


class TestProcess:
    def test_list_models(self, stub: Any) -> None:
        """ListModels serves LLMMESH_MODELS, labelled as the google provider."""
        reply = stub.ListModels(pb.ProviderServiceListModelsRequest(), timeout=10)
        assert reply.provider == "google"
        assert [m.name for m in reply.models] == ["gemini-2.5-flash", "gemini-2.5-pro", GEMINI_3]
        assert reply.models[0].context_window == 1_048_576

    def test_key_never_logged(self, adapter: ServiceProcess, fake: FakeGemini) -> None:
        """After every test above, the adapter's log holds no API key and no unhandled error."""
        log = adapter.log()
        assert "upstream call failed" in log  # the log did record the failures
        assert API_KEY not in log
        assert "unhandled error" not in log
        assert all(API_KEY not in json.dumps(r.headers) for r in fake.requests)


class TestPromptCache:
    def test_cached_content_sent_breakpoints_and_key_are_no_ops(self, stub: Any, fake: FakeGemini) -> None:
        """settings.prompt_cache.cached_content → cachedContent; cache_control and the key leave no trace;
        cachedContentTokenCount comes back as cached_input_tokens, unary and streamed."""
        fake.script(Reply(body=fg.response([fg.text_part("Hi")], usage_metadata=fg.usage(3000, 2, cached=2048))))
        marked = chat_pb2.Message(
            role=chat_pb2.ROLE_USER,
            content=[
                chat_pb2.ContentPart(text="Long context.", cache_control=chat_pb2.CacheControl()),
                chat_pb2.ContentPart(text="Question?"),
            ],
        )
        cache = chat_pb2.PromptCache(key="tenant-7", cached_content="cachedContents/handbook-1")
        settings = chat_pb2.GenerationSettings(prompt_cache=cache)
        response = stub.Chat(chat_request(marked, settings=settings), timeout=10)
        body = fake.requests[0].body
        assert body["cachedContent"] == "cachedContents/handbook-1"
        assert "cache_control" not in json.dumps(body)
        assert "tenant-7" not in json.dumps(body)
        assert_golden("prompt_cache", body)
        assert (response.usage.input_tokens, response.usage.cached_input_tokens) == (3000, 2048)
        assert response.usage.cache_write_input_tokens == 0
        fake.script(Reply(events=[fg.response([fg.text_part("Hi")], usage_metadata=fg.usage(3000, 2, cached=2048))]))
        _, final = collect(stub, pb.ProviderServiceStreamChatRequest(model="gemini-2.5-flash", messages=[marked]))
        assert final.usage.cached_input_tokens == 2048

    def test_cached_content_contradicting_the_extension_is_refused(self, stub: Any, fake: FakeGemini) -> None:
        """extensions.google.cached_content and the shared field may not disagree."""
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(cached_content="cachedContents/a"))
        extensions = struct_pb2.Struct()
        extensions.update({"google": {"cached_content": "cachedContents/b"}})
        error = failure(stub.Chat, chat_request(user("Hi"), settings=settings, extensions=extensions), timeout=10)
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "extensions.google.cached_content")
        assert fake.requests == []

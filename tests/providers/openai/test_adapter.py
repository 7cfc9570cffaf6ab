"""The OpenAI adapter as a real process, its real SDK talking to a loopback fake OpenAI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, run_to_exit, start_service
from services.testing.fake_openai import (
    RATE_LIMIT_HEADERS,
    FakeOpenAI,
    Reply,
    chunk,
    completion,
    refusal_stream,
    text_stream,
    token_logprob,
    tool_call,
    tool_call_delta,
    url_citation,
    usage,
)
from tests.providers.openai.helpers import (
    assert_golden,
    chat_request,
    stream_request,
    struct,
    text,
    user,
    weather_tool,
)

KEY = "test-key-7c1f9e2a4b6d-openai"
ADAPTER = ["-m", "services.providers.openai"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(expected_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def adapter(fake: FakeOpenAI) -> Iterator[ServiceProcess]:
    process = start_service(
        ADAPTER,
        name="openai-adapter",
        env={
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": fake.url,
            "LLMMESH_OPENAI_BASE_URL": "",
            "LLMMESH_MODELS": "gpt-4o-mini,gpt-4.1",
            "LLMMESH_LOG_LEVEL": "debug",
        },
    )
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def stub(adapter: ServiceProcess) -> Iterator[provider_service_pb2_grpc.ProviderServiceStub]:
    with grpc.insecure_channel(adapter.address) as channel:
        yield provider_service_pb2_grpc.ProviderServiceStub(channel)


@pytest.fixture(autouse=True)
def _fresh_script(fake: FakeOpenAI) -> None:
    fake.reset()


def _failure(call: object) -> MeshError:
    assert isinstance(call, grpc.RpcError)
    return MeshError.from_rpc_error(call)


def _chat_error(
    stub: provider_service_pb2_grpc.ProviderServiceStub, request: pb.ProviderServiceChatRequest
) -> MeshError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Chat(request, timeout=10)
    return _failure(caught.value)


def _stream(
    stub: provider_service_pb2_grpc.ProviderServiceStub, request: pb.ProviderServiceStreamChatRequest
) -> list[pb.ProviderServiceStreamChatResponse]:
    return list(stub.StreamChat(request, timeout=10))


def _stream_error(
    stub: provider_service_pb2_grpc.ProviderServiceStub, request: pb.ProviderServiceStreamChatRequest
) -> tuple[list[pb.ProviderServiceStreamChatResponse], MeshError]:
    received: list[pb.ProviderServiceStreamChatResponse] = []
    try:
        for event in stub.StreamChat(request, timeout=10):
            received.append(event)
    except grpc.RpcError as error:
        return received, _failure(error)
    pytest.fail(f"stream ended OK after {len(received)} events; expected an error status")


class TestChat:
    def test_plain_chat(self, stub, fake):
        """A plain question maps to one Chat Completions call; text, usage, model, id and headroom come back."""
        fake.script(
            Reply.json(completion("Hello there!", usage_body=usage(21, 4, cached=8)), headers=RATE_LIMIT_HEADERS)
        )
        response = stub.Chat(chat_request(user("Say hello")), timeout=10)
        assert [part.text for part in response.message.content] == ["Hello there!"]
        assert response.message.role == chat_pb2.ROLE_ASSISTANT
        assert response.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert response.usage == chat_pb2.Usage(input_tokens=21, output_tokens=4, cached_input_tokens=8)
        assert response.response_model == "gpt-4o-mini-2024-07-18"
        assert response.response_id == "chatcmpl-fake1"
        assert response.headroom.remaining_requests == 4999
        assert response.headroom.limit_tokens == 800000
        assert response.headroom.tokens_reset.ToSeconds() == 360
        assert response.headroom.requests_reset.ToMilliseconds() == 12
        assert response.extensions["openai"]["system_fingerprint"] == "fp_fake"
        (received,) = fake.chat_requests
        assert received.path == "/v1/chat/completions"
        assert received.key_ok is True
        assert "authorization" not in received.headers
        assert_golden("plain_chat", received.body)

    def test_timeout_is_the_time_left(self, stub, fake):
        """The SDK call's timeout is the caller's remaining deadline, and it is the first and only attempt."""
        fake.script(Reply.json(completion("ok")))
        stub.Chat(chat_request(user("Hi")), timeout=3)
        headers = fake.chat_requests[0].headers
        assert 2.0 < float(headers["x-stainless-read-timeout"]) < 3.1  # gRPC rounds deadlines up a little
        assert headers["x-stainless-retry-count"] == "0"

    def test_system_prompt_and_generation_settings(self, stub, fake):
        """System prompt, temperature, top_p, max output tokens (as max_completion_tokens), stop, seed and a JSON schema map to OpenAI fields."""
        fake.script(Reply.json(completion('{"answer": 4}')))
        settings = chat_pb2.GenerationSettings(
            temperature=0.2,
            top_p=0.9,
            max_output_tokens=256,
            stop=["\n\n", "END"],
            seed=42,
            response_format=chat_pb2.ResponseFormat(
                type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                schema_name="answer",
                json_schema=struct(
                    {
                        "type": "object",
                        "properties": {"answer": {"type": "integer"}},
                        "required": ["answer"],
                        "additionalProperties": False,
                    }
                ),
            ),
        )
        request = chat_request(
            text(chat_pb2.ROLE_SYSTEM, "You answer in JSON."),
            user("2+2?"),
            settings=settings,
            extensions=struct({"openai": {"json_schema_strict": True}}),
        )
        response = stub.Chat(request, timeout=10)
        assert response.message.content[0].text == '{"answer": 4}'
        assert_golden("system_and_settings", fake.chat_requests[0].body)

    def test_json_object_mode(self, stub, fake):
        """RESPONSE_FORMAT_TYPE_JSON_OBJECT becomes response_format json_object."""
        fake.script(Reply.json(completion("{}")))
        settings = chat_pb2.GenerationSettings(
            response_format=chat_pb2.ResponseFormat(type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
        )
        stub.Chat(chat_request(user("JSON please"), settings=settings), timeout=10)
        assert fake.chat_requests[0].body["response_format"] == {"type": "json_object"}

    def test_strict_tools_and_schema(self, stub, fake):
        """`strict` on a tool and on the response schema become OpenAI's strict flags (the shared field wins)."""
        fake.script(Reply.json(completion('{"answer": 4}')))
        tool = weather_tool()
        tool.strict = True
        settings = chat_pb2.GenerationSettings(
            response_format=chat_pb2.ResponseFormat(
                type=chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=struct({"type": "object"}), strict=False
            )
        )
        request = chat_request(
            user("2+2?"), tools=[tool], settings=settings, extensions=struct({"openai": {"json_schema_strict": True}})
        )
        stub.Chat(request, timeout=10)
        body = fake.chat_requests[0].body
        assert body["tools"][0]["function"]["strict"] is True
        assert body["response_format"]["json_schema"]["strict"] is False

    def test_caller_context(self, stub, fake):
        """The end user is `safety_identifier`; labels become `metadata` only for a stored completion."""
        fake.script(Reply.json(completion("a")), Reply.json(completion("b")))
        caller = chat_pb2.CallerContext(user="u-1", labels={"team": "ads"})
        stub.Chat(chat_request(user("hi"), caller=caller), timeout=10)
        stored = chat_request(user("hi"), caller=caller, extensions=struct({"openai": {"store": True}}))
        stub.Chat(stored, timeout=10)
        first, second = (recorded.body for recorded in fake.chat_requests)
        assert (first["safety_identifier"], "metadata" in first) == ("u-1", False)
        assert (second["safety_identifier"], second["metadata"]) == ("u-1", {"team": "ads"})

    def test_parallel_tool_calls_come_back(self, stub, fake):
        """Several tool calls in one answer come back with ids, names and the exact arguments text."""
        fake.script(
            Reply.json(
                completion(
                    None,
                    tool_calls=[
                        tool_call("call_a", "get_weather", {"city": "Paris"}),
                        tool_call("call_b", "get_weather", '{"city": "Oslo", "days": 2}'),
                    ],
                    finish_reason="tool_calls",
                )
            )
        )
        request = chat_request(
            user("Weather in Paris and Oslo?"),
            tools=[weather_tool()],
            tool_choice=chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_REQUIRED),
        )
        response = stub.Chat(request, timeout=10)
        assert response.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        assert not response.message.content
        assert [(c.id, c.name, c.arguments_json) for c in response.message.tool_calls] == [
            ("call_a", "get_weather", '{"city": "Paris"}'),
            ("call_b", "get_weather", '{"city": "Oslo", "days": 2}'),
        ]
        body = fake.chat_requests[0].body
        assert body["tool_choice"] == "required"
        assert body["tools"][0]["function"]["parameters"]["properties"]["days"]["minimum"] == 1

    def test_multi_turn_with_tool_results(self, stub, fake):
        """Assistant tool calls and their results (one failed) are sent back as OpenAI assistant + tool messages."""
        fake.script(Reply.json(completion("Paris is sunny; Oslo is unknown.")))
        assistant = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[chat_pb2.ContentPart(text="Checking both.")],
            tool_calls=[
                chat_pb2.ToolCall(id="call_a", name="get_weather", arguments_json='{"city": "Paris"}'),
                chat_pb2.ToolCall(id="call_b", name="get_weather", arguments_json='{"city": "Oslo"}'),
            ],
        )
        results = [
            chat_pb2.Message(
                role=chat_pb2.ROLE_TOOL,
                tool_result=chat_pb2.ToolResult(tool_call_id="call_a", name="get_weather", content='{"sky": "sunny"}'),
            ),
            chat_pb2.Message(
                role=chat_pb2.ROLE_TOOL,
                tool_result=chat_pb2.ToolResult(
                    tool_call_id="call_b", name="get_weather", content="service down", is_error=True
                ),
            ),
        ]
        request = chat_request(
            text(chat_pb2.ROLE_SYSTEM, "Use tools."),
            user("Weather in Paris and Oslo?"),
            assistant,
            *results,
            tools=[weather_tool()],
            tool_choice=chat_pb2.ToolChoice(mode=chat_pb2.TOOL_CHOICE_MODE_NAMED, name="get_weather"),
        )
        response = stub.Chat(request, timeout=10)
        assert response.message.content[0].text == "Paris is sunny; Oslo is unknown."
        assert_golden("tool_round_trip", fake.chat_requests[0].body)

    def test_images_by_url_and_bytes(self, stub, fake):
        """User images go as image_url parts: URLs as given, bytes as a base64 data: URL."""
        fake.script(Reply.json(completion("Two cats.")))
        message = chat_pb2.Message(
            role=chat_pb2.ROLE_USER,
            content=[
                chat_pb2.ContentPart(text="What is in these?"),
                chat_pb2.ContentPart(image=chat_pb2.ImagePart(url="https://example.com/cat.png")),
                chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png")),
            ],
        )
        stub.Chat(chat_request(message), timeout=10)
        assert_golden("images", fake.chat_requests[0].body)

    def test_image_outside_user_message_is_refused(self, stub, fake):
        """An image in a system message is INVALID_ARGUMENT naming the field; nothing reaches the upstream."""
        message = chat_pb2.Message(
            role=chat_pb2.ROLE_SYSTEM,
            content=[chat_pb2.ContentPart(image=chat_pb2.ImagePart(url="https://example.com/a.png"))],
        )
        error = _chat_error(stub, chat_request(message, user("Hi")))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == "messages[0].content[0].image"
        assert error.reason == "UNSUPPORTED_FEATURE"
        assert "only in user messages" in error.message
        assert fake.chat_requests == []

    def test_allowlisted_request_options_pass_through(self, stub, fake):
        """extensions.openai options on the allowlist reach the body with their JSON types (ints stay ints)."""
        fake.script(Reply.json(completion("ok")))
        options = {
            "openai": {
                "reasoning_effort": "low",
                "user": "user-1",
                "logprobs": True,
                "top_logprobs": 2,
                "parallel_tool_calls": False,
                "extra_body": {"top_k": 40},
            }
        }
        stub.Chat(chat_request(user("Hi"), extensions=struct(options)), timeout=10)
        body = fake.chat_requests[0].body
        assert body["reasoning_effort"] == "low"
        assert body["user"] == "user-1"
        assert body["top_logprobs"] == 2
        assert isinstance(body["top_logprobs"], int)
        assert body["parallel_tool_calls"] is False
        assert body["top_k"] == 40

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"n": 3}, "extensions.openai.n"),
            ({"extra_body": {"model": "other"}}, "extensions.openai.extra_body.model"),
        ],
    )
    def test_unknown_or_clashing_options_are_refused(self, stub, fake, options, field):
        """Options off the allowlist, or extra_body overriding a mapped field, are INVALID_ARGUMENT naming it."""
        error = _chat_error(stub, chat_request(user("Hi"), extensions=struct({"openai": options})))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == field
        assert fake.chat_requests == []

    def test_refusal_round_trips(self, stub, fake):
        """A refusal comes back in Message.refusal, and goes back as OpenAI's `refusal` next turn."""
        fake.script(Reply.json(completion(None, refusal="I can't help with that.")))
        response = stub.Chat(chat_request(user("Something bad")), timeout=10)
        assert response.message.refusal == "I can't help with that."
        assert response.finish_reason == chat_pb2.FINISH_REASON_REFUSAL
        fake.script(Reply.json(completion("Sure.")))
        stub.Chat(chat_request(user("Something bad"), response.message, user("Something fine")), timeout=10)
        sent = fake.chat_requests[0].body["messages"][1]
        assert sent == {"role": "assistant", "refusal": "I can't help with that."}

    def test_older_refusal_echo_goes_back_once(self, stub, fake):
        """An assistant turn as older answers gave it (text plus extensions.openai.refusal) goes back as a refusal only."""
        old = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, content=[chat_pb2.ContentPart(text="No.")])
        old.extensions.update({"openai": {"refusal": "No."}})
        fake.script(Reply.json(completion("Sure.")))
        stub.Chat(chat_request(user("Something bad"), old, user("Something fine")), timeout=10)
        assert fake.chat_requests[0].body["messages"][1] == {"role": "assistant", "refusal": "No."}

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("length", chat_pb2.FINISH_REASON_LENGTH),
            ("content_filter", chat_pb2.FINISH_REASON_CONTENT_FILTER),
            ("function_call", chat_pb2.FINISH_REASON_OTHER),
        ],
    )
    def test_finish_reasons(self, stub, fake, raw, expected):
        """OpenAI finish reasons map to the enum; unknown ones are OTHER with the raw value in extensions."""
        fake.script(Reply.json(completion("x", finish_reason=raw)))
        response = stub.Chat(chat_request(user("Hi")), timeout=10)
        assert response.finish_reason == expected
        if expected == chat_pb2.FINISH_REASON_OTHER:
            assert response.extensions["openai"]["finish_reason"] == raw

    def test_reasoning_tokens(self, stub, fake):
        """Reasoning tokens from completion_tokens_details are reported."""
        fake.script(Reply.json(completion("x", usage_body=usage(5, 50, reasoning=40))))
        response = stub.Chat(chat_request(user("Think")), timeout=10)
        assert response.usage.reasoning_tokens == 40
        assert response.usage.output_tokens == 50

    def test_reasoning_effort_is_sent_and_foreign_reasoning_dropped(self, stub, fake):
        """settings.reasoning.effort becomes reasoning_effort; reasoning parts in the history are not sent."""
        fake.script(Reply.json(completion("42", usage_body=usage(5, 50, reasoning=40))))
        history = chat_pb2.Message(
            role=chat_pb2.ROLE_ASSISTANT,
            content=[
                chat_pb2.ContentPart(
                    reasoning=chat_pb2.ReasoningPart(text="hmm", signature="c2ln", provider="anthropic")
                ),
                chat_pb2.ContentPart(text="Earlier answer"),
            ],
        )
        settings = chat_pb2.GenerationSettings(
            reasoning=chat_pb2.ReasoningSettings(effort=chat_pb2.REASONING_EFFORT_MINIMAL, budget_tokens=2048)
        )
        response = stub.Chat(chat_request(user("Q1"), history, user("Think"), settings=settings), timeout=10)
        assert response.usage.reasoning_tokens == 40
        body = fake.chat_requests[0].body
        assert body["reasoning_effort"] == "minimal"
        assert body["messages"][1] == {"role": "assistant", "content": "Earlier answer"}

    def test_budget_without_effort_is_unsupported(self, stub, fake):
        """A token budget alone cannot be said to Chat Completions: UNSUPPORTED_FEATURE, so the router moves on."""
        settings = chat_pb2.GenerationSettings(reasoning=chat_pb2.ReasoningSettings(budget_tokens=2048))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(chat_request(user("Think"), settings=settings), timeout=10)
        error = _failure(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FEATURE")
        assert "settings.reasoning.budget_tokens" in str(error)
        assert fake.chat_requests == []

    def test_compatible_server_reasoning_content_comes_back(self, stub, fake):
        """A compatible server's message.reasoning_content becomes a reasoning part before the text."""
        fake.script(Reply.json(completion("4", reasoning_content="2+2 is 4")))
        response = stub.Chat(chat_request(user("2+2?")), timeout=10)
        kinds = [part.WhichOneof("kind") for part in response.message.content]
        assert kinds == ["reasoning", "text"]
        assert response.message.content[0].reasoning == chat_pb2.ReasoningPart(text="2+2 is 4", provider="openai")

    def test_list_models(self, stub):
        """ListModels returns the LLMMESH_MODELS names under provider openai."""
        response = stub.ListModels(pb.ProviderServiceListModelsRequest(), timeout=10)
        assert response.provider == "openai"
        assert [model.name for model in response.models] == ["gpt-4o-mini", "gpt-4.1"]
        assert all(model.provider_instances == ["openai"] and not model.mock for model in response.models)


class TestToolChoiceLimits:
    def _tools(self) -> list[chat_pb2.ToolDefinition]:
        return [weather_tool(), chat_pb2.ToolDefinition(name="get_time", description="The time.")]

    def test_allowed_tools_and_no_parallel_calls(self, stub, fake):
        """allowed_tools is OpenAI's allowed_tools choice (every tool still defined); parallel_tool_calls passes on."""
        fake.script(Reply.json(completion("ok")))
        choice = chat_pb2.ToolChoice(
            mode=chat_pb2.TOOL_CHOICE_MODE_REQUIRED, allowed_tools=["get_time"], parallel_tool_calls=False
        )
        stub.Chat(chat_request(user("Time?"), tools=self._tools(), tool_choice=choice), timeout=10)
        body = fake.chat_requests[0].body
        assert body["tool_choice"] == {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]},
        }
        assert (body["parallel_tool_calls"], len(body["tools"])) == (False, 2)
        assert_golden("allowed_tools", body)

    def test_contradicting_extension_is_refused(self, stub, fake):
        """extensions.openai.parallel_tool_calls against the shared field: INVALID_ARGUMENT naming it, nothing sent."""
        request = chat_request(
            user("Time?"), tools=self._tools(), tool_choice=chat_pb2.ToolChoice(parallel_tool_calls=True)
        )
        request.extensions.update({"openai": {"parallel_tool_calls": False}})
        error = _chat_error(stub, request)
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "extensions.openai.parallel_tool_calls")
        assert fake.chat_requests == []


class TestLogprobs:
    def test_logprobs_asked_for_and_mapped_back(self, stub, fake):
        """settings.logprobs / top_logprobs reach OpenAI; the choice's logprobs.content come back as Message.logprobs."""
        content = [token_logprob("Hi", -0.1, top={"Hello": -2.5}), token_logprob("!", -0.0)]
        fake.script(Reply.json(completion("Hi!", logprobs=content)))
        settings = chat_pb2.GenerationSettings(logprobs=True, top_logprobs=1)
        response = stub.Chat(chat_request(user("Hi"), settings=settings), timeout=10)
        body = fake.chat_requests[0].body
        assert (body["logprobs"], body["top_logprobs"]) == (True, 1)
        assert_golden("logprobs", body)
        first = response.message.logprobs[0]
        assert (first.token, first.logprob, first.token_bytes) == ("Hi", -0.1, b"Hi")
        assert [(top.token, top.logprob) for top in first.top_logprobs] == [("Hello", -2.5)]
        assert [item.token for item in response.message.logprobs] == ["Hi", "!"]

    def test_streamed_logprobs_ride_their_deltas(self, stub, fake):
        """Each chunk's logprobs come with its text, in order."""
        events = [
            chunk(role="assistant", content=""),
            chunk(content="Hi", logprobs=[token_logprob("Hi", -0.2)]),
            chunk(content="!", logprobs=[token_logprob("!", -0.3)]),
            chunk(finish_reason="stop"),
            chunk(no_choices=True, usage_body=usage(5, 2)),
        ]
        fake.script(Reply.stream(events))
        settings = chat_pb2.GenerationSettings(logprobs=True)
        received = _stream(stub, stream_request(user("Hi"), settings=settings))
        with_logprobs = [event.delta for event in received[:-1] if event.delta.logprobs]
        assert [(t.token, t.logprob) for d in with_logprobs for t in d.logprobs] == [("Hi", -0.2), ("!", -0.3)]
        # A delta's logprobs are its own text's, merged deltas or not.
        assert all(d.text == "".join(t.token for t in d.logprobs) for d in with_logprobs)


class TestCitations:
    def test_url_citations_mapped_to_citations(self, stub, fake):
        """The message's url_citation annotations come back as Message.citations, spans kept; none left in extensions."""
        text_value = "Paris is the capital of France."
        annotations = [url_citation("https://example.org/paris", "Paris", 0, 5)]
        fake.script(Reply.json(completion(text_value, annotations=annotations)))
        response = stub.Chat(chat_request(user("Capital of France?")), timeout=10)
        [citation] = response.message.citations
        assert citation.kind == chat_pb2.CITATION_KIND_URL
        assert (citation.url, citation.title, citation.start_index, citation.end_index) == (
            "https://example.org/paris",
            "Paris",
            0,
            5,
        )
        assert "openai" not in response.message.extensions.fields

    def test_streamed_url_citations_ride_their_delta(self, stub, fake):
        """A delta's annotations come back as that delta's citations."""
        events = [
            chunk(role="assistant", content=""),
            chunk(content="Paris."),
            chunk(annotations=[url_citation("https://example.org/p", "P", 0, 5)]),
            chunk(finish_reason="stop"),
            chunk(no_choices=True, usage_body=usage(5, 2)),
        ]
        fake.script(Reply.stream(events))
        received = _stream(stub, stream_request(user("Hi")))
        cited = [citation for event in received[:-1] for citation in event.delta.citations]
        assert [(c.url, c.start_index, c.end_index) for c in cited] == [("https://example.org/p", 0, 5)]

    def test_citations_in_history_are_not_sent_upstream(self, stub, fake):
        """An assistant turn carrying citations is accepted; Chat Completions has no place for them."""
        fake.script(Reply.json(completion("ok")))
        earlier = text(chat_pb2.ROLE_ASSISTANT, "Paris.")
        earlier.citations.add(kind=chat_pb2.CITATION_KIND_URL, url="https://example.org/p", start_index=0, end_index=5)
        stub.Chat(chat_request(user("Capital?"), earlier, user("Sure?")), timeout=10)
        sent = fake.chat_requests[0].body["messages"][1]
        assert sent == {"role": "assistant", "content": "Paris."}


class TestStreaming:
    def test_text_stream(self, stub, fake):
        """Text deltas in order, then exactly one final with finish reason, usage, model and headroom."""
        fake.script(Reply.stream(text_stream(["Hel", "lo ", "world"]), headers=RATE_LIMIT_HEADERS))
        events = _stream(stub, stream_request(user("Say hello world")))
        assert "".join(event.delta.text for event in events[:-1]) == "Hello world"
        assert all(event.HasField("delta") for event in events[:-1])
        final = events[-1].final
        assert final.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert final.usage.input_tokens == 12
        assert final.usage.output_tokens == 3
        assert final.response_model == "gpt-4o-mini-2024-07-18"
        assert final.response_id == "chatcmpl-fake2"
        assert final.headroom.remaining_tokens == 799000
        assert_golden("stream_text", fake.chat_requests[0].body)

    def test_finished_stream_leaves_its_connection_for_the_next(self, stub, fake):
        """After [DONE] the rest of the body is read, so the next call goes over the same kept-alive connection."""
        fake.script(Reply.stream(text_stream(["one"])), Reply.stream(text_stream(["two"])))
        first = _stream(stub, stream_request(user("first")))
        second = _stream(stub, stream_request(user("second")))
        assert [first[0].delta.text, second[0].delta.text] == ["one", "two"]
        ports = [request.client_port for request in fake.chat_requests]
        assert len(ports) == 2
        assert ports[0] == ports[1] != 0

    def test_reasoning_content_stream(self, stub, fake):
        """A compatible server's delta.reasoning_content streams as reasoning deltas before the text."""
        events = [chunk(role="assistant", reasoning_content="Let me"), chunk(reasoning_content=" think")]
        events += text_stream(["Done"])[1:]
        fake.script(Reply.stream(events))
        received = _stream(stub, stream_request(user("Think")))
        reasoning = [event.delta.reasoning for event in received[:-1] if event.delta.HasField("reasoning")]
        assert "".join(delta.text for delta in reasoning) == "Let me think"
        assert {(delta.index, delta.provider) for delta in reasoning} == {(0, "openai")}
        assert "".join(event.delta.text for event in received[:-1]) == "Done"

    def test_tool_call_stream(self, stub, fake):
        """Tool-call argument deltas keep their index; id and name come on each call's first delta only."""
        events = [
            chunk(role="assistant", tool_calls=[tool_call_delta(0, call_id="call_a", name="get_weather")]),
            chunk(tool_calls=[tool_call_delta(0, arguments='{"city": ')]),
            chunk(tool_calls=[tool_call_delta(0, arguments='"Paris"}')]),
            chunk(tool_calls=[tool_call_delta(1, call_id="call_b", name="get_weather", arguments='{"city"')]),
            chunk(tool_calls=[tool_call_delta(1, arguments=': "Oslo"}')]),
            chunk(finish_reason="tool_calls"),
            chunk(no_choices=True, usage_body=usage(30, 20)),
        ]
        fake.script(Reply.stream(events))
        received = _stream(stub, stream_request(user("Weather?"), tools=[weather_tool()]))
        deltas = [delta for event in received[:-1] for delta in event.delta.tool_calls]
        # However the fragments were merged: each call starts with its id and name, once, in index order.
        starts = [(d.index, d.id, d.name) for d in deltas if d.id or d.name]
        assert starts == [(0, "call_a", "get_weather"), (1, "call_b", "get_weather")]
        assert [d.index for d in deltas] == sorted(d.index for d in deltas)
        assert all(deltas[i].id for i in range(len(deltas)) if i == 0 or deltas[i].index != deltas[i - 1].index)
        by_index: dict[int, str] = {}
        for delta in deltas:
            by_index[delta.index] = by_index.get(delta.index, "") + delta.arguments_json_delta
        assert json.loads(by_index[0]) == {"city": "Paris"}
        assert json.loads(by_index[1]) == {"city": "Oslo"}
        assert received[-1].final.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        assert received[-1].final.usage.output_tokens == 20

    def test_bare_finish_chunk_and_content_filter(self, stub, fake):
        """A finish chunk without a delta (some compatible servers) still ends the stream; content_filter maps."""
        bare = {
            "id": "chatcmpl-x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "llama",
            "choices": [{"index": 0, "finish_reason": "content_filter"}],
        }
        usage_chunk = chunk(no_choices=True, usage_body=usage(3, 1), model="llama")
        fake.script(Reply.stream([chunk(role="assistant", content="Partial"), bare, usage_chunk], ending="eof"))
        events = _stream(stub, stream_request(user("Hi")))
        assert events[0].delta.text == "Partial"
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER
        assert events[-1].final.response_model == "llama"

    @pytest.mark.parametrize("ending", ["eof", "done"])
    def test_stream_without_finish_reason_is_truncated(self, stub, fake, ending):
        """A stream that ends (with or without [DONE]) before a finish reason is UNAVAILABLE STREAM_TRUNCATED, no final."""
        fake.script(Reply.stream(text_stream(["partial"], finish_reason=None), ending=ending))
        received, error = _stream_error(stub, stream_request(user("Hi")))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == "STREAM_TRUNCATED"
        assert not any(event.HasField("final") for event in received)

    @pytest.mark.parametrize("ending", ["eof", "done", "cut"])
    def test_stream_without_the_usage_it_asked_for_is_truncated(self, stub, fake, ending):
        """Finish chunk seen but the usage chunk never came (include_usage was sent): UNAVAILABLE, never OK with usage 0."""
        fake.script(Reply.stream(text_stream(["all", " of it"], with_usage=False), ending=ending))
        received, error = _stream_error(stub, stream_request(user("Hi")))
        assert fake.chat_requests[0].body["stream_options"] == {"include_usage": True}
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason in ("STREAM_TRUNCATED", "UPSTREAM_UNAVAILABLE")
        if ending != "cut":
            assert error.reason == "STREAM_TRUNCATED"
            assert "usage" in error.message
        assert not any(event.HasField("final") for event in received)

    def test_streamed_refusal_is_a_refusal(self, stub, fake):
        """A streamed refusal arrives as refusal deltas (no text) with FINISH_REASON_REFUSAL, as unary maps it."""
        fake.script(Reply.stream(refusal_stream(["I can't ", "help with that."])))
        events = _stream(stub, stream_request(user("Something bad")))
        assert "".join(event.delta.refusal for event in events[:-1]) == "I can't help with that."
        assert "".join(event.delta.text for event in events[:-1]) == ""
        final = events[-1].final
        assert final.finish_reason == chat_pb2.FINISH_REASON_REFUSAL
        assert "refusal" not in final.extensions["openai"]
        assert final.response_id == "chatcmpl-fake2"
        fake.script(Reply.json(completion(None, refusal="I can't help with that.")))
        unary = stub.Chat(chat_request(user("Something bad")), timeout=10)
        assert unary.finish_reason == final.finish_reason
        assert (unary.message.refusal, list(unary.message.content)) == ("I can't help with that.", [])

    def test_assistant_prefix_is_unsupported(self, stub, fake):
        """Chat Completions cannot continue an assistant prefix: UNSUPPORTED_FEATURE naming it, nothing sent upstream."""
        received, error = _stream_error(stub, stream_request(user("Hi"), assistant_prefix="Once upon"))
        assert (error.code, error.reason, error.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_FEATURE",
            "assistant_prefix",
        )
        assert received == []
        assert fake.chat_requests == []

    def test_connection_cut_mid_stream(self, stub, fake):
        """An abrupt close mid-stream is UNAVAILABLE, never a final."""
        fake.script(Reply.stream(text_stream(["partial"], finish_reason=None), ending="cut"))
        received, error = _stream_error(stub, stream_request(user("Hi")))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == "UPSTREAM_UNAVAILABLE"
        assert not any(event.HasField("final") for event in received)

    @pytest.mark.parametrize(
        ("error_body", "code", "reason"),
        [
            ({"message": "The server had an error", "type": "server_error", "code": None}, "UNAVAILABLE", ""),
            (
                {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit_exceeded"},
                "RESOURCE_EXHAUSTED",
                "RATE_LIMITED",
            ),
        ],
    )
    def test_error_event_in_stream(self, stub, fake, error_body, code, reason):
        """An error event inside a 200 stream maps by its body, not as UNKNOWN or INTERNAL."""
        fake.script(Reply.stream([chunk(role="assistant", content="Hi"), {"error": error_body}]))
        _, error = _stream_error(stub, stream_request(user("Hi")))
        assert error.code == grpc.StatusCode[code]
        if reason:
            assert error.reason == reason
        assert error_body["message"] in error.message

    def test_status_error_before_stream(self, stub, fake):
        """A 429 answering a stream request is RESOURCE_EXHAUSTED with RetryInfo, after one request."""
        fake.script(
            Reply.error(429, "Slow down", type="requests", code="rate_limit_exceeded", headers={"retry-after": "3"})
        )
        received, error = _stream_error(stub, stream_request(user("Hi")))
        assert received == []
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.retry_after == pytest.approx(3.0)
        assert len(fake.chat_requests) == 1

    def test_cancel_mid_stream_closes_upstream(self, stub, fake):
        """Cancelling the gRPC call mid-stream aborts the SDK's HTTP request: the fake sees the client go."""
        fake.script(Reply.stream([chunk(role="assistant", content="Once upon")], hold=15))
        call = stub.StreamChat(stream_request(user("Long story")), timeout=20)
        first = next(call)
        assert first.delta.text == "Once upon"
        started = time.monotonic()
        call.cancel()
        assert fake.wait_disconnected(5), "upstream connection stayed open after cancel"
        assert time.monotonic() - started < 5


ERROR_CASES = [
    pytest.param(
        Reply.error(400, "Invalid value for 'temperature'", param="temperature"),
        "INVALID_ARGUMENT",
        "INVALID_REQUEST",
        None,
        id="400",
    ),
    pytest.param(
        Reply.error(
            400,
            "This model's maximum context length is 128000 tokens.",
            code="context_length_exceeded",
            param="messages",
        ),
        "INVALID_ARGUMENT",
        "CONTEXT_WINDOW_EXCEEDED",
        None,
        id="400-context",
    ),
    pytest.param(
        Reply.error(400, "Your request was rejected by the safety system.", code="content_policy_violation"),
        "FAILED_PRECONDITION",
        "CONTENT_FILTERED",
        None,
        id="400-content-policy",
    ),
    pytest.param(
        Reply.error(400, "The response was filtered.", code="content_filter"),
        "FAILED_PRECONDITION",
        "CONTENT_FILTERED",
        None,
        id="400-content-filter",
    ),
    pytest.param(
        Reply.error(401, f"Incorrect API key provided: {KEY}.", code="invalid_api_key"),
        "UNAUTHENTICATED",
        "PROVIDER_AUTH_FAILED",
        None,
        id="401",
    ),
    pytest.param(
        Reply.error(403, "Project does not have access to model.", type="invalid_request_error"),
        "PERMISSION_DENIED",
        "PROVIDER_AUTH_FAILED",
        None,
        id="403",
    ),
    pytest.param(
        Reply.error(404, "The model `gpt-4o-mni` does not exist.", code="model_not_found"),
        "NOT_FOUND",
        "MODEL_NOT_FOUND",
        None,
        id="404",
    ),
    pytest.param(
        Reply.error(413, "Request too large.", type="invalid_request_error"),
        "INVALID_ARGUMENT",
        "INVALID_REQUEST",
        None,
        id="413",
    ),
    pytest.param(
        Reply.error(
            429,
            "Rate limit reached for requests",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": "7", "x-should-retry": "true", **RATE_LIMIT_HEADERS},
        ),
        "RESOURCE_EXHAUSTED",
        "RATE_LIMITED",
        7.0,
        id="429",
    ),
    pytest.param(
        Reply.error(429, "Slow down", type="tokens", headers={"retry-after-ms": "1500"}),
        "RESOURCE_EXHAUSTED",
        "RATE_LIMITED",
        1.5,
        id="429-ms",
    ),
    pytest.param(
        Reply.error(500, "The server had an error.", type="server_error", headers={"x-should-retry": "true"}),
        "UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
        None,
        id="500",
    ),
    pytest.param(
        Reply.error(503, "Overloaded.", type="server_error", headers={"retry-after": "2"}),
        "UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
        2.0,
        id="503",
    ),
]


class TestErrors:
    @pytest.mark.parametrize(("reply", "code", "reason", "retry_after"), ERROR_CASES)
    def test_status_mapping(self, stub, fake, reply, code, reason, retry_after):
        """Each upstream status maps per docs/errors.md, with RetryInfo from Retry-After, after exactly one request."""
        fake.script(reply, Reply.json(completion("a retry must not get this")))
        error = _chat_error(stub, chat_request(user("Hi")))
        assert error.code == grpc.StatusCode[code]
        assert error.reason == reason
        if retry_after is None:
            assert error.retry_after is None
        else:
            assert error.retry_after == pytest.approx(retry_after)
        assert error.metadata["upstream_status"] == str(reply.status)
        assert KEY not in error.message
        assert len(fake.chat_requests) == 1, "the SDK retried on its own"

    def test_not_found_lists_close_matches(self, stub, fake):
        """An unknown model is NOT_FOUND and names the served models close to it."""
        fake.script(Reply.error(404, "The model `gpt-4o-mni` does not exist.", code="model_not_found"))
        error = _chat_error(stub, chat_request(user("Hi"), model="gpt-4o-mni"))
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert "gpt-4o-mini" in error.message

    def test_deadline_shorter_than_upstream_delay(self, stub, fake):
        """A caller deadline shorter than the upstream's delay ends in DEADLINE_EXCEEDED on time."""
        fake.script(Reply.json(completion("too late"), delay=4))
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(chat_request(user("Hi")), timeout=0.6)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.5
        assert len(fake.chat_requests) == 1

    def test_connection_dropped(self, stub, fake):
        """A connection closed without a response is UNAVAILABLE, after one attempt."""
        fake.script(Reply.dropped(), Reply.json(completion("a retry must not get this")))
        error = _chat_error(stub, chat_request(user("Hi")))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == "UPSTREAM_UNAVAILABLE"
        assert len(fake.chat_requests) == 1

    @pytest.mark.parametrize(
        "reply",
        [
            Reply.raw(b"<html>gateway</html>", content_type="text/html"),
            Reply.raw(b'{"id": "chatcmpl-x", "choi', content_type="application/json"),
            Reply.json({"id": "chatcmpl-x", "object": "chat.completion", "choices": []}),
        ],
        ids=["html", "broken-json", "no-choices"],
    )
    def test_unusable_200_is_unavailable(self, stub, fake, reply):
        """A 200 that is not a usable completion is UNAVAILABLE, not INTERNAL."""
        fake.script(reply)
        error = _chat_error(stub, chat_request(user("Hi")))
        assert error.code == grpc.StatusCode.UNAVAILABLE


class TestProcess:
    def test_missing_key_refuses_to_start(self, fake):
        """Without OPENAI_API_KEY the process exits 2 and names the variable."""
        result = run_to_exit(
            ADAPTER, env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": fake.url, "LLMMESH_OPENAI_ALLOW_NO_KEY": "false"}
        )
        assert result.returncode == 2
        assert "OPENAI_API_KEY" in result.stderr

    def test_keyless_named_instance(self, fake):
        """A keyless local server instance: LLMMESH_OPENAI_BASE_URL wins over OPENAI_BASE_URL, a placeholder key is sent, the kind stays openai."""
        process = start_service(
            ADAPTER,
            name="openai-vllm-local",
            env={
                "OPENAI_API_KEY": "",
                "LLMMESH_OPENAI_ALLOW_NO_KEY": "true",
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                "LLMMESH_OPENAI_BASE_URL": fake.url,
                "LLMMESH_PROVIDER_INSTANCE": "vllm-local",
                "LLMMESH_MODELS": "llama-3.1-8b",
                "LLMMESH_OPENAI_MAX_TOKENS_FIELD": "max_tokens",
            },
        )
        try:
            with grpc.insecure_channel(process.address) as channel:
                stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
                fake.script(Reply.json(completion("local hi", model="llama-3.1-8b")))
                settings = chat_pb2.GenerationSettings(max_output_tokens=64)
                response = stub.Chat(chat_request(user("Hi"), model="llama-3.1-8b", settings=settings), timeout=10)
                models = stub.ListModels(pb.ProviderServiceListModelsRequest(), timeout=10)
        finally:
            process.terminate()
        assert response.message.content[0].text == "local hi"
        (received,) = fake.chat_requests
        assert received.has_authorization
        assert received.key_ok is False
        assert received.body["max_tokens"] == 64
        assert "max_completion_tokens" not in received.body
        assert models.provider == "openai"
        assert [(m.name, list(m.provider_instances)) for m in models.models] == [("llama-3.1-8b", ["vllm-local"])]
        assert "llmmesh-provider-vllm-local" in process.log()

    def test_key_never_in_log(self, adapter):
        """After every test above (errors included), the adapter's debug log never contains the key."""
        log = adapter.log()
        assert "serving" in log
        assert KEY not in log


def _breakpoint() -> chat_pb2.CacheControl:
    return chat_pb2.CacheControl(ttl=chat_pb2.CACHE_TTL_1H)


class TestPromptCache:
    def test_key_is_sent_and_breakpoints_are_served_as_no_ops(self, stub, fake):
        """settings.prompt_cache.key → prompt_cache_key; cache_control on parts and tools leaves no trace in the body."""
        fake.script(Reply.json(completion("Hi", usage_body=usage(1200, 3, cached=1024, cache_write=150))))
        system = chat_pb2.Message(
            role=chat_pb2.ROLE_SYSTEM,
            content=[chat_pb2.ContentPart(text="You are terse.", cache_control=_breakpoint())],
        )
        tool = weather_tool()
        tool.cache_control.CopyFrom(_breakpoint())
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(key="tenant-7/faq"))
        response = stub.Chat(chat_request(system, user("Hi"), settings=settings, tools=[tool]), timeout=10)
        body = fake.chat_requests[0].body
        assert body["prompt_cache_key"] == "tenant-7/faq"
        assert "cache_control" not in json.dumps(body)
        assert_golden("prompt_cache", body)
        usage_back = response.usage
        assert (usage_back.input_tokens, usage_back.cached_input_tokens, usage_back.cache_write_input_tokens) == (
            1200,
            1024,
            150,
        )

    def test_streamed_usage_carries_cache_counts(self, stub, fake):
        """The stream's usage chunk: cached_tokens and cache_write_tokens reach the final's usage."""
        events = [
            chunk(role="assistant", content="Hi"),
            chunk(finish_reason="stop"),
            chunk(no_choices=True, usage_body=usage(900, 2, cached=512, cache_write=64)),
        ]
        fake.script(Reply.stream(events))
        received = _stream(stub, stream_request(user("Hi")))
        final = received[-1].final.usage
        assert (final.cached_input_tokens, final.cache_write_input_tokens) == (512, 64)

    def test_explicit_cache_is_refused_by_name(self, stub, fake):
        """Gemini's cached_content is one OpenAI cannot serve: UNSUPPORTED_FEATURE, no upstream call."""
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(cached_content="cachedContents/a1"))
        error = _chat_error(stub, chat_request(user("Hi"), settings=settings))
        assert (error.code, error.reason, error.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_FEATURE",
            "settings.prompt_cache.cached_content",
        )
        assert fake.chat_requests == []

    def test_key_contradicting_the_extension_is_refused(self, stub, fake):
        """extensions.openai.prompt_cache_key and the shared key may not disagree."""
        settings = chat_pb2.GenerationSettings(prompt_cache=chat_pb2.PromptCache(key="a"))
        request = chat_request(user("Hi"), settings=settings, extensions=struct({"openai": {"prompt_cache_key": "b"}}))
        error = _chat_error(stub, request)
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "extensions.openai.prompt_cache_key")

"""The mock adapter over its gRPC interface: answers, scripts, injected latency and failures."""

from __future__ import annotations

import time

import grpc
import pytest
import yaml
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, start_service

CONFIG = {
    "seed": 7,
    "models": [
        {"name": "steady", "context_window": 20},
        {"name": "flaky", "failures": [{"code": "RESOURCE_EXHAUSTED", "rate": 0.5, "retry_after_s": 2}]},
        {"name": "tail", "latency": [{"weight": 0.5, "ms": 0}, {"weight": 0.5, "ms": 150}]},
        {"name": "scripted", "scripted": True},
        {"name": "embedder", "dimensions": 8},
        {"name": "plain", "reasoning": False},
    ],
    "scripts": [
        {
            "match": "add",
            "turns": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+3"}}]},
                {"text": "The sum: {tool_results}"},
            ],
        },
    ],
}


@pytest.fixture(scope="module")
def mock(tmp_path_factory) -> ServiceProcess:
    workdir = tmp_path_factory.mktemp("mock")
    config = workdir / "mock.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    process = start_service(
        ["-m", "services.providers.mock"], name="mock", workdir=workdir, env={"LLMMESH_MOCK_CONFIG": str(config)}
    )
    yield process
    process.terminate()


@pytest.fixture
def stub(mock: ServiceProcess):
    with grpc.insecure_channel(mock.address) as channel:
        yield provider_service_pb2_grpc.ProviderServiceStub(channel)


def _request(model: str, *messages: chat_pb2.Message, **mock_options: object) -> ppb.ProviderServiceChatRequest:
    extensions = struct_pb2.Struct()
    if mock_options:
        extensions.update({"mock": mock_options})
    return ppb.ProviderServiceChatRequest(model=model, messages=messages, extensions=extensions)


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


class TestMockBehaviour:
    def test_list_models_says_mock(self, stub) -> None:
        """ListModels labels every model as a mock."""
        response = stub.ListModels(ppb.ProviderServiceListModelsRequest(), timeout=5)
        assert response.provider == "mock"
        assert [m.name for m in response.models] == ["steady", "flaky", "tail", "scripted", "embedder", "plain"]
        assert all(m.mock and m.description.startswith("MOCK") for m in response.models)

    def test_failure_rate_is_honoured_with_retry_info(self, stub) -> None:
        """About half of 'flaky' calls fail RESOURCE_EXHAUSTED with a 2 s RetryInfo."""
        failures = []
        for _ in range(200):
            try:
                stub.Chat(_request("flaky", _user("x")), timeout=5)
            except grpc.RpcError as error:
                failures.append(MeshError.from_rpc_error(error))
        assert 60 < len(failures) < 140
        assert {(f.code, f.retry_after) for f in failures} == {(grpc.StatusCode.RESOURCE_EXHAUSTED, 2.0)}

    def test_latency_distribution_is_sampled(self, stub) -> None:
        """'tail' answers either at once or after ~150 ms, in both shares."""
        slow = 0
        for _ in range(20):
            started = time.perf_counter()
            stub.Chat(_request("tail", _user("x")), timeout=5)
            slow += time.perf_counter() - started > 0.1
        assert 3 <= slow <= 17

    def test_context_window_is_enforced(self, stub) -> None:
        """A prompt over the model's context window is INVALID_ARGUMENT with reason CONTEXT_WINDOW_EXCEEDED."""
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(_request("steady", _user("word " * 40)), timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_WINDOW_EXCEEDED")

    def test_script_plays_turns_and_observes_tool_results(self, stub) -> None:
        """A scripted model calls a tool first, then answers with the tool's result in its text."""
        first = stub.Chat(_request("scripted", _user("please add these")), timeout=5)
        call = first.message.tool_calls[0]
        assert (call.name, call.arguments_json) == ("calculator", '{"expression": "2+3"}')
        second = stub.Chat(
            _request(
                "scripted",
                _user("please add these"),
                first.message,
                chat_pb2.Message(
                    role=chat_pb2.ROLE_TOOL,
                    tool_result=chat_pb2.ToolResult(tool_call_id=call.id, name="calculator", content="5"),
                ),
            ),
            timeout=5,
        )
        assert second.message.content[0].text == "The sum: calculator = 5"
        assert second.finish_reason == chat_pb2.FINISH_REASON_STOP

    def test_unknown_model_is_not_found(self, stub) -> None:
        """A model the mock does not serve is NOT_FOUND, naming what it serves."""
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(_request("gpt-5", _user("x")), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "served: embedder, flaky, plain, scripted, steady, tail" in caught.value.details()

    def test_per_request_failure_override(self, stub) -> None:
        """extensions.mock.fail_code makes one call fail with that code and reason."""
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(_request("steady", _user("x"), fail_code="UNAVAILABLE", fail_reason="TEST"), timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "TEST")


def _thinking(request: ppb.ProviderServiceChatRequest, **reasoning: object) -> ppb.ProviderServiceChatRequest:
    request.settings.reasoning.CopyFrom(chat_pb2.ReasoningSettings(**reasoning))
    return request


class TestMockReasoning:
    def test_reasoning_part_before_the_text_with_tokens(self, stub) -> None:
        """Asked for reasoning with thoughts, the mock answers a signed thought first and bills its words."""
        request = _thinking(
            _request("tail", _user("Why?")), effort=chat_pb2.REASONING_EFFORT_HIGH, include_thoughts=True
        )
        response = stub.Chat(request, timeout=5)
        first, second = response.message.content
        assert first.reasoning.text == "Thinking (high, budget 0) about: Why?"
        assert first.reasoning.signature.startswith("mock-sig-")
        assert first.reasoning.provider == "mock"
        assert second.text == "[mock tail] Why?"
        assert response.usage.reasoning_tokens == 8
        assert response.usage.output_tokens == 3 + 8

    def test_thought_round_trips_and_a_tampered_one_is_refused(self, stub) -> None:
        """A thought sent back as returned is verified (and counted); edited, it is INVALID_ARGUMENT naming it."""
        request = _thinking(_request("tail", _user("Why?")), budget_tokens=64, include_thoughts=True)
        earlier = stub.Chat(request, timeout=5).message
        follow_up = _thinking(
            _request("tail", _user("Why?"), earlier, _user("And?")), budget_tokens=64, include_thoughts=True
        )
        again = stub.Chat(follow_up, timeout=5)
        assert again.message.content[0].reasoning.text.endswith("; 1 earlier thoughts verified")
        earlier.content[0].reasoning.text += " (edited)"
        tampered = _thinking(_request("tail", _user("Why?"), earlier, _user("And?")), budget_tokens=64)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(tampered, timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "messages[1].content[0].reasoning.signature" in str(error)

    def test_stream_signature_only_without_thoughts(self, stub) -> None:
        """Without include_thoughts a stream carries the signature alone, on reasoning index 0, before the text."""
        request = _thinking(_request("tail", _user("Why?")), effort=chat_pb2.REASONING_EFFORT_LOW)
        events = list(stub.StreamChat(ppb.ProviderServiceStreamChatRequest(**_fields(request)), timeout=5))
        first = events[0].delta.reasoning
        assert (first.index, first.text, first.provider) == (0, "", "mock")
        assert first.signature.startswith("mock-sig-")
        assert all(not event.delta.HasField("reasoning") for event in events[1:])
        assert events[-1].final.usage.reasoning_tokens == 8

    def test_model_without_reasoning_refuses_as_unsupported(self, stub) -> None:
        """A model configured `reasoning: false` refuses UNSUPPORTED_FEATURE naming settings.reasoning."""
        request = _thinking(_request("plain", _user("Why?")), effort=chat_pb2.REASONING_EFFORT_LOW)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(request, timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FEATURE")
        assert "settings.reasoning" in str(error)


def _fields(request: ppb.ProviderServiceChatRequest) -> dict[str, object]:
    return {field.name: value for field, value in request.ListFields()}


def _embed(
    model: str, *inputs: str, dimensions: int | None = None, **mock_options: object
) -> ppb.ProviderServiceEmbedRequest:
    extensions = struct_pb2.Struct()
    if mock_options:
        extensions.update({"mock": mock_options})
    return ppb.ProviderServiceEmbedRequest(model=model, inputs=inputs, dimensions=dimensions, extensions=extensions)


class TestMockEmbeddings:
    def test_vectors_are_deterministic_unit_vectors(self, stub) -> None:
        """Same text, same vector (across calls); different texts differ; every vector has length 1."""
        first = stub.Embed(_embed("embedder", "alpha", "beta", "alpha"), timeout=5)
        again = stub.Embed(_embed("embedder", "alpha"), timeout=5)
        vectors = [list(e.values) for e in first.embeddings]
        assert [e.index for e in first.embeddings] == [0, 1, 2]
        assert vectors[0] == vectors[2] == list(again.embeddings[0].values)
        assert vectors[0] != vectors[1]
        assert all(len(v) == 8 and abs(sum(x * x for x in v) - 1) < 1e-5 for v in vectors)
        assert first.usage.input_tokens == 3
        assert first.response_model == "embedder"

    def test_dimensions_shorten(self, stub) -> None:
        """`dimensions` below the model's gives shorter unit vectors; above it is INVALID_ARGUMENT on the field."""
        short = stub.Embed(_embed("embedder", "alpha", dimensions=4), timeout=5)
        assert len(short.embeddings[0].values) == 4
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(_embed("embedder", "alpha", dimensions=9), timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert MeshError.from_rpc_error(refused.value).field == "dimensions"

    def test_chat_model_refuses_embeddings(self, stub) -> None:
        """A mock model without `dimensions` answers FAILED_PRECONDITION EMBEDDINGS_UNSUPPORTED."""
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(_embed("steady", "alpha"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert MeshError.from_rpc_error(refused.value).reason == "EMBEDDINGS_UNSUPPORTED"

    def test_bad_inputs_name_the_field(self, stub) -> None:
        """No inputs, or a blank one, is INVALID_ARGUMENT naming `inputs` / `inputs[1]`."""
        for request, field in ((_embed("embedder"), "inputs"), (_embed("embedder", "a", " "), "inputs[1]")):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Embed(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert MeshError.from_rpc_error(refused.value).field == field

    def test_injected_failure(self, stub) -> None:
        """extensions.mock.fail_code works for embeddings as for chat."""
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(_embed("embedder", "alpha", fail_code="UNAVAILABLE"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


class TestMockRefusal:
    def test_scripted_refusal_unary_and_stream(self, stub) -> None:
        """extensions.mock.refusal declines: Message.refusal (streams: refusal deltas), no text, FINISH_REASON_REFUSAL."""
        request = _request("tail", _user("Bad?"), refusal="I can't help with that.")
        unary = stub.Chat(request, timeout=5)
        assert (unary.message.refusal, list(unary.message.content)) == ("I can't help with that.", [])
        assert unary.finish_reason == chat_pb2.FINISH_REASON_REFUSAL
        events = list(stub.StreamChat(ppb.ProviderServiceStreamChatRequest(**_fields(request)), timeout=5))
        assert "".join(event.delta.refusal for event in events[:-1]) == "I can't help with that."
        assert all(not event.delta.text for event in events[:-1])
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_REFUSAL


class TestMockLogprobs:
    def test_one_made_up_token_per_word_unary_and_stream(self, stub) -> None:
        """settings.logprobs: one TokenLogprob per word, top_logprobs alternatives, the same on both paths."""
        request = _request("tail", _user("a b"))
        request.settings.logprobs = True
        request.settings.top_logprobs = 2
        unary = stub.Chat(request, timeout=5)
        events = list(stub.StreamChat(ppb.ProviderServiceStreamChatRequest(**_fields(request)), timeout=5))
        streamed = [item for event in events[:-1] for item in event.delta.logprobs]
        assert list(unary.message.logprobs) == streamed
        assert "".join(item.token for item in streamed) == "".join(event.delta.text for event in events[:-1])
        assert [len(item.top_logprobs) for item in streamed] == [2] * len(streamed)


class TestMockCitations:
    def test_made_up_citation_spans_the_answer_unary_and_stream(self, stub) -> None:
        """citations: true gives one deterministic URL citation over the whole text, the same on both paths."""
        request = _request("tail", _user("a b"), citations=True)
        unary = stub.Chat(request, timeout=5)
        [citation] = unary.message.citations
        text = "".join(part.text for part in unary.message.content)
        assert (citation.kind, citation.start_index, citation.end_index) == (chat_pb2.CITATION_KIND_URL, 0, len(text))
        assert citation.url.startswith("https://mock.invalid/sources/")
        assert stub.Chat(request, timeout=5).message.citations[0] == citation
        events = list(stub.StreamChat(ppb.ProviderServiceStreamChatRequest(**_fields(request)), timeout=5))
        carriers = [event.delta for event in events[:-1] if event.delta.citations]
        assert [list(delta.citations) for delta in carriers] == [[citation]]
        assert not carriers[0].text
        assert events.index(next(e for e in events if e.delta.citations)) == len(events) - 2

    def test_given_citations_and_a_bad_one(self, stub) -> None:
        """A list of Citation objects comes back as given; one that is not a Citation is INVALID_ARGUMENT."""
        given = {"kind": "CITATION_KIND_DOCUMENT", "documentIndex": 0, "citedText": "x", "startIndex": 1, "endIndex": 2}
        response = stub.Chat(_request("tail", _user("a"), citations=[given]), timeout=5)
        assert response.message.citations[0] == chat_pb2.Citation(
            kind=chat_pb2.CITATION_KIND_DOCUMENT, document_index=0, cited_text="x", start_index=1, end_index=2
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(_request("tail", _user("a"), citations=[{"nope": 1}]), timeout=5)
        error = MeshError.from_rpc_error(caught.value)
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "extensions.mock.citations[0]")


class TestMockPromptCache:
    def _system(self) -> chat_pb2.Message:
        part = chat_pb2.ContentPart(text="one two three four five six", cache_control=chat_pb2.CacheControl())
        return chat_pb2.Message(role=chat_pb2.ROLE_SYSTEM, content=[part])

    def test_first_turn_writes_the_prefix_and_later_turns_read_it(self, stub) -> None:
        """The messages up to the breakpoint (4 + 6 words = 10 tokens): written on turn one, read after, both paths."""
        first = _request("tail", self._system(), _user("a b"))
        unary = stub.Chat(first, timeout=5)
        assert (unary.usage.input_tokens, unary.usage.cache_write_input_tokens, unary.usage.cached_input_tokens) == (
            16,
            10,
            0,
        )
        answer = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, content=[chat_pb2.ContentPart(text="ok")])
        later = _request("tail", self._system(), _user("a b"), answer, _user("c"))
        events = list(stub.StreamChat(ppb.ProviderServiceStreamChatRequest(**_fields(later)), timeout=5))
        usage = events[-1].final.usage
        assert (usage.cache_write_input_tokens, usage.cached_input_tokens) == (0, 10)

    def test_a_key_alone_caches_all_but_the_last_message(self, stub) -> None:
        """settings.prompt_cache.key without breakpoints: the prefix is every message but the last."""
        request = _request("tail", _user("a b c"), _user("d"))
        request.settings.prompt_cache.key = "k"
        assert stub.Chat(request, timeout=5).usage.cache_write_input_tokens == 7

    def test_no_breakpoint_no_cache_counts(self, stub) -> None:
        usage = stub.Chat(_request("tail", _user("a b")), timeout=5).usage
        assert (usage.cache_write_input_tokens, usage.cached_input_tokens) == (0, 0)

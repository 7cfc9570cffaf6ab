"""Deltas already waiting go out as one gRPC message; a paced stream still sends each chunk as it comes.

The merge rules on protobuf messages, then a mock adapter in its own process
over gRPC: a burst of chunks arrives in fewer messages with the same text and
logprobs, a paced stream in one message per chunk, and a burst longer than
the read-ahead bound in more than one message.
"""

from __future__ import annotations

import grpc
import pytest
import yaml
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from services.common.processes import ServiceProcess, start_service
from services.providers.coalesce import MAX_WAITING, merge

Event = ppb.ProviderServiceStreamChatResponse


def _delta(**fields: object) -> Event:
    return Event(delta=chat_pb2.ChatDelta(**fields))


class TestMergeRules:
    def test_text_and_logprobs_join_and_the_inputs_are_not_changed(self) -> None:
        batch = [
            _delta(text="Hel", logprobs=[chat_pb2.TokenLogprob(token="Hel", logprob=-0.1)]),
            _delta(text="lo", logprobs=[chat_pb2.TokenLogprob(token="lo", logprob=-0.2)]),
        ]
        [merged] = merge(batch)
        assert merged.delta.text == "Hello"
        assert [t.token for t in merged.delta.logprobs] == ["Hel", "lo"]
        assert [event.delta.text for event in batch] == ["Hel", "lo"]

    def test_kinds_do_not_mix_and_finals_and_citations_stand_alone(self) -> None:
        citation = chat_pb2.Citation(kind=chat_pb2.CITATION_KIND_URL, url="https://a.example")
        batch = [
            _delta(text="a"),
            _delta(refusal="no"),
            _delta(refusal=" way"),
            _delta(text="b"),
            _delta(citations=[citation]),
            _delta(text="c"),
            Event(final=ppb.ProviderStreamFinal(finish_reason=chat_pb2.FINISH_REASON_STOP)),
        ]
        shapes = [(e.WhichOneof("event"), e.delta.text, e.delta.refusal, len(e.delta.citations)) for e in merge(batch)]
        assert shapes == [
            ("delta", "a", "", 0),
            ("delta", "", "no way", 0),
            ("delta", "b", "", 0),
            ("delta", "", "", 1),
            ("delta", "c", "", 0),
            ("final", "", "", 0),
        ]

    def test_reasoning_joins_within_a_part_until_its_signature(self) -> None:
        def thought(text: str, index: int = 0, signature: str = "") -> Event:
            return _delta(reasoning=chat_pb2.ReasoningDelta(text=text, index=index, signature=signature))

        batch = [thought("Let "), thought("me", signature="sig"), thought(" more"), thought("next", index=1)]
        parts = [(e.delta.reasoning.index, e.delta.reasoning.text, e.delta.reasoning.signature) for e in merge(batch)]
        assert parts == [(0, "Let me", "sig"), (0, " more", ""), (1, "next", "")]

    def test_tool_call_fragments_join_per_call(self) -> None:
        def call(index: int, arguments: str, call_id: str = "", name: str = "") -> Event:
            fragment = chat_pb2.ToolCallDelta(index=index, id=call_id, name=name, arguments_json_delta=arguments)
            return _delta(tool_calls=[fragment])

        batch = [call(0, '{"a"', "c0", "f"), call(0, ": 1}"), call(1, "{}", "c1", "g"), call(1, "")]
        [merged] = merge(batch)
        calls = [(c.index, c.id, c.name, c.arguments_json_delta) for c in merged.delta.tool_calls]
        assert calls == [(0, "c0", "f", '{"a": 1}'), (1, "c1", "g", "{}")]


CONFIG = {"seed": 3, "models": [{"name": "steady"}]}


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("coalesce")
    config = workdir / "mock.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    process: ServiceProcess = start_service(
        ["-m", "services.providers.mock"], name="mock", workdir=workdir, env={"LLMMESH_MOCK_CONFIG": str(config)}
    )
    try:
        with grpc.insecure_channel(process.address) as channel:
            yield provider_service_pb2_grpc.ProviderServiceStub(channel)
    finally:
        process.terminate()


def _stream(stub, words: list[str], logprobs: bool = False, **mock: object) -> list[Event]:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": {"text": " ".join(words), **mock}})
    request = ppb.ProviderServiceChatRequest(
        model="steady",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="go")])],
        settings=chat_pb2.GenerationSettings(logprobs=logprobs),
        extensions=extensions,
    )
    return list(stub.StreamChat(request, timeout=20))


class TestOverGrpc:
    def test_a_burst_comes_in_fewer_messages_with_the_same_text_and_logprobs(self, stub) -> None:
        words = [f"w{i}" for i in range(40)]
        events = _stream(stub, words, logprobs=True)
        deltas = [event.delta for event in events[:-1]]
        assert events[-1].HasField("final")
        assert len(deltas) < len(words)
        assert "".join(d.text for d in deltas) == " ".join(words)
        assert [t.token.strip() for d in deltas for t in d.logprobs] == words

    def test_a_paced_stream_sends_each_chunk_as_it_comes(self, stub) -> None:
        words = ["one", "two", "three", "four"]
        events = _stream(stub, words, stream_chunk_delay_ms=150)
        assert [event.delta.text for event in events[:-1]] == ["one ", "two ", "three ", "four"]

    def test_a_burst_longer_than_the_read_ahead_bound_is_several_messages(self, stub) -> None:
        words = [f"w{i}" for i in range(MAX_WAITING * 2 + 10)]
        events = _stream(stub, words)
        assert len(events[:-1]) >= 3
        assert "".join(event.delta.text for event in events[:-1]) == " ".join(words)

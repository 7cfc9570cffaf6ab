"""Which answers and refusals move a request on to the next candidate (router → mock adapters, real processes).

Capability refusals (UNSUPPORTED_FEATURE) always move on; answers that end
in a content filter move on when the request's policy says so (unary, and
streams before the first delta). Each model's behaviour is scripted per
request through `extensions.mock.by_model`.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh

PRICE_A = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 0.0}  # $1 per input token
PRICE_B = {"input_per_mtok": 0.0, "output_per_mtok": 1_000_000.0}  # $1 per output token
ROUTING = {
    "providers": {
        "mock": {"kind": "mock"},
        "other": {"kind": "mock", "service": "llmmesh-provider-mock"},
    },
    "models": {
        "first": {"provider": "mock", "fallbacks": ["second"], "price": PRICE_A},
        "second": {"provider": "other", "price": PRICE_B},
        # Marked as not reasoning, though the mock model behind it would: only the router can skip it.
        "plain": {"provider": "mock", "upstream_model": "first", "reasoning": False, "fallbacks": ["second"]},
        "plain-alone": {"provider": "mock", "upstream_model": "first", "reasoning": False},
    },
    "auto": {"default_tier": "mixed", "tiers": {"mixed": {"models": ["plain-alone", "second"]}}},
}
MOCK_CONFIG = {"models": [{"name": "first"}, {"name": "second"}]}
UNSUPPORTED = {
    "fail_code": "INVALID_ARGUMENT",
    "fail_reason": "UNSUPPORTED_FEATURE",
    "fail_field": "settings.response_format.type",
    "fail_message": "settings.response_format.type: no schema-less JSON mode here",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("move-on")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _by_model(**models: dict[str, object]) -> struct_pb2.Struct:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": {"by_model": models}})
    return extensions


def _request(cls: type, scripts: struct_pb2.Struct, **routing: object) -> rpb.ChatRequest:
    return cls(
        model="first",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="a b c")])],
        extensions=scripts,
        routing=rpb.RoutingPolicy(**routing),
    )


async def _stream(stub, request: rpb.StreamChatRequest) -> list[rpb.StreamChatResponse]:
    return [event async for event in stub.StreamChat(request, timeout=10)]


def _outcomes(attempts) -> list[tuple[str, int, str]]:
    return [(a.model, a.outcome, a.reason) for a in attempts]


class TestUnsupportedFeature:
    async def test_unary_moves_on_to_a_candidate_that_can_serve(self, stub) -> None:
        """UNSUPPORTED_FEATURE from the primary is not the end: the fallback answers, the attempt says why."""
        response = await stub.Chat(_request(rpb.ChatRequest, _by_model(first=UNSUPPORTED)), timeout=10)
        assert response.model == "second"
        assert _outcomes(response.attempts) == [
            ("first", rpb.ATTEMPT_OUTCOME_FAILED, "UNSUPPORTED_FEATURE"),
            ("second", rpb.ATTEMPT_OUTCOME_SUCCEEDED, ""),
        ]
        assert response.attempts[0].moved_on_because == "mock cannot serve settings.response_format.type"

    async def test_stream_moves_on_before_the_first_delta(self, stub) -> None:
        """A stream refused for a feature falls back like any refusal before output."""
        events = await _stream(stub, _request(rpb.StreamChatRequest, _by_model(first=UNSUPPORTED)))
        final = events[-1].final
        assert final.model == "second"
        assert not final.continued
        assert _outcomes(final.attempts)[0] == ("first", rpb.ATTEMPT_OUTCOME_FAILED, "UNSUPPORTED_FEATURE")

    async def test_caller_sees_it_only_when_no_candidate_can_serve(self, stub) -> None:
        """When every candidate lacks the feature, the caller gets INVALID_ARGUMENT UNSUPPORTED_FEATURE naming the field."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_request(rpb.ChatRequest, _by_model(first=UNSUPPORTED, second=UNSUPPORTED)), timeout=10)
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.reason, error.field) == ("UNSUPPORTED_FEATURE", "settings.response_format.type")
        assert error.metadata["attempts"] == "2"


FILTERED = {"finish_reason": "content_filter", "text": ""}


class TestContentFilteredAnswers:
    async def test_unary_falls_back_when_the_policy_allows(self, stub) -> None:
        """A 200 ending in content filter moves on under fallback_on_content_filter; the breakers do not count it."""
        request = _request(rpb.ChatRequest, _by_model(first=FILTERED), fallback_on_content_filter=True)
        response = await stub.Chat(request, timeout=10)
        assert (response.model, response.finish_reason) == ("second", chat_pb2.FINISH_REASON_STOP)
        assert _outcomes(response.attempts) == [
            ("first", rpb.ATTEMPT_OUTCOME_FAILED, "CONTENT_FILTERED"),
            ("second", rpb.ATTEMPT_OUTCOME_SUCCEEDED, ""),
        ]
        assert response.attempts[0].moved_on_because == "content filtered; policy allows fallback"
        for _ in range(5):  # more than the breaker's consecutive_failures
            await stub.Chat(request, timeout=10)
        plain = await stub.Chat(_request(rpb.ChatRequest, _by_model()), timeout=10)
        assert _outcomes(plain.attempts) == [("first", rpb.ATTEMPT_OUTCOME_SUCCEEDED, "")]

    async def test_unary_keeps_the_filtered_answer_without_the_policy(self, stub) -> None:
        """Without the policy the filtered answer is the answer: one attempt, FINISH_REASON_CONTENT_FILTER."""
        response = await stub.Chat(_request(rpb.ChatRequest, _by_model(first=FILTERED)), timeout=10)
        assert (response.model, response.finish_reason) == ("first", chat_pb2.FINISH_REASON_CONTENT_FILTER)
        assert len(response.attempts) == 1

    async def test_unary_returns_the_filtered_answer_when_no_one_does_better(self, stub) -> None:
        """With the policy and every candidate filtered, the caller gets the primary's filtered answer, not an error."""
        scripts = _by_model(first=FILTERED, second=FILTERED)
        response = await stub.Chat(_request(rpb.ChatRequest, scripts, fallback_on_content_filter=True), timeout=10)
        assert (response.model, response.finish_reason) == ("first", chat_pb2.FINISH_REASON_CONTENT_FILTER)
        assert [a.model for a in response.attempts] == ["first", "second"]

    async def test_stream_falls_back_before_the_first_delta(self, stub) -> None:
        """A stream whose final is filtered before any delta falls back; usage and cost count both attempts at their own price."""
        request = _request(rpb.StreamChatRequest, _by_model(first=FILTERED), fallback_on_content_filter=True)
        events = await _stream(stub, request)
        final = events[-1].final
        assert (final.model, final.finish_reason) == ("second", chat_pb2.FINISH_REASON_STOP)
        assert _outcomes(final.attempts)[0] == ("first", rpb.ATTEMPT_OUTCOME_FAILED, "CONTENT_FILTERED")
        # The mock counts 7 input tokens for this prompt, 1 output token for an empty answer,
        # 5 for "[mock second] a b c".
        assert (final.usage.input_tokens, final.usage.output_tokens) == (7 + 7, 1 + 5)
        # first: 7 input tokens at $1 each; second: 5 output tokens at $1 each.
        assert final.estimated_cost_usd == pytest.approx(7 + 5)

    async def test_stream_after_output_keeps_the_filtered_final(self, stub) -> None:
        """After deltas a filtered final is the answer: no fallback even with the policy."""
        scripts = _by_model(first={"finish_reason": "content_filter", "text": "partial words"})
        events = await _stream(stub, _request(rpb.StreamChatRequest, scripts, fallback_on_content_filter=True))
        final = events[-1].final
        assert (final.model, final.finish_reason) == ("first", chat_pb2.FINISH_REASON_CONTENT_FILTER)
        assert len(final.attempts) == 1


REFUSED = {"refusal": "I can't help with that."}


class TestRefusedAnswers:
    async def test_unary_refusal_falls_back_under_the_content_filter_policy(self, stub) -> None:
        """A refusal moves on under fallback_on_content_filter, as it did when it counted as a content filter."""
        request = _request(rpb.ChatRequest, _by_model(first=REFUSED), fallback_on_content_filter=True)
        response = await stub.Chat(request, timeout=10)
        assert (response.model, response.finish_reason, response.message.refusal) == (
            "second",
            chat_pb2.FINISH_REASON_STOP,
            "",
        )
        assert _outcomes(response.attempts)[0] == ("first", rpb.ATTEMPT_OUTCOME_FAILED, "CONTENT_FILTERED")
        assert "refused" in response.attempts[0].message

    async def test_unary_refusal_is_the_answer_without_the_policy(self, stub) -> None:
        """Without the policy the caller gets the refusal: FINISH_REASON_REFUSAL and Message.refusal."""
        response = await stub.Chat(_request(rpb.ChatRequest, _by_model(first=REFUSED)), timeout=10)
        assert (response.model, response.finish_reason) == ("first", chat_pb2.FINISH_REASON_REFUSAL)
        assert response.message.refusal == "I can't help with that."

    async def test_stream_refusal_deltas_wait_so_the_stream_can_fall_back(self, stub) -> None:
        """Refusal deltas before any other output are held for the final: with the policy the stream falls
        back and the caller never sees the refusal."""
        request = _request(rpb.StreamChatRequest, _by_model(first=REFUSED), fallback_on_content_filter=True)
        events = await _stream(stub, request)
        assert (events[-1].final.model, events[-1].final.finish_reason) == ("second", chat_pb2.FINISH_REASON_STOP)
        assert all(not event.delta.refusal for event in events[:-1])
        assert "".join(event.delta.text for event in events[:-1]) == "[mock second] a b c"

    async def test_stream_refusal_reaches_the_caller_when_no_one_does_better(self, stub) -> None:
        """Every candidate refusing: the primary's refusal deltas, then its final with FINISH_REASON_REFUSAL."""
        scripts = _by_model(first=REFUSED, second={"refusal": "Nor can I."})
        events = await _stream(stub, _request(rpb.StreamChatRequest, scripts, fallback_on_content_filter=True))
        assert "".join(event.delta.refusal for event in events[:-1]) == "I can't help with that."
        final = events[-1].final
        assert (final.model, final.finish_reason) == ("first", chat_pb2.FINISH_REASON_REFUSAL)
        assert [a.model for a in final.attempts] == ["first", "second"]

    async def test_stream_refusal_without_the_policy_streams_as_it_came(self, stub) -> None:
        """Without the policy the held refusal deltas all arrive, before the final."""
        events = await _stream(stub, _request(rpb.StreamChatRequest, _by_model(first=REFUSED)))
        assert "".join(event.delta.refusal for event in events[:-1]) == "I can't help with that."
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_REFUSAL


def _reasoning_request(cls: type, model: str, reasoning: chat_pb2.ReasoningSettings) -> rpb.ChatRequest:
    return cls(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="a b c")])],
        settings=chat_pb2.GenerationSettings(reasoning=reasoning),
    )


HIGH = chat_pb2.ReasoningSettings(effort=chat_pb2.REASONING_EFFORT_HIGH, include_thoughts=True)


class TestReasoningCapability:
    async def test_model_that_does_not_reason_is_skipped(self, stub) -> None:
        """`reasoning: false` in the routing file: a request asking for reasoning moves on to one that reasons."""
        response = await stub.Chat(_reasoning_request(rpb.ChatRequest, "plain", HIGH), timeout=10)
        assert response.model == "second"
        assert response.message.content[0].WhichOneof("kind") == "reasoning"
        first = response.attempts[0]
        assert (first.model, first.reason) == ("plain", "UNSUPPORTED_FEATURE")
        assert first.moved_on_because == "mock cannot serve settings.reasoning"

    async def test_stream_skips_it_too(self, stub) -> None:
        """The same on a stream: the reasoning deltas come from the fallback."""
        events = await _stream(stub, _reasoning_request(rpb.StreamChatRequest, "plain", HIGH))
        assert events[-1].final.model == "second"
        assert any(event.delta.HasField("reasoning") for event in events[:-1])

    async def test_auto_skips_it_when_reasoning_is_asked_for(self, stub) -> None:
        """`auto` leaves out a model marked reasoning: false when the request asks for reasoning, and only then."""
        thinking = await stub.Chat(_reasoning_request(rpb.ChatRequest, "auto", HIGH), timeout=10)
        assert [a.model for a in thinking.attempts] == ["second"]
        plain = await stub.Chat(_reasoning_request(rpb.ChatRequest, "auto", chat_pb2.ReasoningSettings()), timeout=10)
        assert plain.model == "plain-alone"

    async def test_reasoning_turned_off_is_served(self, stub) -> None:
        """A budget of 0 asks for no reasoning: the model that does not reason serves it."""
        off = chat_pb2.ReasoningSettings(budget_tokens=0)
        response = await stub.Chat(_reasoning_request(rpb.ChatRequest, "plain", off), timeout=10)
        assert response.model == "plain"

    async def test_alone_it_is_refused_naming_the_setting(self, stub) -> None:
        """With no candidate that reasons, the caller gets INVALID_ARGUMENT naming settings.reasoning."""
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(_reasoning_request(rpb.ChatRequest, "plain-alone", HIGH), timeout=10)
        error = MeshError.from_rpc_error(info.value)
        assert (error.code, error.reason, error.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_FEATURE",
            "settings.reasoning",
        )

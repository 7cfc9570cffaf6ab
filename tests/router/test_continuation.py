"""Mid-stream continuation: only on candidates that can continue a prefix, never splicing tool calls.

Router → mock adapters as real processes. Provider `able` is marked
`continues_prefix` in the routing file; `mock` is not. The mock continues
an `assistant_prefix` its answer starts with, and logs the prefix it got.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh
from services.testing.streams import kind_runs, text_before

ROUTING = {
    "providers": {
        "mock": {"kind": "mock"},
        "able": {"kind": "mock", "service": "llmmesh-provider-mock", "continues_prefix": True},
    },
    "models": {
        "flaky": {"provider": "mock", "fallbacks": ["plain", "steady"]},
        "plain": {"provider": "mock"},
        "steady": {"provider": "able", "price": {"input_per_mtok": 0.0, "output_per_mtok": 1_000_000.0}},
        "tooly": {"provider": "mock", "fallbacks": ["steady"]},
        "lonely": {"provider": "mock", "fallbacks": ["plain"]},
    },
}
MOCK_CONFIG = {
    "models": [
        {"name": "flaky"},
        {"name": "plain"},
        {"name": "steady"},
        {"name": "tooly", "scripted": True},
        {"name": "lonely"},
    ],
    "scripts": [
        {"match": "weather", "turns": [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}]}
    ],
}
ANSWER = "one two three four"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("continue")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _request(model: str, *, cut: str, text: str = "tell me") -> rpb.StreamChatRequest:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": {"text": ANSWER, "by_model": {cut: {"stream_cut_after": 2}}}})
    if model == "tooly":
        extensions.update({"mock": {"by_model": {cut: {"stream_cut_after": 1}}}})
    return rpb.StreamChatRequest(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])],
        extensions=extensions,
        routing=rpb.RoutingPolicy(allow_mid_stream_continuation=True),
    )


async def _stream_error(stub, request: rpb.StreamChatRequest) -> tuple[list[str], str, MeshError]:
    """The kinds of events sent before the error (each run once), their text, and the error."""
    events: list[rpb.StreamChatResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.StreamChat(request, timeout=10):
            events.append(event)
    return kind_runs(events), "".join(event.delta.text for event in events), MeshError.from_rpc_error(caught.value)


class TestContinuation:
    async def test_continues_on_a_marked_candidate_with_the_prefix(self, stub, mesh) -> None:
        """A cut stream continues on the first candidate marked continues_prefix, named before it streams, from the prefix."""
        mesh.clear_events()
        events = [event async for event in stub.StreamChat(_request("flaky", cut="flaky"), timeout=10)]
        assert kind_runs(events) == ["delta", "continuation", "delta", "final"]
        assert text_before(events, "continuation") == "one two "
        [continued] = [event.continuation for event in events if event.HasField("continuation")]
        assert (continued.model, continued.provider) == ("steady", "able")
        assert "".join(event.delta.text for event in events) == ANSWER
        final = events[-1].final
        assert (final.model, final.continued) == ("steady", True)
        assert [(a.model, a.outcome) for a in final.attempts] == [
            ("flaky", rpb.ATTEMPT_OUTCOME_FAILED),
            ("plain", rpb.ATTEMPT_OUTCOME_SKIPPED),
            ("steady", rpb.ATTEMPT_OUTCOME_SUCCEEDED),
        ]
        assert "continues_prefix" in final.attempts[1].message
        starts = {event["model"]: event for event in mesh.events("start")}
        assert "plain" not in starts
        assert starts["steady"]["assistant_prefix"] == "one two "
        assert starts["steady"]["last_role"] == "ROLE_USER"  # the prefix is a field, not a message
        # The cut attempt reported no usage; the successor's 2 output tokens at its own price.
        assert final.usage.output_tokens == 2
        assert final.estimated_cost_usd == pytest.approx(2.0)

    async def test_continued_citations_span_the_whole_answer(self, stub) -> None:
        """The successor's citations span its own text; the caller gets them moved past the prefix already sent."""
        request = _request("flaky", cut="flaky")
        request.extensions.update(
            {"mock": {"text": ANSWER, "by_model": {"flaky": {"stream_cut_after": 2}, "steady": {"citations": True}}}}
        )
        events = [event async for event in stub.StreamChat(request, timeout=10)]
        [citation] = [c for event in events for c in event.delta.citations]
        assert (citation.start_index, citation.end_index) == (len("one two "), len(ANSWER))
        assert ANSWER[citation.start_index : citation.end_index] == citation.cited_text == "three four"

    async def test_tool_call_deltas_are_never_spliced(self, stub, mesh) -> None:
        """A stream that already sent tool-call deltas fails instead of continuing."""
        mesh.clear_events()
        kinds, _, error = await _stream_error(stub, _request("tooly", cut="tooly", text="weather in Oslo"))
        assert kinds == ["delta"]
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert "tool-call deltas were sent" in error.message
        assert [event["model"] for event in mesh.events("start")] == ["tooly"]

    async def test_no_marked_candidate_fails_the_stream(self, stub, mesh) -> None:
        """Without a candidate that can continue a prefix the stream fails clearly; the others are not called."""
        mesh.clear_events()
        kinds, sent, error = await _stream_error(stub, _request("lonely", cut="lonely"))
        assert (kinds, sent) == (["delta"], "one two ")
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "STREAM_TRUNCATED")
        assert "no candidate able to continue it is left" in error.message
        assert [event["model"] for event in mesh.events("start")] == ["lonely"]

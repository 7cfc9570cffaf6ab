"""RouterService through real processes: router → mock adapter over loopback gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh
from services.testing.streams import kind_runs


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


def _mock_options(**options: object) -> struct_pb2.Struct:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": options})
    return extensions


async def _error_of(call: object) -> MeshError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return MeshError.from_rpc_error(caught.value)


class TestChat:
    async def test_unary_answer_names_model_provider_and_attempt(self, router_stub, mesh: MockMesh) -> None:
        """A unary chat is answered by the mock and lists the one attempt that served it."""
        response = await router_stub.Chat(rpb.ChatRequest(model="mock-small", messages=[_user("hi there")]), timeout=5)
        assert response.message.content[0].text == "[mock mock-small] hi there"
        assert response.message.role == chat_pb2.ROLE_ASSISTANT
        assert (response.model, response.provider, response.response_model) == ("mock-small", "mock", "mock-small")
        assert response.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert response.usage.input_tokens == 6
        assert [(a.model, a.outcome) for a in response.attempts] == [("mock-small", rpb.ATTEMPT_OUTCOME_SUCCEEDED)]
        assert response.attempts[0].instance == mesh.mocks[0].address

    async def test_stream_ends_with_one_final(self, router_stub) -> None:
        """Streaming yields deltas that add up to the answer, then exactly one final message, last."""
        events = [
            event
            async for event in router_stub.StreamChat(
                rpb.StreamChatRequest(model="mock-large", messages=[_user("one two three")]), timeout=5
            )
        ]
        kinds = [event.WhichOneof("event") for event in events]
        assert kinds[-1] == "final"
        assert kinds.count("final") == 1
        assert "".join(e.delta.text for e in events[:-1]) == "[mock mock-large] one two three"
        assert events[-1].final.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert events[-1].final.model == "mock-large"

    async def test_scripted_tool_calls_arrive_as_tool_calls(self, router_stub) -> None:
        """The scripted mock model answers with the tool calls its script names."""
        response = await router_stub.Chat(
            rpb.ChatRequest(model="mock-agent", messages=[_user("what is the monthly total?")]), timeout=5
        )
        assert response.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        assert [(c.name, c.arguments_json) for c in response.message.tool_calls] == [
            ("current_time", '{"timezone": "UTC"}'),
            ("calculator", '{"expression": "1234 * 12"}'),
        ]

    async def test_list_models_marks_mock_and_availability(self, router_stub) -> None:
        """ListModels lists every routed model, marked as mock, and reports availability."""
        response = await router_stub.ListModels(rpb.ListModelsRequest(), timeout=5)
        by_name = {model.name: model for model in response.models}
        assert set(by_name) == {"mock-small", "mock-large", "mock-agent"}
        assert all(model.mock and model.available for model in by_name.values())
        assert response.next_page_token == ""

    async def test_list_models_a_page_at_a_time(self, router_stub) -> None:
        """Pages of 2 walk the same list as one call, each model once, and the last page has no token."""
        everything = [m.name for m in (await router_stub.ListModels(rpb.ListModelsRequest(), timeout=5)).models]
        seen: list[str] = []
        token = ""
        for _ in range(len(everything) + 1):
            page = await router_stub.ListModels(rpb.ListModelsRequest(page_size=2, page_token=token), timeout=5)
            assert len(page.models) <= 2
            seen += [m.name for m in page.models]
            token = page.next_page_token
            if not token:
                break
        assert seen == everything

    @pytest.mark.parametrize(
        ("request_fields", "field", "words"),
        [
            ({"page_size": -1}, "page_size", "send 0 for every model"),
            ({"page_size": 1001}, "page_size", "the most is 1000"),
            ({"page_size": 1, "page_token": "not-a-token"}, "page_token", "send next_page_token as it came"),
            # A well-formed token naming a model no longer in the table (after a reload).
            ({"page_size": 1, "page_token": "YWZ0ZXI6Z29uZS1tb2RlbA"}, "page_token", "list again without page_token"),
        ],
    )
    async def test_list_models_bad_page_requests(self, router_stub, request_fields, field, words) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await router_stub.ListModels(rpb.ListModelsRequest(**request_fields), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in caught.value.details()
        assert field in caught.value.details()


class TestBadInput:
    @pytest.mark.parametrize(
        ("request_fields", "field"),
        [
            ({"model": "mock-small"}, "messages"),
            ({"model": "", "messages": [_user("hi")]}, "model"),
            (
                {
                    "model": "mock-small",
                    "messages": [chat_pb2.Message(role=7, content=[chat_pb2.ContentPart(text="x")])],
                },
                "messages[0].role",
            ),
            (
                {"model": "mock-small", "messages": [chat_pb2.Message(content=[chat_pb2.ContentPart(text="x")])]},
                "messages[0].role",
            ),
            (
                {
                    "model": "mock-small",
                    "messages": [_user("hi")],
                    "settings": chat_pb2.GenerationSettings(max_output_tokens=-5),
                },
                "settings.max_output_tokens",
            ),
            (
                {
                    "model": "mock-small",
                    "messages": [_user("hi")],
                    "settings": chat_pb2.GenerationSettings(max_output_tokens=2_000_000_000),
                },
                "settings.max_output_tokens",
            ),
            ({"model": "mock-small", "messages": [_user("hi"), _user("x" * (17 * 1024 * 1024))]}, "messages[1]"),
            ({"model": "mock-small", "messages": [chat_pb2.Message(role=chat_pb2.ROLE_USER)]}, "messages[0].content"),
        ],
        ids=[
            "no-messages",
            "empty-model",
            "unknown-role",
            "unset-role",
            "negative-max-tokens",
            "absurd-max-tokens",
            "oversized",
            "empty-content",
        ],
    )
    async def test_invalid_argument_names_the_field(self, router_stub, request_fields: dict, field: str) -> None:
        """Each bad input is INVALID_ARGUMENT with a BadRequest detail naming the field and a message that starts with it."""
        error = await _error_of(router_stub.Chat(rpb.ChatRequest(**request_fields), timeout=10))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == field
        assert error.message.startswith(field + ":")

    async def test_unknown_model_lists_close_matches(self, router_stub) -> None:
        """An unknown model is NOT_FOUND and the message names the closest known models."""
        error = await _error_of(router_stub.Chat(rpb.ChatRequest(model="mock-smal", messages=[_user("hi")]), timeout=5))
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.reason == "MODEL_NOT_FOUND"
        assert "'mock-small'" in error.message
        assert error.metadata["close_matches"].split(",")[0] == "mock-small"


class TestDeadlines:
    async def test_slow_provider_past_caller_deadline(self, router_stub, mesh: MockMesh) -> None:
        """A mock slower than the caller's deadline gives DEADLINE_EXCEEDED, and the mock's call is cancelled."""
        mesh.clear_events()
        request = rpb.ChatRequest(model="mock-large", messages=[_user("slow")], extensions=_mock_options(delay_ms=3000))
        error = await _error_of(router_stub.Chat(request, timeout=0.5))
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        # The adapter sees its call cancelled (the deadline travelled with the attempt).
        for _ in range(100):
            if mesh.events("cancelled"):
                break
            await asyncio.sleep(0.02)
        assert [e["model"] for e in mesh.events("cancelled")] == ["mock-large"]


class TestStreamsEndHonestly:
    async def test_cut_stream_is_an_error_not_an_answer(self, router_stub) -> None:
        """An adapter stream that stops without its final message fails the caller's stream with UNAVAILABLE."""
        request = rpb.StreamChatRequest(
            model="mock-large", messages=[_user("a b c d e f")], extensions=_mock_options(stream_cut_after=2)
        )
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in router_stub.StreamChat(request, timeout=5):
                received.append(event)
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == "STREAM_TRUNCATED"
        # The two chunks before the cut, however many messages carried them.
        assert kind_runs(received) == ["delta"]
        assert "".join(event.delta.text for event in received) == "[mock mock-large] "

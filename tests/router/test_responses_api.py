"""POST /v1/responses on the HTTP door, driven by real clients against a live router and mock adapter.

The openai SDK (`client.responses.create`, `.parse`, `.stream`), the OpenAI
Agents SDK's default model (OpenAIResponsesModel) and LangChain's ChatOpenAI
with the Responses API on. Raw HTTP checks (httpx2) pin the event order and
the error bodies the SDKs hide.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest
from pydantic import BaseModel

from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, http_port_of

FUNCTION_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": name,
        "description": f"the {name} tool",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
    }
    for name in ("current_time", "calculator")
]
MONTHLY = "what is the monthly total?"
OBSERVED = "Observed: current_time = 12:00; calculator = 14808."


def _mock(**options: Any) -> dict[str, Any]:
    """An extra_body that scripts the mock for one request and turns off router retries."""
    return {"llmmesh": {"max_retries": 0, "extensions": {"mock": options}}}


@pytest.fixture(scope="module")
def responses_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    with MockMesh(
        mock_config=MOCK_CONFIG,
        routing=ROUTING,
        env={"LLMMESH_HTTP_PORT": "0"},
        workdir=tmp_path_factory.mktemp("responses-mesh"),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(responses_mesh: MockMesh) -> str:
    return f"http://127.0.0.1:{http_port_of(responses_mesh)}"


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=20) as sdk:
        yield sdk


@pytest.fixture
async def raw(base_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=base_url, timeout=20) as http:
        yield http


def _events(body: str) -> list[dict[str, Any]]:
    """The SSE body's events; each `event:` line must match its data's type."""
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        events.append(event)
    return events


class TestUnary:
    async def test_string_input_and_instructions(self, client: openai.AsyncOpenAI, responses_mesh: MockMesh) -> None:
        """A string input with instructions answers as a completed response with one output_text."""
        response = await client.responses.create(model="small", input="hi there", instructions="be brief")
        assert response.object == "response"
        assert response.id.startswith("resp_")
        assert response.status == "completed"
        assert response.model == "mock-small"
        assert response.output_text == "[mock mock-small] hi there"
        assert [item.type for item in response.output] == ["message"]
        assert response.instructions == "be brief"
        assert response.usage is not None
        assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
        started = responses_mesh.events("start")[-1]
        assert (started["messages"], started["last_role"]) == (2, "ROLE_USER")

    async def test_item_input_with_roles_and_parts(self, client: openai.AsyncOpenAI) -> None:
        """Message items (developer, user with input_text parts, assistant output_text) map in order."""
        response = await client.responses.create(
            model="mock-small",
            input=[
                {"role": "developer", "content": "answer in one word"},
                {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "ok", "annotations": []}],
                },
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
            ],
        )
        assert response.output_text == "[mock mock-small] second"

    async def test_mesh_headers_and_fields(self, raw: httpx2.AsyncClient) -> None:
        """Unary answers carry the attempts header, the provider and the llmmesh field, as chat does."""
        reply = await raw.post("/v1/responses", json={"model": "mock-small", "input": "hi"})
        assert reply.status_code == 200
        body = reply.json()
        assert reply.headers["x-request-id"] == body["id"]
        assert reply.headers["x-llmmesh-provider"] == "mock"
        assert json.loads(reply.headers["x-llmmesh-attempts"])[0]["model"] == "mock-small"
        assert body["llmmesh"]["attempts"][0]["outcome"] == "succeeded"
        assert body["store"] is False
        assert body["output"][0]["content"][0] == {
            "type": "output_text",
            "text": "[mock mock-small] hi",
            "annotations": [],
            "logprobs": [],
        }

    async def test_structured_output_with_parse(self, client: openai.AsyncOpenAI) -> None:
        """`responses.parse(text_format=...)` sends text.format json_schema and parses the JSON answer."""

        class Trip(BaseModel):
            city: str
            days: int

        response = await client.responses.parse(
            model="mock-small",
            input="plan a trip",
            text_format=Trip,
            extra_body=_mock(text='{"city": "Paris", "days": 3}'),
        )
        assert response.output_parsed == Trip(city="Paris", days=3)
        assert response.text is not None
        assert response.text.format is not None
        assert response.text.format.type == "json_schema"

    async def test_length_stop_is_incomplete(self, client: openai.AsyncOpenAI) -> None:
        """An answer cut by max_output_tokens is status incomplete, with the reason."""
        response = await client.responses.create(
            model="mock-small", input="hi", max_output_tokens=16, extra_body=_mock(finish_reason="length")
        )
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.max_output_tokens == 16


class TestTools:
    async def test_function_call_round_trip(self, client: openai.AsyncOpenAI) -> None:
        """function_call items come out; their output items go back with the calls and the model answers."""
        first = await client.responses.create(model="mock-agent", input=MONTHLY, tools=FUNCTION_TOOLS)
        calls = [item for item in first.output if item.type == "function_call"]
        assert [(call.name, json.loads(call.arguments)) for call in calls] == [
            ("current_time", {"timezone": "UTC"}),
            ("calculator", {"expression": "1234 * 12"}),
        ]
        assert first.output[0].type == "message"  # the text before the calls
        outputs = [
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "12:00"},
            {"type": "function_call_output", "call_id": calls[1].call_id, "output": "14808"},
        ]
        second = await client.responses.create(
            model="mock-agent",
            input=[{"role": "user", "content": MONTHLY}, *[item.model_dump() for item in first.output], *outputs],
            tools=FUNCTION_TOOLS,
            tool_choice={"type": "function", "name": "calculator"},
        )
        # The tool names come from the function_call items: outputs carry only the call_id.
        assert second.output_text == OBSERVED

    async def test_streamed_calls_in_event_order(self, raw: httpx2.AsyncClient) -> None:
        """A streamed tool turn: text item closed first, then each call's added, argument deltas, done."""
        reply = await raw.post(
            "/v1/responses", json={"model": "mock-agent", "input": MONTHLY, "tools": FUNCTION_TOOLS, "stream": True}
        )
        assert reply.status_code == 200
        events = _events(reply.text)
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        kinds = [event["type"] for event in events]
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        text_done = kinds.index("response.output_text.done")
        assert kinds[text_done : text_done + 4] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
        ]
        done = [event for event in events if event["type"] == "response.function_call_arguments.done"]
        assert [(event["name"], json.loads(event["arguments"])) for event in done] == [
            ("current_time", {"timezone": "UTC"}),
            ("calculator", {"expression": "1234 * 12"}),
        ]
        assert kinds[-1] == "response.completed"
        final = events[-1]["response"]
        assert [item["type"] for item in final["output"]] == ["message", "function_call", "function_call"]
        assert final["output"][1]["arguments"] == done[0]["arguments"]
        assert final["usage"]["output_tokens"] > 0


class TestStreaming:
    async def test_text_stream_event_order(self, raw: httpx2.AsyncClient) -> None:
        """A text stream sends OpenAI's events in order and ends with response.completed, no [DONE]."""
        reply = await raw.post("/v1/responses", json={"model": "mock-small", "input": "one two three", "stream": True})
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = _events(reply.text)
        kinds = [event["type"] for event in events]
        deltas = kinds.count("response.output_text.delta")
        assert deltas >= 1  # however many messages the adapter's chunks came in
        assert kinds == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            *["response.output_text.delta"] * deltas,
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
        assert text == "[mock mock-small] one two three"
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
        assert events[0]["response"]["status"] == "in_progress"
        assert "[DONE]" not in reply.text

    async def test_sdk_stream_helper_final_response(self, client: openai.AsyncOpenAI) -> None:
        """The SDK's `responses.stream` helper accumulates the events into the same final response."""
        async with client.responses.stream(model="mock-small", input="stream me") as stream:
            deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        assert "".join(deltas) == final.output_text == "[mock mock-small] stream me"
        assert final.status == "completed"

    async def test_create_stream_true(self, client: openai.AsyncOpenAI) -> None:
        """`responses.create(stream=True)` yields typed events ending in response.completed."""
        stream = await client.responses.create(model="mock-small", input="hi", stream=True)
        kinds = [event.type async for event in stream]
        assert kinds[0] == "response.created"
        assert kinds[-1] == "response.completed"

    async def test_failure_after_output_is_response_failed(self, raw: httpx2.AsyncClient) -> None:
        """A stream cut after output ends with response.failed carrying the error, never response.completed."""
        body = {"model": "mock-small", "input": "one two three four", "stream": True, **_mock(stream_cut_after=2)}
        reply = await raw.post("/v1/responses", json=body)
        assert reply.status_code == 200
        events = _events(reply.text)
        assert events[-1]["type"] == "response.failed"
        failed = events[-1]["response"]
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "server_error"
        assert "truncated" in failed["error"]["message"]
        assert "response.completed" not in [event["type"] for event in events]

    async def test_failure_before_output_is_an_http_status(self, client: openai.AsyncOpenAI) -> None:
        """A stream that fails before any output gets the HTTP status, as chat streams do."""
        with pytest.raises(openai.RateLimitError):
            await client.responses.create(
                model="mock-small", input="hi", stream=True, extra_body=_mock(fail_code="RESOURCE_EXHAUSTED")
            )


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "param", "words"),
        [
            ({"previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
            ({"store": True}, "store", "stateless"),
            ({"conversation": "conv_1"}, "conversation", "stateless"),
            ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "stateless"),
            ({"tools": [{"type": "web_search"}]}, "tools[0].type", "function tools only"),
            (
                {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
                "input[0].content[0].text",
                "required",
            ),
            ({"input": [{"role": "user", "content": ""}]}, "input[0]", "empty"),
            ({"input": ""}, "input", "empty"),
            ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "required"),
            ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", "required"),
            ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name", "not in tools"),
            ({"temperature": 9}, "temperature", "temperature"),
        ],
    )
    async def test_bad_input_names_the_responses_field(
        self, raw: httpx2.AsyncClient, body: dict[str, Any], param: str, words: str
    ) -> None:
        """Refusals are 400s whose param is the field as the caller sent it in a Responses body."""
        reply = await raw.post("/v1/responses", json={"model": "mock-small", "input": "hi", **body})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["param"] == param
        assert words in error["message"]
        assert error["message"].startswith(param) or param in error["message"]

    async def test_store_false_and_nulls_are_accepted(self, raw: httpx2.AsyncClient) -> None:
        """store false, previous_response_id null and stream null are the stateless defaults, not errors."""
        body = {"model": "mock-small", "input": "hi", "store": False, "previous_response_id": None, "stream": None}
        reply = await raw.post("/v1/responses", json=body)
        assert reply.status_code == 200, reply.text

    async def test_unknown_model_is_not_found(self, client: openai.AsyncOpenAI) -> None:
        """An unknown model is the SDK's NotFoundError naming `model`."""
        with pytest.raises(openai.NotFoundError) as caught:
            await client.responses.create(model="no-such-model", input="hi")
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "model"


class TestAgentsSdk:
    @pytest.fixture
    def run_config(self, client: openai.AsyncOpenAI) -> Any:
        agents = pytest.importorskip("agents")
        agents.set_tracing_disabled(True)  # no trace export to api.openai.com
        provider = agents.OpenAIProvider(openai_client=client, use_responses=True)
        return agents.RunConfig(model_provider=provider, tracing_disabled=True)

    @staticmethod
    def _agent() -> Any:
        import agents

        @agents.function_tool
        def current_time(timezone: str) -> str:
            """The time now."""
            return "12:00"

        @agents.function_tool
        def calculator(expression: str) -> str:
            """Evaluates arithmetic."""
            return "14808"

        return agents.Agent(name="accountant", model="mock-agent", tools=[current_time, calculator])

    async def test_default_model_runs_tools_to_an_answer(self, run_config: Any) -> None:
        """The Agents SDK's Responses model calls both tools through the door and gets the final answer."""
        import agents

        result = await agents.Runner.run(self._agent(), MONTHLY, run_config=run_config)
        assert result.final_output == OBSERVED

    async def test_streamed_run(self, run_config: Any) -> None:
        """A streamed agent run over Responses events ends with the same answer."""
        import agents

        result = agents.Runner.run_streamed(self._agent(), MONTHLY, run_config=run_config)
        kinds = [event.type async for event in result.stream_events()]
        assert "raw_response_event" in kinds
        assert result.final_output == OBSERVED


class TestLangChain:
    @pytest.fixture
    async def chat(self, base_url: str) -> AsyncIterator[Any]:
        langchain_openai = pytest.importorskip("langchain_openai")
        # Its own HTTP client: LangChain's cached default outlives each test's event loop.
        async with openai.DefaultAsyncHttpxClient() as http:
            yield langchain_openai.ChatOpenAI(
                model="mock-agent",
                base_url=f"{base_url}/v1",
                api_key="unused",
                use_responses_api=True,
                max_retries=0,
                timeout=20,
                http_async_client=http,
            )

    async def test_tool_calls_and_results(self, chat: Any) -> None:
        """ChatOpenAI on the Responses API: tool calls come back, ToolMessages go in, the answer follows."""
        from langchain_core.messages import HumanMessage, ToolMessage

        tools = [{"type": "function", "function": tool_spec} for tool_spec in _chat_tools()]
        bound = chat.bind_tools(tools)
        question = HumanMessage(MONTHLY)
        first = await bound.ainvoke([question])
        assert [call["name"] for call in first.tool_calls] == ["current_time", "calculator"]
        results = [
            ToolMessage("12:00", tool_call_id=first.tool_calls[0]["id"]),
            ToolMessage("14808", tool_call_id=first.tool_calls[1]["id"]),
        ]
        second = await bound.ainvoke([question, first, *results])
        assert second.text == OBSERVED

    async def test_stream(self, chat: Any) -> None:
        """Streaming with the Responses API adds up to the unary answer."""
        pieces = [chunk.text async for chunk in chat.astream("no script here")]
        assert "".join(pieces) == "[mock] no script matches: no script here"


def _chat_tools() -> list[dict[str, Any]]:
    return [{key: tool[key] for key in ("name", "description", "parameters")} for tool in FUNCTION_TOOLS]

"""The HTTP door speaks in its own terms: OpenAI's wording, the caller's field names, HTTP not gRPC.

One router (tenant keys, the HTTP door) and one mock adapter as real
processes; requests over loopback with httpx2, the openai SDK and LangChain.
Covers context-window errors worded as OpenAI words them, field names as
sent, HTTP wording in auth errors, no pydantic class names, Retry-After of
at least 1, who answered a stream, logprobs' field names, the deprecated
`functions` / `function_call` mapped, history turns as OpenAI returns them
(refusals, tool-call-only turns, empty turns) and `top_p: 0`.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import httpx2
import openai
import pytest
from langchain_core.exceptions import ContextOverflowError
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from llmmesh.v1 import chat_pb2
from services.router import openai_request, responses_request
from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, TOOLS, USER, _wait_for_event, http_port_of
from tests.security.helpers import write_tenants

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}
# The gateway tests' models and an embedding model.
MOCK: dict[str, Any] = {**MOCK_CONFIG, "models": [*MOCK_CONFIG["models"], {"name": "vec-a", "dimensions": 8}]}
ROUTES: dict[str, Any] = {**ROUTING, "models": {**ROUTING["models"], "vec-a": {"provider": "mock", "dimensions": 8}}}
KEY = "llmk_door-terms-0123456789abcdefghijklmnopqrstu"
KEY_NARROW = "llmk_door-narrow-0123456789abcdefghijklmnopqrs"
LONG = [{"role": "user", "content": "word " * 9000}]  # above mock-small's 8192-token window
# OpenAI's sentence, which LiteLLM's exception mapping and others match on.
OPENAI_CONTEXT = "This model's maximum context length is"
# Every class of the door's request models: none may appear in an error message.
CLASS_NAMES = {
    name
    for module in (openai_request, responses_request)
    for name, value in inspect.getmembers(module, inspect.isclass)
    if issubclass(value, BaseModel) and value.__module__ == module.__name__
}


def _mock(**options: Any) -> dict[str, Any]:
    return {"llmmesh": {"max_retries": 0, "extensions": {"mock": options}}}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    workdir = tmp_path_factory.mktemp("door-terms")
    tenants = write_tenants(
        workdir / "tenants.yaml",
        [
            {"name": "open", "keys": [KEY], "allowed_models": ["*"]},
            {"name": "narrow", "keys": [KEY_NARROW], "allowed_models": ["mock-small"]},
        ],
    )
    env = {"LLMMESH_AUTH_FILE": str(tenants), "LLMMESH_HTTP_PORT": "0"}
    with MockMesh(workdir=workdir, mock_config=MOCK, routing=ROUTES, env=env) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(mesh: MockMesh) -> str:
    return f"http://127.0.0.1:{http_port_of(mesh)}"


@pytest.fixture
async def raw(base_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=base_url, timeout=20, headers={"authorization": f"Bearer {KEY}"}) as http:
        yield http


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=20) as sdk:
        yield sdk


async def _chat(raw: httpx2.AsyncClient, **body: Any) -> httpx2.Response:
    return await raw.post("/v1/chat/completions", json={"model": "mock-small", "messages": USER, **body})


def _error(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def _start(mesh: MockMesh) -> dict[str, Any]:
    """The mock's last `start` event (it records message counts and the last text, not whole requests)."""
    found: list[dict[str, Any]] = await _wait_for_event(mesh, "start")
    return found[-1]


def _sse(body: str) -> list[dict[str, Any]]:
    data = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    return [json.loads(item) for item in data if item != "[DONE]"]


class TestContextWindow:
    async def test_chat_error_in_openai_wording(self, raw: httpx2.AsyncClient) -> None:
        """OpenAI's code and sentence, with the window and the prompt's size; the mesh's detail follows."""
        error = _error(await _chat(raw, messages=LONG), 400)
        assert error["code"] == "context_length_exceeded"
        assert re.match(
            rf"{OPENAI_CONTEXT} 8192 tokens\. However, your messages resulted in \d+ tokens\. "
            r"Please reduce the length of the messages\.",
            error["message"],
        ), error["message"]
        assert "(context_length_exceeded: prompt is" in error["message"]
        assert "mock-small" in error["message"]

    async def test_stream_and_responses_say_the_same(self, raw: httpx2.AsyncClient) -> None:
        """A stream refused before its first token and the Responses API carry the same wording."""
        streamed = _error(await _chat(raw, messages=LONG, stream=True), 400)
        responses = _error(await raw.post("/v1/responses", json={"model": "mock-small", "input": "word " * 9000}), 400)
        for error in (streamed, responses):
            assert error["code"] == "context_length_exceeded"
            assert error["message"].startswith(f"{OPENAI_CONTEXT} 8192 tokens."), error["message"]

    async def test_langchain_classifies_it_as_context_overflow(self, base_url: str) -> None:
        """langchain-openai turns the 400 into its ContextOverflowError (what its fallbacks catch)."""
        model = ChatOpenAI(
            model="mock-small", base_url=f"{base_url}/v1", api_key=SecretStr(KEY), max_retries=0, timeout=20
        )
        with pytest.raises(ContextOverflowError):
            await model.ainvoke("word " * 9000)


class TestFieldNamesAsSent:
    async def test_unknown_fallback_names_the_llmmesh_field(self, raw: httpx2.AsyncClient) -> None:
        error = _error(await _chat(raw, llmmesh={"fallback_models": ["mock-large", "nope"]}), 400)
        assert error["param"] == "llmmesh.fallback_models[1]"
        assert error["message"].startswith("llmmesh.fallback_models[1]: "), error["message"]

    async def test_fallback_not_allowed_names_the_llmmesh_field(self, base_url: str) -> None:
        """The tenant check's message names the caller's field, not the router's `routing.`."""
        async with httpx2.AsyncClient(base_url=base_url, timeout=20) as http:
            response = await http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {KEY_NARROW}"},
                json={"model": "mock-small", "messages": USER, "llmmesh": {"fallback_models": ["mock-large"]}},
            )
        error = _error(response, 403)
        assert error["message"].startswith("llmmesh.fallback_models[0]: tenant 'narrow'"), error["message"]
        assert error["param"] == "llmmesh.fallback_models[0]"
        assert "routing." not in error["message"]

    async def test_responses_fallback_names_the_llmmesh_field(self, raw: httpx2.AsyncClient) -> None:
        body = {"model": "mock-small", "input": "hi", "llmmesh": {"fallback_models": ["nope"]}}
        error = _error(await raw.post("/v1/responses", json=body), 400)
        assert (error["param"], error["message"].split(":")[0]) == ("llmmesh.fallback_models[0]",) * 2

    @pytest.mark.parametrize(
        ("changes", "param"),
        [
            ({"tool_choice": {"type": "function"}}, "tool_choice.function"),
            ({"tool_choice": 7}, "tool_choice"),
            ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
            ({"response_format": "json"}, "response_format"),
            ({"messages": [7]}, "messages[0]"),
            ({"messages": [{"role": "user", "content": [7]}]}, "messages[0].content[0]"),
            ({"tools": [{"type": "function"}]}, "tools[0].function"),
            ({"stream_options": []}, "stream_options"),
            ({"llmmesh": []}, "llmmesh"),
            ({"function_call": {"nam": "x"}, "functions": []}, "function_call.name"),
        ],
        ids=lambda value: value if isinstance(value, str) else None,
    )
    async def test_no_class_names_in_validation_errors(
        self, raw: httpx2.AsyncClient, changes: dict[str, Any], param: str
    ) -> None:
        """A wrong type names the caller's field and what JSON it takes, never the door's pydantic classes."""
        error = _error(await _chat(raw, **changes), 400)
        assert error["param"] == param
        assert error["message"].startswith(f"{param}: "), error["message"]
        assert not [name for name in CLASS_NAMES if name in error["message"]], error["message"]
        assert "instance of" not in error["message"]


class TestHttpWording:
    async def test_missing_key_says_send_the_header(self, base_url: str) -> None:
        async with httpx2.AsyncClient(base_url=base_url, timeout=20) as http:
            error = _error(await http.post("/v1/chat/completions", json={"model": "mock-small", "messages": USER}), 401)
        assert "Authorization: Bearer" in error["message"]
        assert "header" in error["message"]
        assert "gRPC" not in error["message"]
        assert "metadata" not in error["message"]

    async def test_malformed_key_names_the_header(self, base_url: str) -> None:
        async with httpx2.AsyncClient(base_url=base_url, timeout=20, headers={"authorization": KEY}) as http:
            error = _error(await http.get("/v1/models"), 401)
        assert "Authorization header" in error["message"]
        assert "metadata" not in error["message"]
        assert KEY not in error["message"]

    @pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"])
    async def test_unknown_model_points_at_get_models(self, raw: httpx2.AsyncClient, path: str) -> None:
        body = {"model": "qqqqzzzzxxxx", "messages": USER, "input": "hi"}
        if path == "/v1/chat/completions":
            body.pop("input")
        else:
            body.pop("messages")
        error = _error(await raw.post(path, json=body), 404)
        assert "see GET /v1/models" in error["message"], error["message"]
        assert "ListModels" not in error["message"]

    async def test_embedding_model_on_chat_points_at_the_endpoint(self, raw: httpx2.AsyncClient) -> None:
        error = _error(await _chat(raw, model="vec-a"), 400)
        assert "call POST /v1/embeddings" in error["message"], error["message"]
        error = _error(await raw.post("/v1/embeddings", json={"model": "mock-small", "input": "hi"}), 400)
        assert "vec-a" in error["message"]

    @pytest.mark.parametrize(
        ("changes", "wording"),
        [
            (
                {"messages": [{"role": "tool", "content": "42"}]},
                "tool messages; echo the id of the assistant's tool call",
            ),
            ({"messages": [{"role": "user", "content": "x", "tool_calls": [TOOL_CALL]}]}, "assistant messages"),
            ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "with type json_schema"),
            ({"model": ""}, "GET /v1/models"),
        ],
        ids=["tool-call-id", "tool-calls-on-user", "json-schema", "empty-model"],
    )
    async def test_no_protobuf_names(self, raw: httpx2.AsyncClient, changes: dict[str, Any], wording: str) -> None:
        """The router's checks name protobuf enums and RPCs; through the door they read in JSON terms."""
        error = _error(await _chat(raw, **changes), 400)
        assert wording in error["message"], error["message"]
        assert not re.search(r"ROLE_|ToolCall|RESPONSE_FORMAT|ListModels", error["message"]), error["message"]


class TestRetryAfter:
    @pytest.mark.parametrize(("seconds", "header"), [(0.2, "1"), (0.0, "1"), (2.5, "3")])
    async def test_whole_seconds_at_least_one(self, raw: httpx2.AsyncClient, seconds: float, header: str) -> None:
        response = await _chat(raw, **_mock(fail_code="RESOURCE_EXHAUSTED", retry_after_s=seconds))
        _error(response, 429)
        assert response.headers.get("retry-after", header) == header
        if seconds:
            assert response.headers["retry-after"] == header


class TestWhoAnsweredAStream:
    async def test_final_chunk_names_model_provider_attempts(self, raw: httpx2.AsyncClient) -> None:
        """mock-down fails and its routing-file fallback answers: the finishing chunk says so."""
        body = {"model": "mock-down", "messages": USER, "stream": True, "llmmesh": {"max_retries": 0}}
        async with raw.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            chunks = _sse((await response.aread()).decode())
        final = next(chunk for chunk in chunks if chunk["choices"] and chunk["choices"][0]["finish_reason"])
        assert final["model"] == "mock-large"
        assert final["llmmesh"]["provider"] == "mock"
        assert [a["model"] for a in final["llmmesh"]["attempts"]] == ["mock-down", "mock-large"]
        assert "llmmesh" not in chunks[1]  # a delta: the mesh fields come once, at the end

    async def test_sdk_exposes_it_on_the_final_chunk(self, client: openai.AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(model="small", messages=USER, stream=True)  # type: ignore[call-overload]
        finals = [chunk async for chunk in stream if chunk.choices and chunk.choices[0].finish_reason]
        assert finals[0].model == "mock-small"
        assert (finals[0].model_extra or {})["llmmesh"]["attempts"][0]["outcome"] == "succeeded"

    async def test_responses_completed_event_names_them(self, raw: httpx2.AsyncClient) -> None:
        body = {"model": "mock-down", "input": "hi", "stream": True, "llmmesh": {"max_retries": 0}}
        async with raw.stream("POST", "/v1/responses", json=body) as response:
            events = _sse((await response.aread()).decode())
        completed = events[-1]["response"]
        assert events[-1]["type"] == "response.completed"
        assert completed["model"] == "mock-large"
        assert [a["model"] for a in completed["llmmesh"]["attempts"]] == ["mock-down", "mock-large"]


class TestLogprobs:
    @pytest.mark.parametrize(
        ("changes", "param"),
        [({"top_logprobs": 2}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs")],
    )
    async def test_chat_top_logprobs_needs_logprobs_within_range(
        self, raw: httpx2.AsyncClient, changes: dict[str, Any], param: str
    ) -> None:
        """top_logprobs without logprobs true, or above 20: 400 naming it."""
        error = _error(await _chat(raw, **changes), 400)
        assert error["param"] == param

    async def test_false_and_null_are_fine(self, raw: httpx2.AsyncClient) -> None:
        response = await _chat(raw, logprobs=False, top_logprobs=None)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["logprobs"] is None

    async def test_a_provider_without_them_is_named(self, raw: httpx2.AsyncClient) -> None:
        """A model whose provider returns no log probabilities refuses them by name (the mock's by request)."""
        mock = {
            "fail_code": "INVALID_ARGUMENT",
            "fail_reason": "UNSUPPORTED_FEATURE",
            "fail_field": "settings.logprobs",
        }
        body = {"logprobs": True, "llmmesh": {"max_retries": 0, "extensions": {"mock": mock}}}
        error = _error(await _chat(raw, **body), 400)
        assert error["param"] == "logprobs"


LEGACY_FUNCTIONS = [tool["function"] for tool in TOOLS]


class TestLegacyFunctions:
    async def test_functions_become_tools_and_a_tool_choice(self, raw: httpx2.AsyncClient) -> None:
        """`functions` + `function_call: {"name"}` map onto tools and a named choice, checked by the router."""
        for choice in ({"name": "calculator"}, "auto", "none"):
            response = await _chat(raw, functions=LEGACY_FUNCTIONS, function_call=choice)
            assert response.status_code == 200, response.text
        # The router checks a named choice against the tools: only a mapped `functions` list passes it.
        error = _error(await _chat(raw, function_call={"name": "calculator"}), 400)
        assert error["param"] == "function_call"

    def test_mapping(self) -> None:
        """In process, what the door hands the router (the mock does not record tools)."""
        parsed = openai_request.parse_chat_body(
            {"model": "m", "messages": USER, "functions": LEGACY_FUNCTIONS, "function_call": {"name": "calculator"}}
        )
        assert [tool.name for tool in parsed.request.tools] == ["current_time", "calculator"]
        assert (parsed.request.tool_choice.mode, parsed.request.tool_choice.name) == (
            chat_pb2.TOOL_CHOICE_MODE_NAMED,
            "calculator",
        )

    async def test_answer_in_the_deprecated_shape(self, client: openai.AsyncOpenAI) -> None:
        """The scripted agent calls two tools: a `functions` caller gets the first as message.function_call."""
        completion = await client.chat.completions.create(  # type: ignore[call-overload]
            model="mock-agent",
            messages=[{"role": "user", "content": "what is the monthly total?"}],
            functions=LEGACY_FUNCTIONS,
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "function_call"
        assert choice.message.function_call is not None
        assert choice.message.function_call.name == "current_time"
        assert json.loads(choice.message.function_call.arguments) == {"timezone": "UTC"}
        assert choice.message.tool_calls is None

    async def test_streamed_function_call(self, raw: httpx2.AsyncClient) -> None:
        body = {
            "model": "mock-agent",
            "messages": [{"role": "user", "content": "what is the monthly total?"}],
            "functions": LEGACY_FUNCTIONS,
            "stream": True,
        }
        async with raw.stream("POST", "/v1/chat/completions", json=body) as response:
            chunks = _sse((await response.aread()).decode())
        deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
        calls = [delta["function_call"] for delta in deltas if "function_call" in delta]
        assert not [delta for delta in deltas if "tool_calls" in delta]
        assert calls[0]["name"] == "current_time"
        assert json.loads("".join(call["arguments"] for call in calls)) == {"timezone": "UTC"}
        assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"

    async def test_function_history_round_trip(self, client: openai.AsyncOpenAI) -> None:
        """An assistant `function_call` turn and the `function` turns answering it become tool calls and results.

        The scripted agent's second turn reads the results back by tool name.
        """
        messages = [
            {"role": "user", "content": "what is the monthly total?"},
            {"role": "assistant", "content": None, "function_call": {"name": "current_time", "arguments": "{}"}},
            {"role": "function", "name": "current_time", "content": "12:00"},
        ]
        completion = await client.chat.completions.create(  # type: ignore[call-overload]
            model="mock-agent", messages=messages, functions=LEGACY_FUNCTIONS
        )
        assert completion.choices[0].message.content == "Observed: current_time = 12:00."

    async def test_both_spellings_refused(self, raw: httpx2.AsyncClient) -> None:
        error = _error(await _chat(raw, functions=LEGACY_FUNCTIONS, tools=TOOLS), 400)
        assert error["param"] == "functions"

    async def test_errors_name_the_legacy_fields(self, raw: httpx2.AsyncClient) -> None:
        error = _error(await _chat(raw, functions=[{"name": "bad name!"}]), 400)
        assert error["param"] == "functions[0].name"
        error = _error(await _chat(raw, functions=LEGACY_FUNCTIONS, function_call={"name": "missing"}), 400)
        assert error["param"] == "function_call"


class TestHistoryAsOpenAIReturnsIt:
    REFUSALS: ClassVar[list[Any]] = [
        USER[0],
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "Still no."}]},
        {"role": "user", "content": "ok, something else"},
    ]

    async def test_refusal_turns_are_accepted(self, raw: httpx2.AsyncClient, mesh: MockMesh) -> None:
        mesh.clear_events()
        response = await _chat(raw, messages=self.REFUSALS)
        assert response.status_code == 200, response.text
        assert (await _start(mesh))["messages"] == 4

    def test_refusal_is_the_assistants_refusal(self) -> None:
        """In process: a refusal (field or parts) becomes Message.refusal, which each adapter sends back its way."""
        parsed = openai_request.parse_chat_body({"model": "m", "messages": self.REFUSALS})
        refusals = [(message.refusal, list(message.content)) for message in parsed.request.messages[1:3]]
        assert refusals == [("I can't help with that.", []), ("Still no.", [])]

    async def test_tool_call_only_turn_and_empty_turn(self, raw: httpx2.AsyncClient, mesh: MockMesh) -> None:
        """A turn with tool calls and `content: null` is kept; a turn with nothing at all is left out."""
        mesh.clear_events()
        call = {"id": "call_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}
        messages = [
            USER[0],
            {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
            {"role": "assistant", "content": None},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "and now?"},
        ]
        response = await _chat(raw, messages=messages, tools=TOOLS)
        assert response.status_code == 200, response.text
        start = await _start(mesh)
        assert (start["messages"], start["last_text"]) == (4, "and now?")

    async def test_errors_after_a_left_out_turn_name_the_callers_index(self, raw: httpx2.AsyncClient) -> None:
        messages = [USER[0], {"role": "assistant", "content": None}, {"role": "user", "content": [{"type": "text"}]}]
        error = _error(await _chat(raw, messages=messages), 400)
        assert error["param"] == "messages[2].content[0].text"

    async def test_the_assistant_message_the_door_returned_goes_back_in(self, client: openai.AsyncOpenAI) -> None:
        """The SDK's own message object (content, refusal: null, tool_calls), replayed as history."""
        first = await client.chat.completions.create(
            model="mock-agent", messages=[{"role": "user", "content": "what is the monthly total?"}], tools=TOOLS
        )
        replay = first.choices[0].message.model_dump(exclude_none=False)
        results = [
            {"role": "tool", "tool_call_id": call.id, "content": "done"}
            for call in first.choices[0].message.tool_calls or ()
        ]
        second = await client.chat.completions.create(
            model="mock-agent",
            messages=[{"role": "user", "content": "what is the monthly total?"}, replay, *results],  # type: ignore[list-item]
            tools=TOOLS,
        )
        assert second.choices[0].message.content == "Observed: current_time = done; calculator = done."


class TestTopP:
    async def test_zero_is_accepted(self, raw: httpx2.AsyncClient) -> None:
        """OpenAI's schema allows 0 (minimum 0); so does the router, over both doors."""
        response = await _chat(raw, top_p=0)
        assert response.status_code == 200, response.text
        parsed = openai_request.parse_chat_body({"model": "m", "messages": USER, "top_p": 0})
        assert parsed.request.settings.HasField("top_p")
        assert parsed.request.settings.top_p == 0

    async def test_out_of_range_still_refused(self, raw: httpx2.AsyncClient) -> None:
        error = _error(await _chat(raw, top_p=-0.01), 400)
        assert error["param"] == "top_p"
        assert "0..1" in error["message"]

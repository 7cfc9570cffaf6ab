"""The router's OpenAI-compatible HTTP front door, driven by the real `openai` SDK.

A mock adapter and a router run as real processes (LLMMESH_HTTP_PORT=0);
the SDK talks to the router's HTTP port over loopback. Raw HTTP checks
(httpx2) pin what the SDK hides: SSE framing, headers, error bodies.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx2
import openai
import pytest
from starlette.requests import Request

from services.common.discovery import StaticDiscovery, StaticFile
from services.common.errors import MeshError
from services.common.processes import run_to_exit
from services.router.balancer import Balancer
from services.router.config import RoutingFile, RoutingTable
from services.router.engine import RouterEngine
from services.router.http_gateway import HttpGateway
from services.router.main import RouterSettings
from services.router.openai_errors import http_error, openai_param
from services.router.openai_request import BodyFields
from services.testing.mesh import MockMesh

_NEVER_TRIP = {"consecutive_failures": 10_000, "min_calls": 10_000}
MOCK_CONFIG: dict[str, Any] = {
    "models": [
        {"name": "mock-small", "context_window": 8192},
        {"name": "mock-large", "context_window": 128000},
        {"name": "mock-agent", "context_window": 32000, "scripted": True},
        {"name": "mock-slow", "stream_chunk_delay_ms": 50},
        {"name": "mock-down", "failures": [{"code": "UNAVAILABLE", "rate": 1, "message": "mock-down is down"}]},
    ],
    "scripts": [
        {
            "match": "monthly",
            "turns": [
                {
                    "text": "Calling tools.",
                    "tool_calls": [
                        {"name": "current_time", "arguments": {"timezone": "UTC"}},
                        {"name": "calculator", "arguments": {"expression": "1234 * 12"}},
                    ],
                },
                {"text": "Observed: {tool_results}."},
            ],
        }
    ],
}
ROUTING: dict[str, Any] = {
    # A second instance name for the same mock adapters: its breaker is its own, so
    # the provider-credential test cannot open the breaker the other tests use.
    "providers": {"mock": {"kind": "mock"}, "mock-keyless": {"kind": "mock", "service": "llmmesh-provider-mock"}},
    "defaults": {"breaker": _NEVER_TRIP, "provider_breaker": _NEVER_TRIP},
    "models": {
        "mock-small": {"provider": "mock", "context_window": 8192, "aliases": ["small"]},
        "mock-large": {"provider": "mock", "context_window": 128000},
        "mock-agent": {"provider": "mock", "context_window": 32000},
        "mock-slow": {"provider": "mock", "context_window": 128000},
        "mock-down": {"provider": "mock", "context_window": 8192, "fallbacks": ["mock-large"]},
        "mock-keyless": {"provider": "mock-keyless", "upstream_model": "mock-small", "context_window": 8192},
    },
}
USER = [{"role": "user", "content": "hi there"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"the {name} tool",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        },
    }
    for name in ("current_time", "calculator")
]


def http_port_of(mesh: MockMesh) -> int:
    """The HTTP port the router logged (it binds before it reports SERVING)."""
    assert mesh.router is not None
    for line in mesh.router.log().splitlines():
        if '"http gateway serving"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError(f"router did not log its HTTP port:\n{mesh.router.log()}")


def _mock(**options: Any) -> dict[str, Any]:
    """An extra_body that scripts the mock for one request and turns off router retries."""
    return {"llmmesh": {"max_retries": 0, "extensions": {"mock": options}}}


@pytest.fixture(scope="module")
def http_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    with MockMesh(
        mock_config=MOCK_CONFIG,
        routing=ROUTING,
        env={"LLMMESH_HTTP_PORT": "0"},
        workdir=tmp_path_factory.mktemp("http-mesh"),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(http_mesh: MockMesh) -> str:
    return f"http://127.0.0.1:{http_port_of(http_mesh)}"


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=20) as sdk:
        yield sdk


@pytest.fixture
async def raw(base_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=base_url, timeout=20) as http:
        yield http


async def _wait_for_event(mesh: MockMesh, event: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        found = mesh.events(event)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event!r} event; events: {mesh.events()}")


class TestChatCompletions:
    async def test_answer_in_openai_shape(self, client: openai.AsyncOpenAI) -> None:
        """A non-streaming chat returns a chat.completion with the answer, finish reason and usage."""
        completion = await client.chat.completions.create(model="mock-small", messages=USER)
        assert completion.object == "chat.completion"
        assert completion.id.startswith("chatcmpl-")
        assert completion.model == "mock-small"
        choice = completion.choices[0]
        assert (choice.index, choice.finish_reason) == (0, "stop")
        assert choice.message.role == "assistant"
        assert choice.message.content == "[mock mock-small] hi there"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 4)
        assert completion.usage.total_tokens == 10

    async def test_alias_answers_with_routing_name(self, client: openai.AsyncOpenAI) -> None:
        """An alias resolves like on the gRPC path, and `model` names the model that answered."""
        completion = await client.chat.completions.create(model="small", messages=USER)
        assert completion.model == "mock-small"

    async def test_attempts_in_header_and_body(self, client: openai.AsyncOpenAI) -> None:
        """The attempts come back in x-llmmesh-attempts and in the body's llmmesh field."""
        response = await client.chat.completions.with_raw_response.create(model="mock-large", messages=USER)
        completion = response.parse()
        attempts = json.loads(response.headers["x-llmmesh-attempts"])
        assert [(a["model"], a["outcome"], a["code"]) for a in attempts] == [("mock-large", "succeeded", "OK")]
        assert response.headers["x-llmmesh-provider"] == "mock"
        assert completion.model_extra is not None
        assert [a["model"] for a in completion.model_extra["llmmesh"]["attempts"]] == ["mock-large"]

    async def test_multi_part_and_system_messages(self, client: openai.AsyncOpenAI, http_mesh: MockMesh) -> None:
        """System, user text parts and image_url parts map onto the router's message types."""
        http_mesh.clear_events()
        completion = await client.chat.completions.create(
            model="mock-small",
            messages=[
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "describe"},
                        {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}},
                    ],
                },
            ],
            temperature=0.2,
            top_p=0.9,
            max_completion_tokens=64,
            stop=["END"],
            seed=7,
            response_format={"type": "json_object"},
        )
        assert completion.choices[0].message.content == "[mock mock-small] describe"
        start = (await _wait_for_event(http_mesh, "start"))[-1]
        assert (start["messages"], start["last_role"]) == (2, "ROLE_USER")


class TestFallbackAndPolicy:
    async def test_fallback_visible_in_model(self, client: openai.AsyncOpenAI) -> None:
        """A model that is down falls back per the routing file; `model` and attempts say so."""
        response = await client.chat.completions.with_raw_response.create(model="mock-down", messages=USER)
        completion = response.parse()
        assert completion.model == "mock-large"
        assert completion.choices[0].message.content == "[mock mock-large] hi there"
        attempts = json.loads(response.headers["x-llmmesh-attempts"])
        assert [(a["model"], a["outcome"], a["code"]) for a in attempts] == [
            ("mock-down", "failed", "UNAVAILABLE"),
            ("mock-large", "succeeded", "OK"),
        ]
        assert completion.model_extra is not None
        failed = completion.model_extra["llmmesh"]["attempts"][0]
        assert "mock-down is down" in failed["message"]
        assert failed["moved_on_because"] == "unavailable"

    async def test_fallback_models_from_body(self, client: openai.AsyncOpenAI) -> None:
        """llmmesh.fallback_models in the body sets the fallback chain for one request."""
        body = _mock(by_model={"mock-small": {"fail_code": "UNAVAILABLE"}})
        body["llmmesh"]["fallback_models"] = ["mock-agent"]
        completion = await client.chat.completions.create(model="mock-small", messages=USER, extra_body=body)
        assert completion.model == "mock-agent"

    async def test_fallback_models_from_header(self, client: openai.AsyncOpenAI) -> None:
        """x-llmmesh-fallback-models sets the chain when the body does not."""
        completion = await client.chat.completions.create(
            model="mock-small",
            messages=USER,
            extra_body=_mock(by_model={"mock-small": {"fail_code": "RESOURCE_EXHAUSTED"}}),
            extra_headers={"x-llmmesh-fallback-models": "mock-large, mock-agent"},
        )
        assert completion.model == "mock-large"

    async def test_unknown_fallback_in_header_names_the_header(self, client: openai.AsyncOpenAI) -> None:
        """A bad model in the fallback header is a 400 whose param is the header."""
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="mock-small", messages=USER, extra_headers={"x-llmmesh-fallback-models": "nope"}
            )
        assert caught.value.param == "x-llmmesh-fallback-models"


class TestToolCalls:
    async def test_tool_calls_and_results_round_trip(self, client: openai.AsyncOpenAI) -> None:
        """The scripted model's tool calls arrive as OpenAI tool_calls; tool results go back by tool_call_id."""
        question = {"role": "user", "content": "what is the monthly total?"}
        first = await client.chat.completions.create(
            model="mock-agent", messages=[question], tools=TOOLS, tool_choice="auto"
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
            ("function", "current_time", {"timezone": "UTC"}),
            ("function", "calculator", {"expression": "1234 * 12"}),
        ]
        results = [
            {"role": "tool", "tool_call_id": calls[0].id, "content": "12:00"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "14808"},
        ]
        second = await client.chat.completions.create(
            model="mock-agent",
            messages=[question, choice.message.model_dump(exclude_none=True), *results],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "calculator"}},
        )
        # The tool names come from the assistant turn: OpenAI tool messages carry only the id.
        assert second.choices[0].message.content == "Observed: current_time = 12:00; calculator = 14808."
        assert second.choices[0].finish_reason == "stop"

    async def test_streamed_tool_call_deltas_by_index(self, client: openai.AsyncOpenAI) -> None:
        """Streamed tool calls arrive as indexed deltas (id and name first) that add up to the calls."""
        stream = await client.chat.completions.create(
            model="mock-agent",
            messages=[{"role": "user", "content": "monthly total please"}],
            tools=TOOLS,
            stream=True,
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or ():
                    call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    if delta.id:
                        assert not call["id"], "the id comes once, on the first delta of a call"
                        call["id"] = delta.id
                    if delta.function and delta.function.name:
                        call["name"] = delta.function.name
                    if delta.function and delta.function.arguments:
                        call["arguments"] += delta.function.arguments
        assert finish == "tool_calls"
        assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
            ("current_time", {"timezone": "UTC"}),
            ("calculator", {"expression": "1234 * 12"}),
        ]
        assert all(c["id"] for c in calls.values())


class TestStreaming:
    async def test_stream_chunks_name_the_model_behind_an_alias(self, client: openai.AsyncOpenAI) -> None:
        """Chunks of a stream asked for by alias carry the routing name, like unary answers."""
        stream = await client.chat.completions.create(model="small", messages=USER, stream=True)
        assert {chunk.model async for chunk in stream} == {"mock-small"}

    async def test_stream_chunks_add_up(self, client: openai.AsyncOpenAI) -> None:
        """A stream opens with the assistant role, its content deltas add up, and it ends with a finish reason."""
        stream = await client.chat.completions.create(
            model="mock-large", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert len({c.id for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "[mock mock-large] one two three"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert all(c.usage is None for c in chunks)

    async def test_include_usage_sends_final_usage_chunk(self, client: openai.AsyncOpenAI) -> None:
        """With stream_options.include_usage, the last chunk has no choices and carries the usage."""
        stream = await client.chat.completions.create(
            model="mock-small", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 4)
        assert all(c.usage is None for c in chunks[:-1])

    async def test_stream_final_chunk_carries_the_ids_a_completion_does(self, client: openai.AsyncOpenAI) -> None:
        """Every chunk, the final and usage ones included, has one id; the final names the upstream response id."""
        stream = await client.chat.completions.create(
            model="mock-small", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert len({c.id for c in chunks}) == 1
        final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        assert final.model_extra["llmmesh"]["response_id"].startswith("mock-")
        unary = await client.chat.completions.create(model="mock-small", messages=USER)
        assert unary.model_extra["llmmesh"]["response_id"].startswith("mock-")

    async def test_stream_fallback_names_answering_model_at_the_end(self, client: openai.AsyncOpenAI) -> None:
        """A stream that falls back before its first delta ends with the answering model and the attempts."""
        stream = await client.chat.completions.create(model="mock-down", messages=USER, stream=True)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "[mock mock-large] hi there"
        last = chunks[-1]
        assert last.model == "mock-large"
        assert last.model_extra is not None
        assert [a["model"] for a in last.model_extra["llmmesh"]["attempts"]] == ["mock-down", "mock-large"]

    async def test_cut_stream_raises_not_silent(self, client: openai.AsyncOpenAI) -> None:
        """A stream cut after some chunks ends with an error event: the SDK raises, after the partial text."""
        stream = await client.chat.completions.create(
            model="mock-large",
            messages=[{"role": "user", "content": "a b c d e f"}],
            stream=True,
            extra_body=_mock(stream_cut_after=3),
        )
        received = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        assert "".join(received) == "[mock mock-large] a "
        assert caught.value.code == "stream_truncated"
        assert "partial output" in caught.value.message

    async def test_cut_stream_raw_ends_with_error_event_never_done(self, raw: httpx2.AsyncClient) -> None:
        """On the wire, a cut stream's last event is `data: {"error": ...}` and no `[DONE]` follows."""
        body = {"model": "mock-large", "messages": USER, "stream": True, **_mock(stream_cut_after=2)}
        response = await raw.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
        assert "[DONE]" not in events
        last = json.loads(events[-1])
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["type"] == "service_unavailable_error"

    async def test_complete_stream_raw_ends_with_done(self, raw: httpx2.AsyncClient) -> None:
        """A complete stream's last event is `data: [DONE]`, after the finish chunk."""
        response = await raw.post(
            "/v1/chat/completions", json={"model": "mock-small", "messages": USER, "stream": True}
        )
        events = [line for line in response.text.split("\n\n") if line]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2].removeprefix("data: "))["choices"][0]["finish_reason"] == "stop"

    async def test_failure_before_output_is_an_http_status(self, client: openai.AsyncOpenAI) -> None:
        """A stream that fails before any output answers with the error status, not a 200 stream."""
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="mock-small",
                messages=USER,
                stream=True,
                extra_body=_mock(fail_code="RESOURCE_EXHAUSTED", retry_after_s=1),
            )


class TestErrors:
    @pytest.mark.parametrize(
        ("changes", "param"),
        [
            ({"temperature": 3.0}, "temperature"),
            ({"top_p": 1.5}, "top_p"),
            ({"max_tokens": 0}, "max_tokens"),
            ({"max_completion_tokens": 2_000_000}, "max_completion_tokens"),
            ({"messages": []}, "messages"),
            ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
            ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
            ({"messages": [{"role": "user", "content": [{"type": "video_url"}]}]}, "messages[0].content[0].type"),
            (
                {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
                "messages[0].content[0].input_audio",
            ),
            ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
            (
                {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
                "tools[0].function.name",
            ),
            ({"tool_choice": {"type": "function", "function": {"name": "missing"}}}, "tool_choice.function.name"),
            (
                {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                "response_format.json_schema.schema",
            ),
            ({"n": 2}, "n"),
            ({"llmmesh": {"fallback_modles": ["x"]}}, "llmmesh.fallback_modles"),
            ({"llmmesh": {"max_retries": 99}}, "llmmesh.max_retries"),
        ],
        ids=lambda value: value if isinstance(value, str) else None,
    )
    async def test_bad_input_is_400_naming_the_field(
        self, raw: httpx2.AsyncClient, changes: dict[str, Any], param: str
    ) -> None:
        """Bad input is a 400 in OpenAI's format whose param is the caller's field name."""
        response = await raw.post("/v1/chat/completions", json={"model": "mock-small", "messages": USER, **changes})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert error["message"].startswith(param)

    async def test_bad_input_raises_bad_request_error(self, client: openai.AsyncOpenAI) -> None:
        """The SDK sees a 400 as BadRequestError with param and code."""
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="mock-small", messages=USER, temperature=5)
        assert (caught.value.param, caught.value.code) == ("temperature", "invalid_request")

    async def test_unknown_model_is_not_found(self, client: openai.AsyncOpenAI) -> None:
        """An unknown model is NotFoundError with code model_not_found and close matches in the message."""
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="mock-smal", messages=USER)
        assert (caught.value.param, caught.value.code) == ("model", "model_not_found")
        assert "mock-small" in caught.value.message

    async def test_context_window_uses_openai_code(self, client: openai.AsyncOpenAI) -> None:
        """A prompt too long for the model is a 400 with OpenAI's context_length_exceeded code."""
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="mock-small", messages=[{"role": "user", "content": "word " * 9000}]
            )
        assert caught.value.code == "context_length_exceeded"

    async def test_rate_limit_is_429_with_retry_after(self, client: openai.AsyncOpenAI) -> None:
        """RESOURCE_EXHAUSTED is RateLimitError with Retry-After (and retry-after-ms) from RetryInfo."""
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model="mock-small", messages=USER, extra_body=_mock(fail_code="RESOURCE_EXHAUSTED", retry_after_s=2.5)
            )
        headers = caught.value.response.headers
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("3", "2500")
        assert caught.value.type == "rate_limit_error"

    async def test_sdk_retries_honour_retry_after(self, base_url: str, http_mesh: MockMesh) -> None:
        """The SDK's own retry logic works: one retry after the announced Retry-After, then success."""
        http_mesh.clear_events()
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=1) as sdk:
            with pytest.raises(openai.RateLimitError):
                await sdk.chat.completions.create(
                    model="mock-small",
                    messages=USER,
                    extra_body=_mock(fail_code="RESOURCE_EXHAUSTED", retry_after_s=0.2),
                )
        assert len(http_mesh.events("start")) == 2

    async def test_deadline_exceeded_is_408(self, client: openai.AsyncOpenAI) -> None:
        """A request out of time (x-llmmesh-timeout) is a 408 timeout_error, which the SDK would retry."""
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="mock-small",
                messages=USER,
                extra_body=_mock(delay_ms=3000),
                extra_headers={"x-llmmesh-timeout": "0.3"},
            )
        assert caught.value.status_code == 408
        assert caught.value.type == "timeout_error"

    async def test_sdk_read_timeout_is_the_deadline(self, raw: httpx2.AsyncClient) -> None:
        """Without x-llmmesh-timeout, the OpenAI SDK's x-stainless-read-timeout bounds a unary request."""
        body = {"model": "mock-small", "messages": USER, **_mock(delay_ms=3000)}
        response = await raw.post("/v1/chat/completions", json=body, headers={"x-stainless-read-timeout": "0.3"})
        assert response.status_code == 408
        assert response.json()["error"]["type"] == "timeout_error"

    async def test_bad_timeout_header_is_400(self, client: openai.AsyncOpenAI) -> None:
        """A malformed x-llmmesh-timeout is a 400 naming the header."""
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="mock-small", messages=USER, extra_headers={"x-llmmesh-timeout": "soon"}
            )
        assert caught.value.param == "x-llmmesh-timeout"

    @pytest.mark.parametrize(
        ("fail_code", "status", "exception"),
        [
            ("INTERNAL", 500, openai.InternalServerError),
            ("UNAVAILABLE", 503, openai.InternalServerError),
            ("INVALID_ARGUMENT", 400, openai.BadRequestError),
        ],
    )
    async def test_upstream_failures_map_to_statuses(
        self, client: openai.AsyncOpenAI, fail_code: str, status: int, exception: type[openai.APIStatusError]
    ) -> None:
        """Adapter failures reach the SDK as the status and exception type OpenAI clients expect."""
        with pytest.raises(exception) as caught:
            await client.chat.completions.create(
                model="mock-small", messages=USER, extra_body=_mock(fail_code=fail_code)
            )
        assert caught.value.status_code == status

    async def test_provider_credentials_are_502_not_retried(self, base_url: str, http_mesh: MockMesh) -> None:
        """A provider rejecting our key is 502 with x-should-retry: false, so the SDK does not retry it."""
        http_mesh.clear_events()
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=2) as sdk:
            with pytest.raises(openai.InternalServerError) as caught:
                await sdk.chat.completions.create(
                    model="mock-keyless", messages=USER, extra_body=_mock(fail_code="UNAUTHENTICATED")
                )
        assert caught.value.status_code == 502
        assert caught.value.code == "provider_auth_failed"
        assert len(http_mesh.events("start")) == 1

    async def test_not_json_and_unknown_path(self, raw: httpx2.AsyncClient) -> None:
        """A body that is not JSON is a 400 and an unknown path a 404, both in OpenAI's error format."""
        response = await raw.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert (response.status_code, response.json()["error"]["param"]) == (400, "body")
        response = await raw.get("/v1/audio/speech")
        assert response.status_code == 404
        assert "chat/completions" in response.json()["error"]["message"]


class TestModels:
    async def test_models_list_from_routing_table(self, client: openai.AsyncOpenAI) -> None:
        """GET /v1/models lists the routing table's models in OpenAI's list format."""
        models = [model async for model in client.models.list()]
        assert {model.id for model in models} == set(ROUTING["models"])
        assert all(model.object == "model" and model.owned_by == "mock" for model in models)
        small = next(model for model in models if model.id == "mock-small")
        assert small.model_extra is not None
        assert small.model_extra["llmmesh"]["aliases"] == ["small"]
        assert small.model_extra["llmmesh"]["available"] is True

    async def test_retrieve_by_alias_and_unknown(self, client: openai.AsyncOpenAI) -> None:
        """GET /v1/models/{id} resolves aliases; an unknown id is NotFoundError."""
        assert (await client.models.retrieve("small")).id == "mock-small"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-5-turbo-ultra")


class TestCancellation:
    async def test_client_that_gives_up_cancels_the_adapter_call(self, base_url: str, http_mesh: MockMesh) -> None:
        """When the SDK times out and hangs up, the router cancels the adapter call end to end."""
        http_mesh.clear_events()
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=0.5) as sdk:
            with pytest.raises(openai.APITimeoutError):
                await sdk.chat.completions.create(
                    model="mock-small",
                    messages=USER,
                    extra_body=_mock(delay_ms=8000),
                    # Else the router takes the SDK's 0.5 s as its deadline and answers 408 first.
                    extra_headers={"x-llmmesh-timeout": "30"},
                )
        cancelled = await _wait_for_event(http_mesh, "cancelled")
        assert [event["model"] for event in cancelled] == ["mock-small"]

    async def test_stream_reader_that_hangs_up_cancels_the_stream(
        self, raw: httpx2.AsyncClient, http_mesh: MockMesh
    ) -> None:
        """Closing a stream mid-answer cancels the adapter's stream instead of letting it run to the end."""
        http_mesh.clear_events()
        words = " ".join(["word"] * 60)  # 60 deltas 50 ms apart: 3 s if nobody cancels
        body = {"model": "mock-slow", "messages": [{"role": "user", "content": words}], "stream": True}
        async with raw.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if '"content":"word' in line:
                    break
        cancelled = await _wait_for_event(http_mesh, "cancelled")
        assert [event["model"] for event in cancelled] == ["mock-slow"]
        assert not http_mesh.events("end")


class _Refuse:
    """An authorize hook: 'Bearer good' passes, 'Bearer readonly' is forbidden, anything else is unauthenticated."""

    async def __call__(self, request: Request) -> None:
        token = request.headers.get("authorization", "")
        if token == "Bearer good":
            return
        if token == "Bearer readonly":
            raise MeshError(grpc.StatusCode.PERMISSION_DENIED, "this key may not call chat")
        raise MeshError(grpc.StatusCode.UNAUTHENTICATED, "unknown key")


class TestAuthSeamInProcess:
    @pytest.fixture
    async def gateway_url(self, http_mesh: MockMesh) -> AsyncIterator[str]:
        """An HttpGateway in the test's loop over the module's mock adapter, with an auth hook."""
        discovery = StaticDiscovery(
            StaticFile(services={"llmmesh-provider-mock": [m.address for m in http_mesh.mocks]})
        )
        table = RoutingTable(RoutingFile.model_validate(ROUTING))
        await discovery.watch(table.services())
        balancer = Balancer(discovery)
        gateway = HttpGateway(RouterEngine(table, balancer), balancer, default_deadline_seconds=10, authorize=_Refuse())
        port = await gateway.start("127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}/v1"
        await gateway.begin_shutdown()
        await gateway.wait_stopped()
        await balancer.close()

    @pytest.mark.parametrize(
        ("key", "exception"),
        [("nobody", openai.AuthenticationError), ("readonly", openai.PermissionDeniedError)],
    )
    async def test_hook_refusals_are_401_and_403(self, gateway_url: str, key: str, exception: type[Exception]) -> None:
        """The authorize hook's UNAUTHENTICATED / PERMISSION_DENIED reach the SDK as 401 / 403."""
        async with openai.AsyncOpenAI(base_url=gateway_url, api_key=key, max_retries=0) as sdk:
            with pytest.raises(exception):
                await sdk.chat.completions.create(model="mock-small", messages=USER)

    async def test_hook_lets_good_key_through(self, gateway_url: str) -> None:
        """A key the hook accepts gets its answer from the same engine."""
        async with openai.AsyncOpenAI(base_url=gateway_url, api_key="good", max_retries=0) as sdk:
            completion = await sdk.chat.completions.create(model="mock-small", messages=USER)
        assert completion.choices[0].message.content == "[mock mock-small] hi there"


class TestStatusMapping:
    @pytest.mark.parametrize(
        ("code", "reason", "status"),
        [
            (grpc.StatusCode.INVALID_ARGUMENT, "", 400),
            (grpc.StatusCode.UNAUTHENTICATED, "", 401),
            (grpc.StatusCode.PERMISSION_DENIED, "", 403),
            (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", 404),
            (grpc.StatusCode.DEADLINE_EXCEEDED, "", 408),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "", 429),
            (grpc.StatusCode.INTERNAL, "", 500),
            (grpc.StatusCode.UNKNOWN, "", 500),
            (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_AUTH_FAILED", 502),
            (grpc.StatusCode.FAILED_PRECONDITION, "CONTENT_FILTERED", 400),
            (grpc.StatusCode.UNAVAILABLE, "", 503),
        ],
    )
    def test_code_to_status(self, code: grpc.StatusCode, reason: str, status: int) -> None:
        """Every gRPC code the router returns has the documented HTTP status."""
        assert http_error(MeshError(code, "x", reason=reason)).status == status

    def test_retry_after_only_where_clients_wait(self) -> None:
        """Retry-After is sent with 429 and 503 only, rounded up to whole seconds."""
        limited = http_error(MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x", retry_after=0.2))
        assert limited.headers["retry-after"] == "1"
        assert "retry-after" not in http_error(MeshError(grpc.StatusCode.INTERNAL, "x", retry_after=3)).headers

    @pytest.mark.parametrize(
        ("path", "param"),
        [
            ("messages[2].content[0]", "messages[2].content"),
            ("messages[1].content[3].image.url", "messages[1].content[3].image_url.url"),
            ("messages[0].tool_calls[1].name", "messages[0].tool_calls[1].function.name"),
            ("routing.per_attempt_timeout", "llmmesh.per_attempt_timeout_ms"),
            ("extensions.mock.finish_reason", "llmmesh.extensions.mock.finish_reason"),
        ],
    )
    def test_router_field_paths_become_openai_params(self, path: str, param: str) -> None:
        """Router field paths are translated to the field the OpenAI caller sent."""
        assert openai_param(path, BodyFields(string_content={2})) == param


class TestShutdown:
    async def test_sigterm_lets_in_flight_http_request_finish(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """On SIGTERM the router stops accepting but finishes in-flight HTTP requests within the grace period."""
        with MockMesh(
            mock_config=MOCK_CONFIG, env={"LLMMESH_HTTP_PORT": "0"}, workdir=tmp_path_factory.mktemp("http-stop")
        ) as mesh:
            url = f"http://127.0.0.1:{http_port_of(mesh)}/v1"
            async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=20) as sdk:
                in_flight = asyncio.create_task(
                    sdk.chat.completions.create(model="mock-small", messages=USER, extra_body=_mock(delay_ms=1000))
                )
                await _wait_for_event(mesh, "start")
                assert mesh.router is not None
                mesh.router.signal(signal.SIGTERM)
                completion = await in_flight
                assert completion.choices[0].message.content == "[mock mock-small] hi there"
                assert mesh.router.process.wait(15) == 0


class TestSettings:
    @pytest.mark.parametrize(("value", "port"), [("", None), ("0", 0), ("8080", 8080)])
    def test_http_port_empty_is_off(self, monkeypatch: pytest.MonkeyPatch, value: str, port: int | None) -> None:
        """LLMMESH_HTTP_PORT unset or empty keeps the HTTP door off; 0 picks a free port."""
        monkeypatch.setenv("LLMMESH_HTTP_PORT", value)
        assert RouterSettings().http_port == port

    def test_bad_http_port_stops_the_router_naming_the_variable(self) -> None:
        """A malformed LLMMESH_HTTP_PORT refuses to start and names the variable."""
        result = run_to_exit(["-m", "services.router"], env={"LLMMESH_HTTP_PORT": "eighty"})
        assert result.returncode == 2
        assert "LLMMESH_HTTP_PORT" in result.stderr

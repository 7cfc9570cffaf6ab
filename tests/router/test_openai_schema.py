"""The door's wire format against OpenAI's published OpenAPI schema.

Answers, SSE chunks and events, error bodies and the 429 Retry-After header
of every operation the door serves (chat completions, Responses, embeddings,
models) are validated with `jsonschema` against the schemas in
fixtures/openai_schemas.json (a subset of openai-openapi's openapi.json; its
commit is in the file, vendor_openai_schemas.py regenerates it). The same
schemas say which request fields may be null: each is sent as null and must
be accepted.

A mock adapter and a router run as real processes; requests go over loopback.
"""

from __future__ import annotations

import array
import base64
import json
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest

from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, TOOLS, USER, http_port_of

SCHEMAS: dict[str, Any] = json.loads((Path(__file__).parent / "fixtures" / "openai_schemas.json").read_text())
EMBEDDING_MODEL = "vec-a"
MOCK: dict[str, Any] = {**MOCK_CONFIG, "models": [*MOCK_CONFIG["models"], {"name": EMBEDDING_MODEL, "dimensions": 8}]}
ROUTES: dict[str, Any] = {
    **ROUTING,
    "models": {**ROUTING["models"], EMBEDDING_MODEL: {"provider": "mock", "dimensions": 8}},
}
MONTHLY = [{"role": "user", "content": "what is the monthly total?"}]
# A URL citation and a document one (no Chat Completions shape: llmmesh.citations only).
CITATIONS = {
    "citations": [
        {"kind": "CITATION_KIND_URL", "url": "https://example.org/a", "title": "A", "startIndex": 0, "endIndex": 4},
        {"kind": "CITATION_KIND_DOCUMENT", "documentIndex": 0, "documentTitle": "Notes", "sourceId": "file_1"},
    ]
}
FUNCTION_TOOLS = [{"type": "function", **tool["function"]} for tool in TOOLS]
JSON_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
# Requests whose error bodies are checked: status and body.
BAD_CHAT: list[tuple[int, dict[str, Any]]] = [
    (400, {"temperature": 9}),
    (400, {"messages": []}),
    (400, {"tool_choice": {"type": "function"}}),
    (400, {"top_logprobs": 2}),
    (400, {"messages": [{"role": "user", "content": "word " * 9000}]}),
    (404, {"model": "no-such-model"}),
    (429, {"llmmesh": {"max_retries": 0, "extensions": {"mock": {"fail_code": "RESOURCE_EXHAUSTED"}}}}),
    (503, {"llmmesh": {"max_retries": 0, "extensions": {"mock": {"fail_code": "UNAVAILABLE"}}}}),
]


REFUSAL = {"refusal": "I can't help with that."}
ALLOWED_TOOLS = {
    "parallel_tool_calls": False,
    "tool_choice": {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "calculator"}}]},
    },
}


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**SCHEMAS, "$ref": f"#/$defs/{name}"})


def _event_schemas() -> dict[str, str]:
    """ResponseStreamEvent's branches by their `type`: an event is checked against its own (clearer errors)."""
    branches = SCHEMAS["$defs"]["ResponseStreamEvent"]["anyOf"]
    names = [branch["$ref"].rsplit("/", 1)[-1] for branch in branches]
    return {SCHEMAS["$defs"][name]["properties"]["type"]["enum"][0]: name for name in names}


EVENT_SCHEMAS = _event_schemas()


def conforms_event(event: dict[str, Any]) -> None:
    assert event["type"] in EVENT_SCHEMAS, f"{event['type']!r} is not a Responses stream event type"
    conforms(EVENT_SCHEMAS[event["type"]], event)
    conforms("ResponseStreamEvent", event)


def conforms(name: str, instance: object) -> None:
    """Fails with the most relevant schema error when `instance` is not a valid `name`."""
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(instance))
    if error is not None:
        path = "/".join(str(part) for part in error.absolute_path)
        raise AssertionError(f"not a valid {name} at /{path}: {error.message}\n{json.dumps(instance)[:2000]}")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    with MockMesh(
        mock_config=MOCK, routing=ROUTES, env={"LLMMESH_HTTP_PORT": "0"}, workdir=tmp_path_factory.mktemp("schema")
    ) as started:
        yield started


@pytest.fixture
async def raw(mesh: MockMesh) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{http_port_of(mesh)}", timeout=20) as http:
        yield http


def _data(body: str) -> list[Any]:
    """The SSE body's data payloads, `[DONE]` left out; keepalive comments are not events."""
    lines = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


async def _stream(raw: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    async with raw.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, await response.aread()
        return _data((await response.aread()).decode())


class TestChatCompletions:
    @pytest.mark.parametrize(
        "body",
        [
            {"model": "mock-small", "messages": USER},
            {"model": "mock-agent", "messages": MONTHLY, "tools": TOOLS},
            {"model": "mock-down", "messages": USER},
            {"model": "mock-small", "messages": USER, "functions": [tool["function"] for tool in TOOLS]},
            {
                "model": "mock-small",
                "messages": USER,
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": JSON_SCHEMA}},
            },
            {"model": "mock-agent", "messages": MONTHLY, "tools": TOOLS, "reasoning_effort": "low"},
            {"model": "mock-small", "messages": USER, "llmmesh": {"extensions": {"mock": REFUSAL}}},
            {"model": "mock-agent", "messages": MONTHLY, "tools": TOOLS, **ALLOWED_TOOLS},
            {"model": "mock-small", "messages": USER, "logprobs": True, "top_logprobs": 2},
            {"model": "mock-small", "messages": USER, "llmmesh": {"extensions": {"mock": CITATIONS}}},
        ],
        ids=[
            "text",
            "tools",
            "fallback",
            "legacy-functions",
            "json-schema",
            "reasoning",
            "refusal",
            "allowed-tools",
            "logprobs",
            "citations",
        ],
    )
    async def test_answers(self, raw: httpx2.AsyncClient, body: dict[str, Any]) -> None:
        response = await raw.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        conforms("CreateChatCompletionResponse", response.json())

    @pytest.mark.parametrize(
        "body",
        [
            {"model": "mock-small", "messages": USER},
            {"model": "mock-small", "messages": USER, "stream_options": {"include_usage": True}},
            {"model": "mock-agent", "messages": MONTHLY, "tools": TOOLS},
            {"model": "mock-agent", "messages": MONTHLY, "functions": [tool["function"] for tool in TOOLS]},
            {"model": "mock-down", "messages": USER},
            {"model": "mock-agent", "messages": MONTHLY, "tools": TOOLS, "reasoning_effort": "high"},
            {"model": "mock-small", "messages": USER, "llmmesh": {"extensions": {"mock": REFUSAL}}},
            {"model": "mock-small", "messages": USER, "logprobs": True, "top_logprobs": 2},
            {"model": "mock-small", "messages": USER, "llmmesh": {"extensions": {"mock": CITATIONS}}},
        ],
        ids=["text", "usage", "tools", "legacy-functions", "fallback", "reasoning", "refusal", "logprobs", "citations"],
    )
    async def test_chunks(self, raw: httpx2.AsyncClient, body: dict[str, Any]) -> None:
        chunks = await _stream(raw, "/v1/chat/completions", body)
        assert len(chunks) >= 3
        for chunk in chunks:
            conforms("CreateChatCompletionStreamResponse", chunk)

    async def test_error_event_after_output(self, raw: httpx2.AsyncClient) -> None:
        """A stream cut after its first token ends with an error event: an ErrorResponse."""
        mock = {"mock": {"stream_cut_after": 1}}
        body = {"model": "mock-slow", "messages": USER, "llmmesh": {"max_retries": 0, "extensions": mock}}
        events = await _stream(raw, "/v1/chat/completions", body)
        assert "error" in events[-1], events[-1]
        conforms("ErrorResponse", events[-1])

    @pytest.mark.parametrize(("status", "changes"), BAD_CHAT, ids=lambda value: str(value)[:40])
    async def test_error_bodies(self, raw: httpx2.AsyncClient, status: int, changes: dict[str, Any]) -> None:
        response = await raw.post("/v1/chat/completions", json={"model": "mock-small", "messages": USER, **changes})
        assert response.status_code == status, response.text
        conforms("ErrorResponse", response.json())

    @pytest.mark.parametrize("seconds", [0, 0.3, 2.5])
    async def test_retry_after_header(self, raw: httpx2.AsyncClient, seconds: float) -> None:
        """A 429's Retry-After is an integer of at least 1, as the schema's TooManyRequests says."""
        mock = {"mock": {"fail_code": "RESOURCE_EXHAUSTED", "retry_after_s": seconds}}
        body = {"model": "mock-small", "messages": USER, "llmmesh": {"max_retries": 0, "extensions": mock}}
        response = await raw.post("/v1/chat/completions", json=body)
        assert response.status_code == 429
        if "retry-after" in response.headers:
            conforms("TooManyRequestsRetryAfter", json.loads(response.headers["retry-after"]))
        elif seconds:
            raise AssertionError(f"no retry-after for a {seconds}s RetryInfo")


class TestResponses:
    @pytest.mark.parametrize(
        "body",
        [
            {"model": "mock-small", "input": "hi"},
            {
                "model": "mock-agent",
                "input": MONTHLY[0]["content"],
                "tools": FUNCTION_TOOLS,
                "instructions": "be brief",
            },
            {
                "model": "mock-small",
                "input": "hi",
                "text": {"format": {"type": "json_schema", "name": "a", "schema": JSON_SCHEMA}},
            },
            {
                "model": "mock-small",
                "input": "hi",
                "max_output_tokens": 1,
                "llmmesh": {"extensions": {"mock": {"finish_reason": "length"}}},
            },
            {
                "model": "mock-agent",
                "input": MONTHLY[0]["content"],
                "tools": FUNCTION_TOOLS,
                "reasoning": {"effort": "high", "summary": "detailed"},
                "include": ["reasoning.encrypted_content"],
            },
            {"model": "mock-small", "input": "hi", "llmmesh": {"extensions": {"mock": REFUSAL}}},
            {"model": "mock-small", "input": "hi", "llmmesh": {"extensions": {"mock": {**REFUSAL, "text": "Well,"}}}},
            {
                "model": "mock-agent",
                "input": MONTHLY[0]["content"],
                "tools": FUNCTION_TOOLS,
                "parallel_tool_calls": False,
                "tool_choice": {
                    "type": "allowed_tools",
                    "mode": "auto",
                    "tools": [{"type": "function", "name": "calculator"}],
                },
            },
            {"model": "mock-small", "input": "hi", "include": ["message.output_text.logprobs"], "top_logprobs": 2},
            {"model": "mock-small", "input": "hi", "llmmesh": {"extensions": {"mock": CITATIONS}}},
        ],
        ids=[
            "text",
            "tools",
            "json-schema",
            "incomplete",
            "reasoning",
            "refusal",
            "text-then-refusal",
            "allowed-tools",
            "logprobs",
            "citations",
        ],
    )
    async def test_answers_and_events(self, raw: httpx2.AsyncClient, body: dict[str, Any]) -> None:
        response = await raw.post("/v1/responses", json=body)
        assert response.status_code == 200, response.text
        conforms("Response", response.json())
        events = await _stream(raw, "/v1/responses", body)
        for event in events:
            conforms_event(event)
        conforms("Response", events[-1]["response"])

    async def test_failed_event(self, raw: httpx2.AsyncClient) -> None:
        mock = {"mock": {"stream_cut_after": 1}}
        body = {"model": "mock-slow", "input": "hi", "llmmesh": {"max_retries": 0, "extensions": mock}}
        events = await _stream(raw, "/v1/responses", body)
        assert events[-1]["type"] in ("response.failed", "error"), events[-1]
        for event in events:
            conforms_event(event)

    @pytest.mark.parametrize(
        ("status", "changes"),
        [(400, {"store": True}), (400, {"temperature": 9}), (400, {"top_logprobs": 21}), (404, {"model": "nope"})],
        ids=str,
    )
    async def test_error_bodies(self, raw: httpx2.AsyncClient, status: int, changes: dict[str, Any]) -> None:
        response = await raw.post("/v1/responses", json={"model": "mock-small", "input": "hi", **changes})
        assert response.status_code == status, response.text
        conforms("ErrorResponse", response.json())


class TestEmbeddingsAndModels:
    @pytest.mark.parametrize("encoding", ["float", "base64", None])
    async def test_embeddings(self, raw: httpx2.AsyncClient, encoding: str | None) -> None:
        body: dict[str, Any] = {"model": EMBEDDING_MODEL, "input": ["one", "two"], "encoding_format": encoding}
        response = await raw.post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        if encoding == "base64":
            # The spec types `embedding` as numbers only, though the API answers base64 with a string (as we do).
            for item in answer["data"]:
                item["embedding"] = list(array.array("f", base64.b64decode(item["embedding"])))
        conforms("CreateEmbeddingResponse", answer)

    async def test_embeddings_error(self, raw: httpx2.AsyncClient) -> None:
        response = await raw.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": []})
        assert response.status_code == 400
        conforms("ErrorResponse", response.json())

    async def test_models(self, raw: httpx2.AsyncClient) -> None:
        listing = await raw.get("/v1/models")
        conforms("ListModelsResponse", listing.json())
        one = await raw.get("/v1/models/mock-small")
        conforms("Model", one.json())
        missing = await raw.get("/v1/models/nope")
        assert missing.status_code == 404
        conforms("ErrorResponse", missing.json())


def _properties(name: str) -> dict[str, Any]:
    """A request schema's top-level properties, through its allOf parts and refs."""
    schema = SCHEMAS["$defs"][name]
    found: dict[str, Any] = {}
    for part in [schema, *schema.get("allOf", [])]:
        if "$ref" in part:
            found.update(_properties(part["$ref"].rsplit("/", 1)[-1]))
        found.update(part.get("properties", {}))
    return found


def nullable_fields(name: str) -> list[str]:
    """The fields of request schema `name` that the schema lets a client send as null."""
    return sorted(
        field
        for field, schema in _properties(name).items()
        if jsonschema.Draft202012Validator({**SCHEMAS, **schema}).is_valid(None)
    )


REQUESTS = {
    "/v1/chat/completions": ("CreateChatCompletionRequest", {"model": "mock-small", "messages": USER}),
    "/v1/responses": ("CreateResponse", {"model": "mock-small", "input": "hi"}),
    "/v1/embeddings": ("CreateEmbeddingRequest", {"model": EMBEDDING_MODEL, "input": "hi"}),
}
NULLABLE = [(path, field) for path, (name, _) in REQUESTS.items() for field in nullable_fields(name)]


def test_the_spec_has_nullable_fields() -> None:
    """The generated cases below are not vacuous (the vendored schemas still mark fields nullable)."""
    by_path = {path: [field for p, field in NULLABLE if p == path] for path in REQUESTS}
    assert {"stream", "top_p", "temperature", "stop"} <= set(by_path["/v1/chat/completions"])
    assert {"instructions", "previous_response_id"} <= set(by_path["/v1/responses"])


@pytest.mark.parametrize(("path", "field"), NULLABLE, ids=[f"{p.rsplit('/', 1)[-1]}.{f}" for p, f in NULLABLE])
async def test_nullable_request_field_accepts_null(raw: httpx2.AsyncClient, path: str, field: str) -> None:
    """Null where OpenAI's schema allows it is the field left out, never a 400."""
    body = {**REQUESTS[path][1], field: None}
    response = await raw.post(path, json=body)
    assert response.status_code == 200, response.text


CALL = {"id": "call_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}
NULL_TOOL = {"type": "function", "name": "current_time", "description": None, "parameters": None, "strict": None}
# Nested fields the schema marks nullable (ChatCompletionRequestAssistantMessage, ...FunctionMessage,
# FunctionObject, ResponseFormatJsonSchema; FunctionTool, EasyInputMessage), each sent as null.
NESTED_NULLS: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {
            "model": "mock-small",
            "tools": [{"type": "function", "function": {**TOOLS[0]["function"], "strict": None}}],
            "messages": [
                USER[0],
                {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [CALL],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
                {"role": "assistant", "content": None, "refusal": None, "audio": None, "function_call": None},
                {"role": "user", "content": "and?"},
            ],
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": "mock-small",
            "functions": [TOOLS[0]["function"]],
            "messages": [
                USER[0],
                {"role": "assistant", "content": None, "function_call": {"name": "current_time", "arguments": "{}"}},
                {"role": "function", "name": "current_time", "content": None},
            ],
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": "mock-small",
            "messages": USER,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": JSON_SCHEMA, "strict": None},
            },
        },
    ),
    (
        "/v1/responses",
        {"model": "mock-small", "tools": [NULL_TOOL], "input": [{"role": "user", "content": "hi", "phase": None}]},
    ),
]


@pytest.mark.parametrize(
    ("path", "body"), NESTED_NULLS, ids=["assistant-turns", "function-turn", "json-schema", "responses-tool"]
)
async def test_nested_nullable_fields_accept_null(raw: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await raw.post(path, json=body)
    assert response.status_code == 200, response.text

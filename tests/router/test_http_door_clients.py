"""The HTTP door for browsers and slow models: CORS, and streams kept alive until the first token.

One live router (mock adapter, HTTP door on, CORS for one origin, a short
stream commit wait) serves every test; clients are raw httpx2 and the
openai SDK over loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest

from services.router.cors import CorsSettings
from services.router.sse_keepalive import KEEPALIVE_COMMENT
from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, http_port_of

ORIGIN = "https://app.example.com"
# The model's first token comes long after the client's read timeout: only keepalives keep it reading.
FIRST_TOKEN_MS = 2500
READ_TIMEOUT = httpx2.Timeout(20.0, read=1.2)
CHAT = {"model": "mock-small", "messages": [{"role": "user", "content": "hi there"}]}


def _mock(**options: Any) -> dict[str, Any]:
    return {"llmmesh": {"max_retries": 0, "extensions": {"mock": options}}}


@pytest.fixture(scope="module")
def door_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    env = {
        "LLMMESH_HTTP_PORT": "0",
        "LLMMESH_HTTP_CORS_ORIGINS": f"{ORIGIN}, http://localhost:5173",
        "LLMMESH_HTTP_STREAM_COMMIT_SECONDS": "0.2",
        "LLMMESH_HTTP_STREAM_KEEPALIVE_SECONDS": "0.25",
    }
    with MockMesh(
        mock_config=MOCK_CONFIG, routing=ROUTING, env=env, workdir=tmp_path_factory.mktemp("door-mesh")
    ) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(door_mesh: MockMesh) -> str:
    return f"http://127.0.0.1:{http_port_of(door_mesh)}"


@pytest.fixture
async def raw(base_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=base_url, timeout=20) as http:
        yield http


class TestCors:
    async def test_browser_preflight_is_answered(self, raw: httpx2.AsyncClient) -> None:
        """A browser's preflight for a JSON POST with a bearer key gets 200 and the allow headers."""
        reply = await raw.options(
            "/v1/chat/completions",
            headers={
                "origin": ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type, x-stainless-os",
            },
        )
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in reply.headers["access-control-allow-methods"]
        allowed = reply.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-stainless-os"} <= {h.strip() for h in allowed.split(",")}
        assert reply.headers["access-control-max-age"] == "600"

    async def test_answer_to_allowed_origin_exposes_mesh_headers(self, raw: httpx2.AsyncClient) -> None:
        """The actual request from an allowed origin carries allow-origin and exposes the mesh's headers."""
        reply = await raw.post("/v1/chat/completions", json=CHAT, headers={"origin": "http://localhost:5173"})
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == "http://localhost:5173"
        exposed = reply.headers["access-control-expose-headers"].lower()
        assert "x-llmmesh-attempts" in exposed
        assert "x-request-id" in exposed

    async def test_other_origin_gets_no_cors_headers(self, raw: httpx2.AsyncClient) -> None:
        """A preflight from an origin not listed is refused, and answers to it carry no allow-origin."""
        preflight = await raw.options(
            "/v1/responses", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
        )
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        reply = await raw.post("/v1/chat/completions", json=CHAT, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in reply.headers

    def test_cors_is_off_by_default_and_origins_are_checked(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No origins by default; a path or a bare host in the setting is refused at start."""
        monkeypatch.delenv("LLMMESH_HTTP_CORS_ORIGINS", raising=False)
        assert CorsSettings().cors_origins == []
        for bad in ("app.example.com", "https://app.example.com/"):
            monkeypatch.setenv("LLMMESH_HTTP_CORS_ORIGINS", bad)
            with pytest.raises(ValueError, match="is not an origin"):
                CorsSettings()


class TestKeepalive:
    async def test_slow_first_token_survives_a_short_read_timeout(self, base_url: str) -> None:
        """A client whose read timeout is shorter than the first token still reads the whole stream."""
        body = {**CHAT, "stream": True, **_mock(delay_ms=FIRST_TOKEN_MS)}
        async with (
            httpx2.AsyncClient(base_url=base_url, timeout=READ_TIMEOUT) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as reply,
        ):
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            text = (await reply.aread()).decode()
        assert text.startswith(KEEPALIVE_COMMENT.decode())
        assert text.rstrip().endswith("data: [DONE]")

    async def test_sdk_with_short_timeout_streams_responses(self, base_url: str) -> None:
        """The openai SDK with a read timeout below the first token streams /v1/responses to completion."""
        async with openai.AsyncOpenAI(
            base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=READ_TIMEOUT
        ) as client:
            stream = await client.responses.create(
                model="mock-small", input="slow one", stream=True, extra_body=_mock(delay_ms=FIRST_TOKEN_MS)
            )
            kinds = [event.type async for event in stream]
        assert kinds[0] == "response.created"
        assert kinds[-1] == "response.completed"

    async def test_failure_within_the_commit_wait_is_an_http_status(self, raw: httpx2.AsyncClient) -> None:
        """A stream that fails at once still gets its HTTP status (429 here), not a 200 and an error event."""
        body = {**CHAT, "stream": True, **_mock(fail_code="RESOURCE_EXHAUSTED")}
        reply = await raw.post("/v1/chat/completions", json=body)
        assert reply.status_code == 429

    async def test_failure_after_the_commit_is_an_error_event(self, raw: httpx2.AsyncClient) -> None:
        """A failure after keepalives started ends the committed stream with an error event and no [DONE]."""
        body = {**CHAT, "stream": True, **_mock(delay_ms=800, fail_code="RESOURCE_EXHAUSTED")}
        reply = await raw.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200
        assert reply.text.startswith(KEEPALIVE_COMMENT.decode())
        assert '"type":"rate_limit_error"' in reply.text
        assert "[DONE]" not in reply.text

    async def test_responses_failure_after_the_commit_is_response_failed(self, raw: httpx2.AsyncClient) -> None:
        """On /v1/responses the same failure opens the response and ends it with response.failed."""
        body = {"model": "mock-small", "input": "hi", "stream": True, **_mock(delay_ms=800, fail_code="UNAVAILABLE")}
        reply = await raw.post("/v1/responses", json=body)
        assert reply.status_code == 200
        kinds = [line.removeprefix("event: ") for line in reply.text.splitlines() if line.startswith("event: ")]
        assert kinds == ["response.created", "response.in_progress", "response.failed"]

    async def test_client_gone_during_keepalives_cancels_the_model_call(
        self, base_url: str, door_mesh: MockMesh
    ) -> None:
        """A client that hangs up while only keepalives have come cancels the adapter call."""
        body = {**CHAT, "stream": True, **_mock(delay_ms=30_000)}
        before = len(door_mesh.events("cancelled"))
        async with (
            httpx2.AsyncClient(base_url=base_url, timeout=20) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as reply,
        ):
            assert reply.status_code == 200
            async for chunk in reply.aiter_bytes():
                assert chunk.startswith(b":")
                break
        await _wait_until(lambda: len(door_mesh.events("cancelled")) > before)


async def _wait_until(check: Any, timeout: float = 15.0) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


class TestWireConformance:
    async def test_no_null_system_fingerprint_in_answers_or_chunks(self, raw: httpx2.AsyncClient) -> None:
        """OpenAI's schema types system_fingerprint as a string: the mock has none, so the field is absent."""
        reply = await raw.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 200
        assert "system_fingerprint" not in reply.json()
        streamed = await raw.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert "system_fingerprint" not in streamed.text

    async def test_stream_null_is_the_default(self, raw: httpx2.AsyncClient) -> None:
        """`stream: null` (nullable in the spec) is a unary answer, not a 400."""
        reply = await raw.post("/v1/chat/completions", json={**CHAT, "stream": None})
        assert reply.status_code == 200, reply.text
        assert reply.json()["object"] == "chat.completion"

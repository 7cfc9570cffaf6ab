"""Upstream faults through the whole mesh: keys echoed back in error bodies, and 200s that cannot be read.

The three SDK adapters talk to their loopback fakes, each configured to
echo the credentials it received into every error body (header forms,
`?key=`, the bare value). A router (caller auth, internal token, the HTTP
door), the agent and an OTLP receiver run with them as real processes,
telemetry on. No key may reach a gRPC error or its ErrorInfo, an HTTP error
body, the agent's RunEnd, a span or a log. A 200 whose body is HTML, broken
JSON or JSON of the wrong shape is UNAVAILABLE on every adapter (unary and
streaming), so the router falls back instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx2
import pytest
import yaml

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, chat_pb2, provider_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.auth import INTERNAL_TOKEN_HEADER
from services.common.errors import MeshError
from services.common.otlp_receiver import OtlpReceiver, ReceivedSpan
from services.common.processes import ServiceProcess, start_service
from services.testing import fake_anthropic as fa
from services.testing import fake_google as fg
from services.testing import fake_openai as fo
from tests.security.helpers import INTERNAL_TOKEN, KEY_ALPHA, bearer, write_tenants
from tests.telemetry.conftest import new_traceparent, telemetry_env

# Not shaped like any provider's keys: only redaction by value can catch them.
OPENAI_KEY = "openai-echo-test-7d41c2a9e05b"
ANTHROPIC_KEY = "anthropic-echo-test-3f96b1d08c2e"
GOOGLE_KEY = "google-echo-test-a85e2c71f4d9"
KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY, "google": GOOGLE_KEY}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}
PROVIDERS = tuple(MODELS)
INTERNAL = ((INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN),)


@dataclass
class FaultMesh:
    workdir: Path
    receiver: OtlpReceiver
    openai: fo.FakeOpenAI
    anthropic: fa.FakeAnthropic
    google: fg.FakeGemini
    adapters: dict[str, ServiceProcess] = field(default_factory=dict)
    router: ServiceProcess | None = None
    agent: ServiceProcess | None = None

    @property
    def processes(self) -> list[ServiceProcess]:
        return [p for p in (*self.adapters.values(), self.router, self.agent) if p is not None]

    def script(self, provider: str, reply: Any) -> None:
        """`reply` is the next answer of that provider's fake; earlier requests are forgotten."""
        if provider == "anthropic":
            self.anthropic.reset()
        getattr(self, provider).script(reply)

    def upstream_requests(self, provider: str) -> int:
        fake = getattr(self, provider)
        return len(fake.chat_requests if provider == "openai" else fake.requests)


def _adapter_env(mesh: FaultMesh) -> dict[str, dict[str, str]]:
    return {
        "openai": {"OPENAI_API_KEY": OPENAI_KEY, "LLMMESH_OPENAI_BASE_URL": mesh.openai.url},
        "anthropic": {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "LLMMESH_ANTHROPIC_BASE_URL": mesh.anthropic.url},
        "google": {"GEMINI_API_KEY": GOOGLE_KEY, "GOOGLE_API_KEY": "", "LLMMESH_GOOGLE_BASE_URL": mesh.google.url},
    }


def _start(mesh: FaultMesh) -> None:
    common = {
        **telemetry_env(mesh.receiver),
        "LLMMESH_LOG_LEVEL": "debug",
        "LLMMESH_INTERNAL_TOKEN": INTERNAL_TOKEN,
    }
    for provider, env in _adapter_env(mesh).items():
        mesh.adapters[provider] = start_service(
            ["-m", f"services.providers.{provider}"],
            name=provider,
            workdir=mesh.workdir,
            env={**common, **env, "LLMMESH_MODELS": MODELS[provider]},
        )
    # Breakers that close at once and no retries: each test scripts exactly the upstream answers it needs.
    breaker = {"open_s": 0.001, "max_open_s": 0.001}
    routing = {
        "defaults": {"max_retries": 0, "breaker": breaker, "provider_breaker": breaker},
        "providers": {provider: {"kind": provider} for provider in PROVIDERS},
        "models": {model: {"provider": provider} for provider, model in MODELS.items()},
    }
    (mesh.workdir / "routing.yaml").write_text(yaml.safe_dump(routing))
    static = {"services": {f"llmmesh-provider-{p}": [mesh.adapters[p].address] for p in PROVIDERS}}
    (mesh.workdir / "static.yaml").write_text(yaml.safe_dump(static))
    tenants = write_tenants(
        mesh.workdir / "tenants.yaml", [{"name": "alpha", "keys": [KEY_ALPHA], "allowed_models": ["*"]}]
    )
    mesh.router = start_service(
        ["-m", "services.router"],
        name="router",
        workdir=mesh.workdir,
        env={
            **common,
            "LLMMESH_AUTH_FILE": str(tenants),
            "LLMMESH_ROUTING_FILE": str(mesh.workdir / "routing.yaml"),
            "LLMMESH_STATIC_DISCOVERY_FILE": str(mesh.workdir / "static.yaml"),
            "LLMMESH_HTTP_PORT": "0",
        },
    )
    mesh.agent = start_service(
        ["-m", "services.agent"],
        name="agent",
        workdir=mesh.workdir,
        env={**common, "LLMMESH_AUTH_FILE": str(tenants), "LLMMESH_ROUTER_ADDRESS": mesh.router.address},
    )


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    with OtlpReceiver() as receiver:
        mesh = FaultMesh(
            tmp_path_factory.mktemp("upstream-faults"),
            receiver,
            fo.FakeOpenAI(expected_key=OPENAI_KEY, echo_credentials=True).start(),
            fa.FakeAnthropic(api_key=ANTHROPIC_KEY, echo_credentials=True).start(),
            fg.FakeGemini(api_key=GOOGLE_KEY, echo_credentials=True).start(),
        )
        try:
            _start(mesh)
            yield mesh
        finally:
            for process in mesh.processes:
                process.kill()
            for fake in (mesh.openai, mesh.anthropic, mesh.google):
                fake.stop()


def _auth_failure(provider: str) -> Any:
    """A 401 from the provider; the fake appends the credentials it was sent."""
    if provider == "openai":
        return fo.Reply.error(401, "Incorrect API key provided", code="invalid_api_key")
    if provider == "anthropic":
        return fa.error_reply(401, "authentication_error", "invalid x-api-key")
    return fg.error_reply(401, "API key not valid")


def _server_failure(provider: str) -> Any:
    if provider == "openai":
        return fo.Reply.error(500, "The server had an error", type="server_error")
    if provider == "anthropic":
        return fa.error_reply(500, "api_error", "Internal server error")
    return fg.error_reply(500, "Internal error encountered")


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


def _leaks(text: str) -> list[str]:
    return [provider for provider, key in KEYS.items() if key in text]


def _seen(error: grpc.aio.AioRpcError) -> str:
    """All a caller can read of a failed call: code, message and every trailer, ErrorInfo included."""
    parsed = MeshError.from_rpc_error(error)
    return f"{parsed.code.name} {parsed.message} {parsed.metadata} {error.trailing_metadata()!r}"


async def _router_failures(mesh: FaultMesh, provider: str) -> list[str]:
    """One unary and one streaming call through the router, each answered by an echoing 401."""
    assert mesh.router is not None
    seen: list[str] = []
    async with grpc.aio.insecure_channel(mesh.router.address) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        for streaming in (False, True):
            mesh.script(provider, _auth_failure(provider))
            request = {"model": MODELS[provider], "messages": [_user("hello")]}
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                if streaming:
                    async for _ in stub.StreamChat(
                        rpb.StreamChatRequest(**request), timeout=15, metadata=bearer(KEY_ALPHA)
                    ):
                        pass
                else:
                    await stub.Chat(rpb.ChatRequest(**request), timeout=15, metadata=bearer(KEY_ALPHA))
            seen.append(_seen(caught.value))
    return seen


def _http_port(router: ServiceProcess) -> int:
    """The HTTP door's port, from the router's log line (it binds before it reports SERVING)."""
    for line in router.log().splitlines():
        if '"http gateway serving"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError(f"router did not log its HTTP port:\n{router.log()}")


def _all_text(span: ReceivedSpan) -> str:
    return f"{span.name} {span.status_message} {span.attributes!r} {span.events!r}"


class TestEchoedKeys:
    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_grpc_errors_carry_no_key(self, faults: FaultMesh, provider: str) -> None:
        """An echoed key is redacted in the adapter's own status and ErrorInfo and in the router's, unary and streaming."""
        seen = await _router_failures(faults, provider)
        faults.script(provider, _server_failure(provider))
        async with grpc.aio.insecure_channel(faults.adapters[provider].address) as channel:
            stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Chat(
                    ppb.ProviderServiceChatRequest(model=MODELS[provider], messages=[_user("hi")]),
                    timeout=15,
                    metadata=INTERNAL,
                )
        seen.append(_seen(caught.value))
        assert [_leaks(text) for text in seen] == [[], [], []]
        # The echo did arrive and was cut out, not lost on the way.
        assert all("[redacted]" in text for text in seen), seen

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_http_door_error_bodies_carry_no_key(self, faults: FaultMesh, provider: str) -> None:
        """The HTTP door's 502 (provider rejected our key) and 503 bodies hold the redacted text, never the key."""
        assert faults.router is not None
        url = f"http://127.0.0.1:{_http_port(faults.router)}/v1/chat/completions"
        body = {"model": MODELS[provider], "messages": [{"role": "user", "content": "hello"}]}
        answers = []
        async with httpx2.AsyncClient(timeout=15) as client:
            for reply in (_auth_failure(provider), _server_failure(provider)):
                faults.script(provider, reply)
                response = await client.post(url, json=body, headers={"authorization": f"Bearer {KEY_ALPHA}"})
                answers.append((response.status_code, response.text, _leaks(response.text + str(response.headers))))
        assert [(code, leaks) for code, _, leaks in answers] == [(502, []), (503, [])]
        assert all("[redacted]" in text for _, text, _ in answers)

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_agent_run_end_and_spans_carry_no_key(self, faults: FaultMesh, provider: str) -> None:
        """An agent run whose model call meets an echoing 401 ends with ERROR; neither the RunEnd nor any span of its trace holds the key."""
        assert faults.agent is not None
        faults.script(provider, _auth_failure(provider))
        traceparent, trace_id = new_traceparent()
        async with grpc.aio.insecure_channel(faults.agent.address) as channel:
            response = await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=apb.AgentTask(input="hello", model=MODELS[provider])),
                timeout=20,
                metadata=(*bearer(KEY_ALPHA), ("traceparent", traceparent)),
            )
        assert response.end.reason == apb.RUN_END_REASON_ERROR
        assert "[redacted]" in response.end.detail
        assert _leaks(str(response)) == []
        # The failed `chat` spans of agent, router and adapter, and the agent's run span (the last to end).
        services = {"llmmesh-agent", "llmmesh-router", f"llmmesh-provider-{provider}"}
        spans = faults.receiver.wait_for(
            lambda r: (
                (found := r.spans(trace_id))
                and services <= {s.service for s in found if s.name.startswith("chat ") and s.status_code == 2}
                and any(s.name.startswith("invoke_agent ") for s in found)
                and found
            ),
            timeout=20,
        )
        assert [(s.service, s.name) for s in spans if _leaks(_all_text(s))] == []
        adapter_spans = [s for s in spans if s.service == f"llmmesh-provider-{provider}" and s.status_code == 2]
        assert any("[redacted]" in s.status_message for s in adapter_spans), [s.status_message for s in spans]


def _html(provider: str) -> Any:
    page = b"<html><body>502 Bad Gateway</body></html>"
    if provider == "openai":
        return fo.Reply.raw(page, content_type="text/html")
    if provider == "anthropic":
        return fa.raw_reply(page, content_type="text/html")
    return fg.Reply(raw_body=page, content_type="text/html")


def _broken_json(provider: str) -> Any:
    cut = b'{"id": "x", "candidates": [{"content": '
    if provider == "openai":
        return fo.Reply.raw(cut, content_type="application/json")
    if provider == "anthropic":
        return fa.raw_reply(cut, content_type="application/json")
    return fg.Reply(raw_body=cut)


def _wrong_shape(provider: str) -> Any:
    """Valid JSON in each API's envelope, with a field of the wrong type (the SDKs do not validate)."""
    if provider == "openai":
        return fo.Reply.json({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": 7}]})
    if provider == "anthropic":
        return fa.json_reply({"id": "msg_x", "type": "message", "role": "assistant", "content": 5})
    return fg.Reply(body={"candidates": 5})


def _broken_event(provider: str) -> Any:
    if provider == "openai":
        return fo.Reply.stream(["{not json"])
    if provider == "anthropic":
        return fa.sse_reply([("message_start", "{not json")])
    return fg.Reply(events=["{not json"])


def _wrong_shape_event(provider: str) -> Any:
    if provider == "openai":
        return fo.Reply.stream([{"id": "x", "object": "chat.completion.chunk", "choices": 5}])
    if provider == "anthropic":
        return fa.sse_reply([("message_start", {"type": "message_start", "message": 5})])
    return fg.Reply(events=[{"candidates": 5}])


UNARY_BODIES = {"html": _html, "broken-json": _broken_json, "wrong-shape": _wrong_shape}
STREAM_BODIES = {"html": _html, "broken-event": _broken_event, "wrong-shape-event": _wrong_shape_event}


async def _adapter_error(mesh: FaultMesh, provider: str, *, streaming: bool) -> MeshError:
    request = {"model": MODELS[provider], "messages": [_user("hi")]}
    async with grpc.aio.insecure_channel(mesh.adapters[provider].address) as channel:
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if streaming:
                async for _ in stub.StreamChat(
                    ppb.ProviderServiceStreamChatRequest(**request), timeout=15, metadata=INTERNAL
                ):
                    pass
            else:
                await stub.Chat(ppb.ProviderServiceChatRequest(**request), timeout=15, metadata=INTERNAL)
    return MeshError.from_rpc_error(caught.value)


class TestMalformedBodies:
    @pytest.mark.parametrize("kind", UNARY_BODIES)
    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_unusable_200_is_unavailable(self, faults: FaultMesh, provider: str, kind: str) -> None:
        """A 200 that is HTML, broken JSON or the wrong shape is UNAVAILABLE UPSTREAM_MALFORMED_RESPONSE, after one request."""
        faults.script(provider, UNARY_BODIES[kind](provider))
        error = await _adapter_error(faults, provider, streaming=False)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_MALFORMED_RESPONSE"), error
        assert faults.upstream_requests(provider) == 1

    @pytest.mark.parametrize("kind", STREAM_BODIES)
    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_unusable_stream_is_unavailable(self, faults: FaultMesh, provider: str, kind: str) -> None:
        """A stream answered with HTML, a non-JSON event or an event of the wrong shape is UNAVAILABLE, never INTERNAL."""
        faults.script(provider, STREAM_BODIES[kind](provider))
        error = await _adapter_error(faults, provider, streaming=True)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_MALFORMED_RESPONSE"), error

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_router_falls_back_past_a_malformed_body(self, faults: FaultMesh, provider: str) -> None:
        """The router moves on from an unreadable 200 to the fallback model, which answers."""
        assert faults.router is not None
        fallback = PROVIDERS[(PROVIDERS.index(provider) + 1) % len(PROVIDERS)]
        faults.script(provider, _wrong_shape(provider))
        faults.script(fallback, _answer(fallback))
        async with grpc.aio.insecure_channel(faults.router.address) as channel:
            response = await router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                rpb.ChatRequest(
                    model=MODELS[provider],
                    messages=[_user("hi")],
                    routing=rpb.RoutingPolicy(fallback_models=[MODELS[fallback]], max_retries=0),
                ),
                timeout=15,
                metadata=bearer(KEY_ALPHA),
            )
        assert response.model == MODELS[fallback]
        assert [(a.model, a.code, a.reason) for a in response.attempts] == [
            (MODELS[provider], grpc.StatusCode.UNAVAILABLE.value[0], "UPSTREAM_MALFORMED_RESPONSE"),
            (MODELS[fallback], 0, ""),
        ]


def _answer(provider: str) -> Any:
    if provider == "openai":
        return fo.Reply.json(fo.completion("fallback answer"))
    if provider == "anthropic":
        return fa.json_reply(fa.message(text="fallback answer"))
    return fg.Reply(body=fg.response([fg.text_part("fallback answer")]))


class TestLogs:
    def test_no_key_in_any_log_and_nothing_internal(self, faults: FaultMesh) -> None:
        """After everything above (run last in this module), no process logged a key or an unhandled error."""
        for process in faults.processes:
            process.terminate()
        logs = {process.name: process.log() for process in faults.processes}
        assert all(logs.values())
        assert {name: _leaks(text) for name, text in logs.items()} == {name: [] for name in logs}
        assert [name for name, text in logs.items() if "unhandled error" in text] == []

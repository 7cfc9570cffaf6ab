"""Calls through the production-shaped mesh: every provider, unary, streaming and tools, both doors, the agent."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import httpx2 as httpx
import pytest
from google.protobuf.duration_pb2 import Duration

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, chat_pb2, provider_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.otlp_receiver import OtlpReceiver
from services.testing import fake_openai
from services.testing.production import ProductionMesh
from tests.production.helpers import (
    MODELS,
    SDK_KINDS,
    WEATHER_TOOL,
    chat,
    script_text,
    script_tool_call,
    stream_chat,
    upstream_requests,
    weather_tool,
)

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]


class TestEverythingIsOn:
    """The topology really is the secure one: a broken setting here would make the other cases prove little."""

    def test_adapters_accept_only_the_router(self, mesh: ProductionMesh) -> None:
        """Straight to an adapter: TLS needs a client certificate, and both the token and the router's name must match."""
        token = (("llmmesh-internal-token", mesh.secrets.value("llmmesh-internal", "token")),)
        cases = {
            "no certificate": (None, token),
            "router, no token": ("llmmesh-router", ()),
            "agent, token": ("llmmesh-agent", token),
            "router, token": ("llmmesh-router", token),
        }
        codes = {who: _list_adapter_models(mesh, "openai-0", pair, metadata) for who, (pair, metadata) in cases.items()}
        assert codes == {
            "no certificate": grpc.StatusCode.UNAVAILABLE,  # the TLS handshake fails
            "router, no token": grpc.StatusCode.UNAUTHENTICATED,
            "agent, token": grpc.StatusCode.PERMISSION_DENIED,  # not llmmesh-router (LLMMESH_INTERNAL_ALLOWED_CLIENTS)
            "router, token": grpc.StatusCode.OK,
        }

    def test_callers_need_a_tenant_key(self, mesh: ProductionMesh) -> None:
        """Router and agent refuse a caller without a key."""
        for address, call in (
            (
                mesh.router_address,
                lambda c: router_service_pb2_grpc.RouterServiceStub(c).Chat(chat("mock-small"), timeout=10),
            ),
            (
                mesh.agent_address,
                lambda c: agent_service_pb2_grpc.AgentServiceStub(c).Run(
                    apb.RunRequest(task=apb.AgentTask(input="hi")), timeout=10
                ),
            ),
        ):
            with mesh.channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
                call(channel)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]

    def test_quotas_count_in_redis(self, mesh: ProductionMesh) -> None:
        """A call by each tenant leaves its counters in the shared redis-server (the routers' quotas are shared)."""
        with mesh.channel() as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            for tenant in mesh.tenant_keys:
                stub.Chat(chat("mock-small"), timeout=30, metadata=mesh.caller(tenant))
        keys = mesh.redis.command("KEYS", "*").decode()
        assert all(tenant in keys for tenant in mesh.tenant_keys), keys

    def test_router_and_adapters_export_over_otlp(self, mesh: ProductionMesh) -> None:
        """Routers and adapters have gauges (in flight, breakers), so their metrics reach the receiver with no traffic.

        The agent's instruments fill only when it runs (TestAgent checks them); the example ToolService has none.
        """
        _wait_for_metrics(mesh, {f"llmmesh-provider-{kind}" for kind in MODELS} | {"llmmesh-router"})

    def test_every_consul_request_carries_a_token(self, mesh: ProductionMesh) -> None:
        """Registrations and watches all authenticate to the ACL-enforcing Consul double."""
        assert mesh.consul.requests
        assert [r for r in mesh.consul.requests if not r[2]] == []


def _list_adapter_models(
    mesh: ProductionMesh, adapter: str, identity: str | None, metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode:
    """ListModels on one adapter as `identity` (a certificate the mesh issued; None: no client certificate)."""
    files = mesh.workdir / "volumes" / f"{identity}-tls"
    key, cert = ((files / "tls.key").read_bytes(), (files / "tls.crt").read_bytes()) if identity else (None, None)
    credentials = grpc.ssl_channel_credentials(mesh.ca_file.read_bytes(), key, cert)
    with grpc.secure_channel(mesh.processes[adapter].address, credentials) as channel:
        try:
            provider_service_pb2_grpc.ProviderServiceStub(channel).ListModels(
                ppb.ProviderServiceListModelsRequest(), timeout=10, metadata=metadata
            )
        except grpc.RpcError as error:
            return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


class TestEveryProvider:
    @pytest.mark.parametrize("kind", list(MODELS))
    def test_unary(self, mesh: ProductionMesh, kind: str) -> None:
        """A unary chat through the Service address reaches the kind's adapter (over mTLS, with the token) and back."""
        script_text(mesh, kind, f"hello from {kind}")
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS[kind], f"hello {kind}"), timeout=30, metadata=mesh.caller()
            )
        assert response.model == MODELS[kind]
        assert response.finish_reason == chat_pb2.FINISH_REASON_STOP
        if kind == "mock":
            assert f"hello {kind}" in response.message.content[0].text
        else:
            assert response.message.content[0].text.strip() == f"hello from {kind}"
            assert upstream_requests(mesh, kind) == 1

    @pytest.mark.parametrize("kind", list(MODELS))
    def test_streaming(self, mesh: ProductionMesh, kind: str) -> None:
        """A stream carries the answer in deltas and ends with the final message (the token rides streams too)."""
        script_text(mesh, kind, f"streamed words from {kind}", stream=True)
        with mesh.channel() as channel:
            events = list(
                router_service_pb2_grpc.RouterServiceStub(channel).StreamChat(
                    stream_chat(MODELS[kind], f"stream {kind} please"), timeout=30, metadata=mesh.caller("team-b")
                )
            )
        text = "".join(event.delta.text for event in events if event.HasField("delta"))
        final = events[-1]
        assert final.HasField("final"), events
        assert final.final.model == MODELS[kind]
        assert final.final.finish_reason == chat_pb2.FINISH_REASON_STOP
        expected = f"stream {kind} please" if kind == "mock" else f"streamed words from {kind}"
        assert expected in text
        assert final.final.usage.output_tokens > 0

    @pytest.mark.parametrize("kind", SDK_KINDS)
    def test_tool_call(self, mesh: ProductionMesh, kind: str) -> None:
        """The tool definition reaches the provider and its tool call comes back in the unified shape."""
        script_tool_call(mesh, kind, WEATHER_TOOL, {"city": "Oslo"})
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS[kind], "weather in Oslo?", tools=[weather_tool()]), timeout=30, metadata=mesh.caller()
            )
        assert response.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
        [call] = response.message.tool_calls
        assert call.name == WEATHER_TOOL
        assert json.loads(call.arguments_json) == {"city": "Oslo"}
        assert WEATHER_TOOL in json.dumps(_upstream_body(mesh, kind))


def _upstream_body(mesh: ProductionMesh, kind: str) -> object:
    requests = {
        "openai": mesh.openai.chat_requests,
        "anthropic": mesh.anthropic.requests,
        "google": mesh.google.requests,
    }
    [request] = requests[kind]
    return request.body


class TestAgent:
    def test_run_with_a_remote_tool(self, mesh: ProductionMesh) -> None:
        """The prod researcher profile (all tools, on Anthropic) calls the ToolService found in Consul over mTLS."""
        script_tool_call(mesh, "anthropic", "uppercase", {"text": "hello mesh"})
        script_text(mesh, "anthropic", "It says HELLO MESH")
        task = apb.AgentTask(input="Shout hello mesh", profile="researcher", tools=["uppercase"])
        with mesh.channel(mesh.agent_address) as channel:
            response = agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=task), timeout=60, metadata=mesh.caller("team-b")
            )
        assert response.end.reason == apb.RUN_END_REASON_ANSWER, response.end
        assert response.end.answer == "It says HELLO MESH"
        [finished] = [e.tool_call_finished.result for e in response.events if e.HasField("tool_call_finished")]
        assert not finished.is_error, finished.content
        assert "HELLO MESH" in finished.content
        assert "HELLO MESH" in json.dumps(mesh.anthropic.requests[1].body)  # the observation went back to the model
        _wait_for_metrics(mesh, {"llmmesh-agent"})  # the run's metrics are exported over OTLP


class TestHttpDoor:
    def test_chat(self, mesh: ProductionMesh) -> None:
        """OpenAI-compatible chat on the HTTP door, with a tenant key, reaches the provider through the same engine."""
        script_text(mesh, "google", "door answer")
        response = httpx.post(
            f"{mesh.http_url(1)}/v1/chat/completions",
            json={"model": MODELS["google"], "messages": [{"role": "user", "content": "hi door"}]},
            headers=_bearer(mesh, "team-a"),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"].strip() == "door answer"
        assert body["model"] == MODELS["google"]

    def test_stream(self, mesh: ProductionMesh) -> None:
        """A streamed HTTP answer arrives as SSE chunks ending in [DONE]."""
        script_text(mesh, "openai", "door stream answer", stream=True)
        request = {"model": MODELS["openai"], "stream": True, "messages": [{"role": "user", "content": "hi door"}]}
        text, last = _door_stream(mesh, request, "team-b")
        assert last == "[DONE]"
        assert text.strip() == "door stream answer"

    def test_without_a_key_is_refused(self, mesh: ProductionMesh) -> None:
        """Caller auth is on at the HTTP door too: no key, 401 and nothing reaches a provider."""
        response = httpx.post(
            f"{mesh.http_url(0)}/v1/chat/completions",
            json={"model": MODELS["openai"], "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert response.status_code == 401
        assert mesh.openai.chat_requests == []


def _wait_for_metrics(mesh: ProductionMesh, services: set[str]) -> None:
    exported: set[str] = set()

    def all_exported(receiver: OtlpReceiver) -> bool:
        exported.update(point.service for point in receiver.metric_points())
        return services <= exported

    try:
        mesh.receiver.wait_for(all_exported, timeout=30)
    except AssertionError:
        pytest.fail(f"no metrics over OTLP from {sorted(services - exported)}")


def _door_stream(mesh: ProductionMesh, request: dict[str, object], tenant: str) -> tuple[str, str]:
    """A chat-completions stream through the HTTP door: the content its chunks carry, and its last data line."""
    with httpx.stream(
        "POST", f"{mesh.http_url(0)}/v1/chat/completions", json=request, headers=_bearer(mesh, tenant), timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return text, lines[-1]


def _bearer(mesh: ProductionMesh, tenant: str) -> dict[str, str]:
    return dict(mesh.caller(tenant))


class TestResilience:
    def test_fallback_across_providers(self, mesh: ProductionMesh) -> None:
        """OpenAI answering 503 (and its retry too): the prod routing falls back to claude-haiku-4-5."""
        overloaded = fake_openai.Reply.error(503, "overloaded", type="server_error")
        mesh.openai.script(overloaded, overloaded)
        script_text(mesh, "anthropic", "the fallback answered")
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS["openai"]), timeout=30, metadata=mesh.caller()
            )
        assert response.model == MODELS["anthropic"]
        assert response.message.content[0].text == "the fallback answered"
        providers = [(a.provider, a.outcome) for a in response.attempts]
        assert providers[0] == ("openai", rpb.ATTEMPT_OUTCOME_FAILED)
        assert providers[-1] == ("anthropic", rpb.ATTEMPT_OUTCOME_SUCCEEDED)

    def test_hedged_call(self, mesh: ProductionMesh) -> None:
        """A slow OpenAI answer is hedged after 200 ms onto the fallback, which wins; the slow attempt is cancelled."""
        mesh.openai.script(fake_openai.Reply.json(fake_openai.completion("too late"), delay=3.0))
        script_text(mesh, "anthropic", "the hedge won")
        policy = rpb.RoutingPolicy(strategy=rpb.ROUTING_STRATEGY_HEDGE, hedge_delay=Duration(nanos=200_000_000))
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS["openai"], routing=policy), timeout=30, metadata=mesh.caller("team-b")
            )
        assert response.message.content[0].text == "the hedge won"
        outcomes = {a.provider: (a.outcome, a.hedged) for a in response.attempts}
        assert outcomes["anthropic"] == (rpb.ATTEMPT_OUTCOME_SUCCEEDED, True)
        assert outcomes["openai"][0] == rpb.ATTEMPT_OUTCOME_CANCELLED

    def test_caller_cancels_a_stream_midway(self, mesh: ProductionMesh) -> None:
        """A caller leaving after two chunks cancels the router's call, the adapter's, and the SDK's HTTP stream."""
        words = [f"w{i} " for i in range(100)]
        mesh.openai.script(fake_openai.Reply.stream(fake_openai.text_stream(words), event_delay=0.1))
        with mesh.channel() as channel:
            stream = router_service_pb2_grpc.RouterServiceStub(channel).StreamChat(
                stream_chat(MODELS["openai"]), timeout=60, metadata=mesh.caller()
            )
            received = [next(stream), next(stream)]
            stream.cancel()
        assert all(event.HasField("delta") for event in received)
        assert mesh.openai.wait_disconnected(15), "the upstream stream ran on after the caller left"


class TestStreamCoalescing:
    """The adapter sends the deltas already waiting as one message; a paced stream still goes chunk by chunk."""

    def test_a_burst_arrives_in_fewer_messages_through_both_doors(self, mesh: ProductionMesh) -> None:
        prompt = " ".join(f"w{i}" for i in range(200))
        expected = f"[mock mock-small] {prompt}"
        with mesh.channel() as channel:
            events = list(
                router_service_pb2_grpc.RouterServiceStub(channel).StreamChat(
                    stream_chat("mock-small", prompt), timeout=30, metadata=mesh.caller("team-b")
                )
            )
        deltas = [event.delta.text for event in events if event.HasField("delta")]
        assert events[-1].HasField("final")
        assert "".join(deltas) == expected
        assert len(deltas) < 200
        request = {"model": "mock-small", "stream": True, "messages": [{"role": "user", "content": prompt}]}
        assert _door_stream(mesh, request, "team-b") == (expected, "[DONE]")

    def test_a_paced_stream_is_not_held_back(self, mesh: ProductionMesh) -> None:
        with mesh.channel() as channel:
            events = list(
                router_service_pb2_grpc.RouterServiceStub(channel).StreamChat(
                    stream_chat("mock-slow", "one two"), timeout=30, metadata=mesh.caller("team-b")
                )
            )
        assert [event.delta.text for event in events if event.HasField("delta")] == [
            "[mock ",
            "mock-slow] ",
            "one ",
            "two",
        ]


class TestRequestMetrics:
    def test_both_doors_are_counted(self, mesh: ProductionMesh) -> None:
        """A gRPC chat, an HTTP chat and an HTTP refusal each raise the routers' request counter by one, per door."""
        keys = {("grpc", "OK"), ("http", "OK"), ("http", "UNAUTHENTICATED")}
        before = _settled_request_counts(mesh)
        with mesh.channel() as channel:
            router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat("mock-small"), timeout=30, metadata=mesh.caller()
            )
        request = {"model": "mock-small", "messages": [{"role": "user", "content": "count me"}]}
        url = f"{mesh.http_url(0)}/v1/chat/completions"
        assert httpx.post(url, json=request, headers=_bearer(mesh, "team-b"), timeout=30).status_code == 200
        assert httpx.post(url, json=request, timeout=30).status_code == 401

        def raised() -> dict[tuple[str, str], float]:
            after = _request_counts(mesh)
            grown = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in keys}
            return grown if all(grown.values()) else {}

        grown = mesh.receiver.wait_for(lambda _: raised(), timeout=30)
        assert grown == dict.fromkeys(keys, 1.0)


def _settled_request_counts(
    mesh: ProductionMesh, quiet: float = 2.5, within: float = 30.0
) -> dict[tuple[str, str], float]:
    """The counts once no export has changed them for `quiet` seconds: earlier tests' requests arrive a second late."""
    deadline = time.monotonic() + within
    counts, since = _request_counts(mesh), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.25)
        latest = _request_counts(mesh)
        if latest != counts:
            counts, since = latest, time.monotonic()
    return counts


def _request_counts(mesh: ProductionMesh) -> dict[tuple[str, str], float]:
    """(door, code) → requests over both routers, each series' newest cumulative value (a refused key names no model)."""
    newest: dict[tuple[str, str, tuple[tuple[str, Any], ...]], tuple[int, float]] = {}
    for point in mesh.receiver.metric_points("llmmesh.router.requests", "llmmesh-router"):
        key = (point.instance, str(point.attributes.get("llmmesh.door")), tuple(sorted(point.attributes.items())))
        if point.time_ns >= newest.get(key, (0, 0.0))[0]:
            newest[key] = (point.time_ns, point.value)
    counts: dict[tuple[str, str], float] = {}
    for (_, door, attributes), (_, value) in newest.items():
        code = str(dict(attributes).get("llmmesh.code"))
        counts[door, code] = counts.get((door, code), 0.0) + value
    return counts

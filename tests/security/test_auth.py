"""Caller auth on router and agent, model permissions after resolution, adapters only for the router."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, chat_pb2, provider_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.common.tenants import hash_api_key
from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import http_port_of
from tests.security.helpers import (
    INTERNAL_TOKEN,
    KEY_ALPHA,
    KEY_BETA,
    KEY_LISTED_REVOKED,
    KEY_REVOKED,
    KEY_UNKNOWN,
    bearer,
    error_of,
    write_tenants,
)

MOCK_CONFIG = {
    "models": [
        {"name": "mock-small", "context_window": 8192},
        {"name": "mock-large", "context_window": 128000},
        {"name": "mock-agent", "context_window": 32000, "scripted": True},
        {"name": "flaky", "failures": [{"code": "UNAVAILABLE", "rate": 1.0}]},
    ]
}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "models": {
        "mock-small": {"provider": "mock", "context_window": 8192, "aliases": ["small"]},
        "mock-large": {"provider": "mock", "context_window": 128000},
        "mock-agent": {"provider": "mock", "context_window": 32000},
        "flaky-model": {"provider": "mock", "upstream_model": "flaky", "fallbacks": ["mock-large"]},
    },
    "auto": {
        "default_tier": "cheap",
        "tiers": {"cheap": {"models": ["mock-large", "mock-small"]}, "best": {"models": ["mock-large"]}},
    },
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    """Router with a tenants file; the mock adapter requires the router's internal token."""
    workdir = tmp_path_factory.mktemp("auth")
    tenants = write_tenants(
        workdir / "tenants.yaml",
        [
            {
                "name": "alpha",
                "keys": [
                    KEY_ALPHA,
                    {"id": "alpha-old", "sha256": hash_api_key(KEY_REVOKED), "revoked": True},
                    KEY_LISTED_REVOKED,
                ],
                "allowed_models": ["small", "flaky-model", "auto:cheap", "mock-agent"],
            },
            {"name": "beta", "keys": [KEY_BETA], "allowed_models": ["*"]},
        ],
        revoked_keys=[KEY_LISTED_REVOKED],
    )
    env = {"LLMMESH_AUTH_FILE": str(tenants), "LLMMESH_INTERNAL_TOKEN": INTERNAL_TOKEN, "LLMMESH_HTTP_PORT": "0"}
    with MockMesh(workdir=workdir, mock_config=MOCK_CONFIG, routing=ROUTING, env=env) as mesh:
        yield mesh


def _chat(model: str, **fields: object) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])],
        **fields,
    )


async def _call(mesh: MockMesh, request: rpb.ChatRequest, key: str | None) -> rpb.ChatResponse:
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        return await stub.Chat(request, timeout=10, metadata=bearer(key) if key else None)


class TestCallerAuth:
    async def test_missing_key_is_unauthenticated(self, secured: MockMesh) -> None:
        """No authorization metadata: UNAUTHENTICATED saying how to send the key."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(secured, _chat("mock-small"), None)
        error = error_of(caught.value)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
        assert error.reason == "MISSING_CREDENTIALS"
        assert "authorization: Bearer" in error.message

    async def test_malformed_header_is_unauthenticated(self, secured: MockMesh) -> None:
        """A key without the Bearer scheme is refused and not echoed."""
        async with grpc.aio.insecure_channel(secured.router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Chat(_chat("mock-small"), timeout=10, metadata=(("authorization", KEY_ALPHA),))
        error = error_of(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_CREDENTIALS")
        assert KEY_ALPHA not in error.message

    async def test_wrong_key_is_unauthenticated_without_echo(self, secured: MockMesh) -> None:
        """An unknown key: UNAUTHENTICATED INVALID_API_KEY; the message never contains the key."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(secured, _chat("mock-small"), KEY_UNKNOWN)
        error = error_of(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
        assert KEY_UNKNOWN not in error.message
        assert KEY_UNKNOWN[5:20] not in error.message

    @pytest.mark.parametrize("key", [KEY_REVOKED, KEY_LISTED_REVOKED], ids=["revoked-flag", "revoked-list"])
    async def test_revoked_key_is_unauthenticated(self, secured: MockMesh, key: str) -> None:
        """A revoked key (flag on the key or the file's revoked list) gets its own message naming tenant, not key."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(secured, _chat("mock-small"), key)
        error = error_of(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED")
        assert "revoked" in error.message
        assert "alpha" in error.message
        assert key not in error.message

    async def test_valid_key_chats(self, secured: MockMesh) -> None:
        """A tenant's key works end to end (router → adapter with the internal token)."""
        response = await _call(secured, _chat("small"), KEY_ALPHA)
        assert response.model == "mock-small"

    async def test_stream_carries_internal_token_and_unary_still_works(self, secured: MockMesh) -> None:
        """With the internal token on, streams reach the adapter, and unary calls work after several streams."""
        async with grpc.aio.insecure_channel(secured.router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            for _ in range(3):
                request = rpb.StreamChatRequest(model="small", messages=_chat("small").messages)
                events = [event async for event in stub.StreamChat(request, timeout=10, metadata=bearer(KEY_ALPHA))]
                assert events[-1].HasField("final")
                assert events[-1].final.model == "mock-small"
            answer = await stub.Chat(_chat("small"), timeout=10, metadata=bearer(KEY_ALPHA))
        assert answer.model == "mock-small"

    async def test_health_is_open_without_key(self, secured: MockMesh) -> None:
        """Health checks on router and adapter need no credentials."""
        for address in (secured.router_address, secured.mocks[0].address):
            async with grpc.aio.insecure_channel(address) as channel:
                answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

    def test_no_key_in_router_log(self, secured: MockMesh) -> None:
        """The router log names refusals but never a presented key."""
        assert secured.router is not None
        log = secured.router.log()
        assert "caller refused" in log
        for key in (KEY_ALPHA, KEY_UNKNOWN, KEY_REVOKED, KEY_LISTED_REVOKED, INTERNAL_TOKEN):
            assert key not in log


class TestMeshMisconfiguration:
    async def test_wrong_internal_token_is_the_mesh_not_the_provider(self, tmp_path: Path) -> None:
        """Router and adapter disagree on the token: FAILED_PRECONDITION naming the setting, and no breaker opens."""
        with MockMesh(
            workdir=tmp_path,
            env={"LLMMESH_INTERNAL_TOKEN": INTERNAL_TOKEN},
            mock_env={"LLMMESH_INTERNAL_TOKEN": "another-token"},
        ) as mesh:
            async with grpc.aio.insecure_channel(mesh.router_address) as channel:
                stub = router_service_pb2_grpc.RouterServiceStub(channel)
                # More refusals than the provider breaker's consecutive_failures (10): it must stay closed.
                for _ in range(12):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stub.Chat(_chat("mock-small"), timeout=10)
                    error = error_of(caught.value)
                    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MESH_MISCONFIGURED")
                    assert "LLMMESH_INTERNAL_TOKEN" in error.message


class TestModelPermissions:
    async def test_model_not_allowed(self, secured: MockMesh) -> None:
        """PERMISSION_DENIED names the model and the tenant."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(secured, _chat("mock-large"), KEY_ALPHA)
        error = error_of(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MODEL_NOT_ALLOWED")
        assert "'mock-large'" in error.message
        assert "'alpha'" in error.message

    async def test_requested_fallback_not_allowed(self, secured: MockMesh) -> None:
        """A fallback the caller names is checked too, and the field is named."""
        routing = rpb.RoutingPolicy(fallback_models=["mock-large"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(secured, _chat("mock-small", routing=routing), KEY_ALPHA)
        error = error_of(caught.value)
        assert error.code == grpc.StatusCode.PERMISSION_DENIED
        assert "routing.fallback_models[0]" in error.message

    async def test_routing_file_fallback_never_called_for_tenant(self, secured: MockMesh) -> None:
        """A routing-file fallback the tenant may not use is skipped: never reaches the adapter."""
        secured.clear_events()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(secured, _chat("flaky-model"), KEY_ALPHA)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        called = {event["model"] for event in secured.events("start")}
        assert called == {"flaky"}

    async def test_routing_file_fallback_used_when_allowed(self, secured: MockMesh) -> None:
        """The same request from a tenant allowed everything falls back (the fallback exists)."""
        response = await _call(secured, _chat("flaky-model"), KEY_BETA)
        assert response.model == "mock-large"

    async def test_auto_tier_allowed(self, secured: MockMesh) -> None:
        """An allowed `auto:<tier>` may use every model of the tier."""
        response = await _call(secured, _chat("auto:cheap"), KEY_ALPHA)
        assert response.model == "mock-large"

    async def test_auto_tier_not_allowed_filters_to_allowed_models(self, secured: MockMesh) -> None:
        """Through a tier the tenant was not given, only its allowed models are candidates; none: denied."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(secured, _chat("auto:best"), KEY_ALPHA)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "alpha" in (caught.value.details() or "")


class TestHttpDoor:
    def test_same_keys_and_permissions_over_http(self, secured: MockMesh) -> None:
        """The OpenAI-compatible door: 401 without a key, 403 for a model not allowed, 200 for an allowed one."""
        url = f"http://127.0.0.1:{http_port_of(secured)}/v1/chat/completions"
        bodies: list[str] = []

        def post(model: str, key: str | None) -> int:
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
            headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
            try:
                with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as error:
                bodies.append(error.read().decode())
                return int(error.code)

        assert post("mock-small", None) == 401
        assert post("mock-small", KEY_UNKNOWN) == 401
        assert post("mock-large", KEY_ALPHA) == 403
        assert post("mock-small", KEY_ALPHA) == 200
        assert not [body for body in bodies if KEY_UNKNOWN in body]


class TestAdapterOnlyForRouter:
    async def test_direct_call_without_token_refused(self, secured: MockMesh) -> None:
        """Calling an adapter directly without the router's token: UNAUTHENTICATED, nothing reaches the provider."""
        secured.clear_events()
        request = ppb.ProviderServiceChatRequest(model="mock-small", messages=_chat("x").messages)
        async with grpc.aio.insecure_channel(secured.mocks[0].address) as channel:
            stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
            for metadata in (None, (("llmmesh-internal-token", "guess"),), bearer(KEY_BETA)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Chat(request, timeout=5, metadata=metadata)
                error = error_of(caught.value)
                assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CALLER_NOT_ROUTER")
            answer = await stub.Chat(request, timeout=5, metadata=(("llmmesh-internal-token", INTERNAL_TOKEN),))
        assert answer.message.content[0].text
        assert len(secured.events("start")) == 1


@pytest.fixture(scope="module")
def agent(secured: MockMesh) -> Iterator[ServiceProcess]:
    """An agent with auth on, forwarding its callers' keys to the secured router."""
    tenants = Path(secured.env["LLMMESH_AUTH_FILE"])
    process = start_service(
        ["-m", "services.agent"],
        name="agent",
        workdir=secured.workdir,
        env={"LLMMESH_AUTH_FILE": str(tenants), "LLMMESH_ROUTER_ADDRESS": secured.router_address},
    )
    yield process
    process.terminate()


class TestAgentAuth:
    async def _run(self, agent: ServiceProcess, model: str, key: str | None) -> apb.RunResponse:
        task = apb.AgentTask(input="What is the monthly total of 1234 over a year?", model=model, max_iterations=3)
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_service_pb2_grpc.AgentServiceStub(channel)
            return await stub.Run(apb.RunRequest(task=task), timeout=20, metadata=bearer(key) if key else None)

    async def test_agent_refuses_without_key(self, agent: ServiceProcess) -> None:
        """The agent checks keys like the router."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self._run(agent, "mock-agent", None)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    async def test_agent_forwards_the_callers_key(self, agent: ServiceProcess) -> None:
        """The router sees the caller's tenant: alpha's run works on an allowed model, and is denied another."""
        allowed = await self._run(agent, "mock-agent", KEY_ALPHA)
        assert allowed.end.reason == apb.RUN_END_REASON_ANSWER
        denied = await self._run(agent, "mock-large", KEY_ALPHA)
        assert denied.end.reason == apb.RUN_END_REASON_ERROR
        assert "PERMISSION_DENIED" in denied.end.detail or "may not use" in denied.end.detail

"""Both doors admit and count alike, and show a tenant only its models (issue 21, findings 3, 5, 8).

One mock adapter and one router (tenant keys, local quotas, the HTTP door)
run as real processes; each check is made through gRPC and through HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx2
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.testing.mesh import MockMesh, default_routing
from tests.router.test_http_gateway import http_port_of
from tests.security.helpers import bearer, error_of, write_tenants

KEY_BUDGET_GRPC = "llmk_door-budget-grpc-0123456789abcdefghijklmnop"
KEY_BUDGET_HTTP = "llmk_door-budget-http-0123456789abcdefghijklmnop"
KEY_BUDGET_STREAM = "llmk_door-budget-stream-0123456789abcdefghijklm"
KEY_NARROW = "llmk_door-narrow-0123456789abcdefghijklmnopqrstu"
KEY_WIDE = "llmk_door-wide-0123456789abcdefghijklmnopqrstuvw"
# $1 per million input tokens: each "hi" answer costs a few millionths of a dollar.
BUDGET_USD = 0.000005
REQUESTS = 12


def _routing() -> dict[str, Any]:
    routing = default_routing()
    routing["models"]["mock-small"]["price"] = {"input_per_mtok": 1.0, "output_per_mtok": 0.0}
    routing["models"]["mock-small"]["aliases"] = ["small"]
    routing["models"]["mock-large"]["aliases"] = ["large"]
    return routing


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    workdir = tmp_path_factory.mktemp("door-parity")
    budget = {"allowed_models": ["*"], "limits": {"cost_per_day_usd": BUDGET_USD}}
    tenants = write_tenants(
        workdir / "tenants.yaml",
        [
            {"name": "budget-grpc", "keys": [KEY_BUDGET_GRPC], **budget},
            {"name": "budget-http", "keys": [KEY_BUDGET_HTTP], **budget},
            {"name": "budget-stream", "keys": [KEY_BUDGET_STREAM], **budget},
            {"name": "narrow", "keys": [KEY_NARROW], "allowed_models": ["small"]},
            {"name": "wide", "keys": [KEY_WIDE], "allowed_models": ["*"]},
        ],
    )
    env = {
        "LLMMESH_AUTH_FILE": str(tenants),
        "LLMMESH_HTTP_PORT": "0",
        "LLMMESH_MAX_MESSAGES": "3",
        "LLMMESH_MAX_CONTENT_BYTES": "200",
    }
    # The adapter keeps its default limits: what is refused here, the router refused.
    adapter_env = {"LLMMESH_MAX_MESSAGES": "2048", "LLMMESH_MAX_CONTENT_BYTES": "8388608"}
    with MockMesh(workdir=workdir, routing=_routing(), env=env, mock_env=adapter_env) as started:
        yield started


@pytest.fixture
async def stub(mesh: MockMesh) -> AsyncIterator[router_service_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


@pytest.fixture
async def http(mesh: MockMesh) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{http_port_of(mesh)}", timeout=20) as client:
        yield client


def _request(model: str = "mock-small", texts: tuple[str, ...] = ("hi",)) -> rpb.ChatRequest:
    messages = [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=t)]) for t in texts]
    return rpb.ChatRequest(model=model, messages=messages)


def _body(model: str = "mock-small", texts: tuple[str, ...] = ("hi",), **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": t} for t in texts], **extra}


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


class TestSameBudget:
    async def test_daily_budget_refuses_after_the_same_count(
        self, stub: router_service_pb2_grpc.RouterServiceStub, http: httpx2.AsyncClient
    ) -> None:
        """Two tenants with the same tiny daily budget: HTTP answers as many requests as gRPC, then 429."""
        grpc_answered = 0
        grpc_refusal: grpc.aio.AioRpcError | None = None
        for _ in range(REQUESTS):
            try:
                await stub.Chat(_request(), timeout=10, metadata=bearer(KEY_BUDGET_GRPC))
            except grpc.aio.AioRpcError as error:
                grpc_refusal = error
                break
            grpc_answered += 1
        assert grpc_refusal is not None
        assert error_of(grpc_refusal).reason == "TENANT_BUDGET_EXHAUSTED"
        http_answered = 0
        refusal: httpx2.Response | None = None
        for _ in range(REQUESTS):
            response = await http.post("/v1/chat/completions", json=_body(), headers=_auth(KEY_BUDGET_HTTP))
            if response.status_code != 200:
                refusal = response
                break
            http_answered += 1
        assert 0 < grpc_answered < REQUESTS
        assert http_answered == grpc_answered
        assert refusal is not None
        assert refusal.status_code == 429
        assert "daily budget" in refusal.json()["error"]["message"]

    async def test_streams_count_too(self, http: httpx2.AsyncClient) -> None:
        """Streamed HTTP answers spend the budget as well: a tenant that only streams is refused in the end.

        Its own tenant, so it does not lean on the test above having run first (on this worker).
        """
        body = _body(stream=True, stream_options={"include_usage": True})
        answered = 0
        refusal: httpx2.Response | None = None
        for _ in range(REQUESTS):
            response = await http.post("/v1/chat/completions", json=body, headers=_auth(KEY_BUDGET_STREAM))
            if response.status_code != 200:
                refusal = response
                break
            assert "[DONE]" in response.text
            answered += 1
        assert 0 < answered < REQUESTS
        assert refusal is not None
        assert refusal.status_code == 429
        assert "daily budget" in refusal.json()["error"]["message"]


class TestSameInputLimits:
    async def test_max_messages_on_http(self, http: httpx2.AsyncClient) -> None:
        """LLMMESH_MAX_MESSAGES (3) applies to the HTTP door: 400 naming the field and the setting."""
        response = await http.post("/v1/chat/completions", json=_body(texts=("a",) * 4), headers=_auth(KEY_WIDE))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "messages"
        assert "LLMMESH_MAX_MESSAGES" in error["message"]

    async def test_max_content_bytes_on_http(self, http: httpx2.AsyncClient) -> None:
        """LLMMESH_MAX_CONTENT_BYTES (200) applies to the HTTP door too."""
        response = await http.post("/v1/chat/completions", json=_body(texts=("x" * 201,)), headers=_auth(KEY_WIDE))
        assert response.status_code == 400
        assert "LLMMESH_MAX_CONTENT_BYTES" in response.json()["error"]["message"]

    async def test_max_messages_on_grpc(self, stub: router_service_pb2_grpc.RouterServiceStub) -> None:
        """The same limit and words over gRPC."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_request(texts=("a",) * 4), timeout=10, metadata=bearer(KEY_WIDE))
        error = error_of(caught.value)
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "messages")
        assert "LLMMESH_MAX_MESSAGES" in error.message


class TestOnlyOwnModels:
    async def test_list_models_grpc(self, stub: router_service_pb2_grpc.RouterServiceStub) -> None:
        """ListModels shows a tenant only the models it may use."""
        narrow = await stub.ListModels(rpb.ListModelsRequest(), timeout=10, metadata=bearer(KEY_NARROW))
        wide = await stub.ListModels(rpb.ListModelsRequest(), timeout=10, metadata=bearer(KEY_WIDE))
        assert [model.name for model in narrow.models] == ["mock-small"]
        assert {"mock-small", "mock-large", "mock-agent"} <= {model.name for model in wide.models}

    async def test_list_models_http(self, http: httpx2.AsyncClient) -> None:
        """GET /v1/models likewise; another tenant's model is a 404 to GET /v1/models/{model}."""
        listed = (await http.get("/v1/models", headers=_auth(KEY_NARROW))).json()
        assert [entry["id"] for entry in listed["data"]] == ["mock-small"]
        hidden = await http.get("/v1/models/mock-large", headers=_auth(KEY_NARROW))
        assert hidden.status_code == 404
        assert "mock-large" not in hidden.json()["error"]["message"].replace("'mock-large' is not", "")
        assert (await http.get("/v1/models/mock-large", headers=_auth(KEY_WIDE))).status_code == 200

    async def test_did_you_mean_grpc(self, stub: router_service_pb2_grpc.RouterServiceStub) -> None:
        """A near miss is answered with hints among the tenant's own models only."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(_request(model="mock-larg"), timeout=10, metadata=bearer(KEY_NARROW))
        error = error_of(caught.value)
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert "mock-large" not in error.message
        assert "large" not in error.metadata["close_matches"]
        assert "mock-small" in error.message

    async def test_did_you_mean_http(self, http: httpx2.AsyncClient) -> None:
        """The same over HTTP; a tenant that may use everything gets the full hint."""
        narrow = await http.post("/v1/chat/completions", json=_body(model="mock-larg"), headers=_auth(KEY_NARROW))
        wide = await http.post("/v1/chat/completions", json=_body(model="mock-larg"), headers=_auth(KEY_WIDE))
        assert narrow.status_code == wide.status_code == 404
        assert "'mock-large'" not in narrow.json()["error"]["message"]
        assert "'mock-large'" in wide.json()["error"]["message"]

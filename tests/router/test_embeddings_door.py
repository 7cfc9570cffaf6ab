"""POST /v1/embeddings on a live router + mock adapter, driven by the openai SDK and LangChain.

One router (tenant keys, the HTTP door) and one mock adapter as real
processes. The SDK's default asks for base64 and decodes it; float is asked
explicitly; the vectors must equal the gRPC Embed ones bit for bit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx2
import openai
import pytest

from llmmesh.v1 import router_service_pb2 as rpb
from llmmesh.v1 import router_service_pb2_grpc
from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import http_port_of
from tests.security.helpers import bearer, write_tenants

KEY = "llmk_embed-door-0123456789abcdefghijklmnopqrstu"
KEY_CHAT_ONLY = "llmk_embed-chat-0123456789abcdefghijklmnopqrstu"
MOCK_CONFIG = {"models": [{"name": "vec-a", "dimensions": 8}, {"name": "chatty"}]}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "models": {
        "vec-a": {"provider": "mock", "dimensions": 8, "price": {"input_per_mtok": 1.0}},
        "chatty": {"provider": "mock"},
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    workdir = tmp_path_factory.mktemp("embed-door")
    tenants = write_tenants(
        workdir / "tenants.yaml",
        [
            {"name": "rag", "keys": [KEY], "allowed_models": ["*"]},
            {"name": "chat-only", "keys": [KEY_CHAT_ONLY], "allowed_models": ["chatty"]},
        ],
    )
    env = {"LLMMESH_AUTH_FILE": str(tenants), "LLMMESH_HTTP_PORT": "0"}
    with MockMesh(workdir=workdir, mock_config=MOCK_CONFIG, routing=ROUTING, env=env) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(mesh: MockMesh) -> str:
    return f"http://127.0.0.1:{http_port_of(mesh)}/v1"


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=20) as sdk:
        yield sdk


async def _grpc_vectors(mesh: MockMesh, *texts: str, **fields: Any) -> list[list[float]]:
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        request = rpb.EmbedRequest(model="vec-a", inputs=texts, **fields)
        response = await stub.Embed(request, metadata=bearer(KEY), timeout=10)
    return [list(item.values) for item in response.embeddings]


class TestEmbeddingsDoor:
    async def test_sdk_default_base64_equals_grpc(self, client, mesh) -> None:
        """The SDK's default (base64, decoded by it) gives the gRPC vectors exactly, with usage."""
        answer = await client.embeddings.create(model="vec-a", input=["one two", "three"])
        assert [item.embedding for item in answer.data] == await _grpc_vectors(mesh, "one two", "three")
        assert [item.index for item in answer.data] == [0, 1]
        assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (3, 3)
        assert answer.model == "vec-a"

    async def test_float_single_string_and_dimensions(self, client, mesh) -> None:
        answer = await client.embeddings.create(model="vec-a", input="short", dimensions=3, encoding_format="float")
        assert [item.embedding for item in answer.data] == await _grpc_vectors(mesh, "short", dimensions=3)
        assert len(answer.data[0].embedding) == 3

    async def test_explicit_base64_is_a_string(self, client) -> None:
        raw = await client.embeddings.with_raw_response.create(model="vec-a", input="x", encoding_format="base64")
        assert isinstance(raw.parse().data[0].embedding, str)
        assert raw.headers["x-llmmesh-provider"] == "mock"

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"model": "vec-a", "input": []}, "input"),
            ({"model": "vec-a", "input": [[1, 2, 3]]}, "input[0]"),
            ({"model": "vec-a", "input": ["ok", ""]}, "input[1]"),
            ({"model": "vec-a", "input": "x", "encoding_format": "int8"}, "encoding_format"),
            ({"model": "vec-a", "input": "x", "dimensions": 0}, "dimensions"),
            ({"model": "vec-a", "input": "x", "dimensions": 99}, "dimensions"),
            ({"model": "chatty", "input": "x"}, "model"),
        ],
        ids=["empty", "tokens", "empty-item", "encoding", "dimensions-0", "dimensions-too-many", "chat-model"],
    )
    async def test_bad_fields_named_as_sent(self, base_url, body, param) -> None:
        async with httpx2.AsyncClient(timeout=20) as http:
            reply = await http.post(f"{base_url}/embeddings", json=body, headers={"authorization": f"Bearer {KEY}"})
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == param

    async def test_same_auth_as_chat(self, base_url) -> None:
        """A wrong key is 401; a tenant not allowed the model gets 403 naming what it may use, as for chat."""
        async with openai.AsyncOpenAI(base_url=base_url, api_key="llmk_wrong-key", max_retries=0) as stranger:
            with pytest.raises(openai.AuthenticationError):
                await stranger.embeddings.create(model="vec-a", input="x")
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY_CHAT_ONLY, max_retries=0) as narrow:
            with pytest.raises(openai.PermissionDeniedError, match="allowed: chatty"):
                await narrow.embeddings.create(model="vec-a", input="x")

    async def test_langchain_openai_embeddings(self, base_url, mesh) -> None:
        """LangChain's OpenAIEmbeddings with text input (its tiktoken token arrays would need a tokenizer)."""
        from langchain_openai import OpenAIEmbeddings

        embedder = OpenAIEmbeddings(
            model="vec-a", base_url=base_url, api_key=KEY, check_embedding_ctx_length=False, max_retries=0
        )
        vectors = await embedder.aembed_documents(["one two", "three"])
        assert vectors == await _grpc_vectors(mesh, "one two", "three")

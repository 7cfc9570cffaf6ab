"""RouterService.Embed over a live router and mock adapter: vectors, fallbacks by dimensions, breakers, deadlines."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh

MOCK_CONFIG = {
    "models": [
        {"name": "vec-a", "dimensions": 8},
        {"name": "vec-b", "dimensions": 8},
        {"name": "vec-small", "dimensions": 4},
        {"name": "vec-down", "dimensions": 8, "failures": [{"code": "UNAVAILABLE", "rate": 1}]},
        {"name": "chatty"},
    ]
}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "defaults": {"breaker": {"consecutive_failures": 2, "min_calls": 100, "open_s": 60}},
    "models": {
        "vec-a": {"provider": "mock", "dimensions": 8, "fallbacks": ["vec-b"], "price": {"input_per_mtok": 1.0}},
        "vec-b": {"provider": "mock", "dimensions": 8, "price": {"input_per_mtok": 2.0}},
        "vec-small": {"provider": "mock", "dimensions": 4, "aliases": ["small-vectors"]},
        "vec-down": {"provider": "mock", "dimensions": 8},
        "chatty": {"provider": "mock"},
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, workdir=tmp_path_factory.mktemp("embed")) as started:
        yield started


@pytest.fixture
async def stub(mesh):
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _embed(model: str, *inputs: str, mock: dict[str, object] | None = None, **fields: object) -> rpb.EmbedRequest:
    extensions = struct_pb2.Struct()
    if mock:
        extensions.update({"mock": mock})
    return rpb.EmbedRequest(model=model, inputs=inputs or ("hello world",), extensions=extensions, **fields)


async def _refused(stub, request: rpb.EmbedRequest) -> MeshError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(request, timeout=10)
    return MeshError.from_rpc_error(caught.value)


class TestEmbed:
    async def test_vectors_usage_cost_and_attempts(self, stub) -> None:
        """One vector per input in order, the dimensions, input-token usage, cost from the price table, the attempt."""
        response = await stub.Embed(_embed("vec-a", "one two", "three"), timeout=10)
        assert [e.index for e in response.embeddings] == [0, 1]
        assert response.dimensions == 8
        assert all(len(e.values) == 8 for e in response.embeddings)
        assert response.usage.input_tokens == 3
        assert response.estimated_cost_usd == pytest.approx(3 / 1_000_000)
        assert (response.model, response.provider, response.response_model) == ("vec-a", "mock", "vec-a")
        assert [(a.model, a.outcome) for a in response.attempts] == [("vec-a", rpb.ATTEMPT_OUTCOME_SUCCEEDED)]

    async def test_same_text_same_vector_and_alias(self, stub) -> None:
        """Vectors are deterministic across calls; an alias resolves; `dimensions` shortens them."""
        first = await stub.Embed(_embed("small-vectors", "same"), timeout=10)
        second = await stub.Embed(_embed("vec-small", "same"), timeout=10)
        assert list(first.embeddings[0].values) == list(second.embeddings[0].values)
        short = await stub.Embed(_embed("vec-a", "same", dimensions=3), timeout=10)
        assert short.dimensions == 3

    async def test_unavailable_primary_falls_back_to_same_dimensions(self, stub) -> None:
        """UNAVAILABLE on the primary: the routing file's same-dimension fallback answers, both attempts listed."""
        request = _embed(
            "vec-a",
            mock={"by_model": {"vec-a": {"fail_code": "UNAVAILABLE"}}},
            routing=rpb.RoutingPolicy(max_retries=0),
        )
        response = await stub.Embed(request, timeout=10)
        assert response.model == "vec-b"
        assert [(a.model, a.outcome) for a in response.attempts] == [
            ("vec-a", rpb.ATTEMPT_OUTCOME_FAILED),
            ("vec-b", rpb.ATTEMPT_OUTCOME_SUCCEEDED),
        ]
        assert response.estimated_cost_usd == pytest.approx(2 * 2 / 1_000_000)  # two words at $2/M

    async def test_request_fallback_of_other_dimensions_is_refused(self, stub) -> None:
        """A request fallback with other dimensions is INVALID_ARGUMENT naming routing.fallback_models[0]."""
        error = await _refused(stub, _embed("vec-a", routing=rpb.RoutingPolicy(fallback_models=["vec-small"])))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field == "routing.fallback_models[0]"
        assert "same dimensions" in error.message

    async def test_chat_model_and_embedding_model_are_kept_apart(self, stub) -> None:
        """Embed on a chat model, and Chat on an embedding model, are INVALID_ARGUMENT on `model`."""
        error = await _refused(stub, _embed("chatty"))
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "model")
        assert "vec-a" in error.message  # names the embedding models there are
        message = chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(rpb.ChatRequest(model="vec-a", messages=[message]), timeout=10)
        assert MeshError.from_rpc_error(caught.value).field == "model"

    async def test_bad_fields_are_named(self, stub) -> None:
        """Unknown model NOT_FOUND; too many dimensions, empty inputs: INVALID_ARGUMENT naming the field."""
        assert (await _refused(stub, _embed("vec-zz"))).code == grpc.StatusCode.NOT_FOUND
        assert (await _refused(stub, _embed("vec-small", dimensions=5))).field == "dimensions"
        assert (await _refused(stub, rpb.EmbedRequest(model="vec-a"))).field == "inputs"

    async def test_deadline_bounds_the_call(self, stub) -> None:
        """A slow adapter past the caller's deadline ends in DEADLINE_EXCEEDED, not a hang."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Embed(_embed("vec-small", mock={"delay_ms": 3000}), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def test_breaker_opens_after_consecutive_failures(self, stub) -> None:
        """The same breakers as chat: after two failures the model is skipped with `circuit open`."""
        for _ in range(2):
            assert (await _refused(stub, _embed("vec-down", routing=rpb.RoutingPolicy(max_retries=0)))).code == (
                grpc.StatusCode.UNAVAILABLE
            )
        error = await _refused(stub, _embed("vec-down", routing=rpb.RoutingPolicy(max_retries=0)))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert "circuit open" in error.message

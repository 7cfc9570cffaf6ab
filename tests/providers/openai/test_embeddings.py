"""Embed through a real router and OpenAI adapter onto the loopback fake's `/v1/embeddings`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import router_service_pb2 as rpb
from llmmesh.v1 import router_service_pb2_grpc
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, start_service
from services.testing.fake_openai import FakeOpenAI, Reply, fake_vector

KEY = "test-key-embeddings-2b7e"
ROUTING = {
    "providers": {"openai": {"kind": "openai"}},
    "defaults": {"max_retries": 0},
    "models": {
        "text-embedding-3-small": {"provider": "openai", "dimensions": 8, "price": {"input_per_mtok": 0.02}},
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(expected_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def router(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir: Path = tmp_path_factory.mktemp("openai-embed")
    started: list[ServiceProcess] = []
    try:
        adapter = start_service(
            ["-m", "services.providers.openai"],
            name="openai-adapter",
            workdir=workdir,
            env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.url, "LLMMESH_OPENAI_BASE_URL": ""},
        )
        started.append(adapter)
        (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
        static = {"services": {"llmmesh-provider-openai": [adapter.address]}}
        (workdir / "static.yaml").write_text(yaml.safe_dump(static))
        env = {
            "LLMMESH_ROUTING_FILE": str(workdir / "routing.yaml"),
            "LLMMESH_STATIC_DISCOVERY_FILE": str(workdir / "static.yaml"),
        }
        started.append(start_service(["-m", "services.router"], name="router", workdir=workdir, env=env))
        yield started[-1]
    finally:
        for process in started:
            process.terminate()


@pytest.fixture
def stub(router: ServiceProcess, fake: FakeOpenAI) -> Iterator[router_service_pb2_grpc.RouterServiceStub]:
    fake.reset()
    with grpc.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _request(*inputs: str, **fields: object) -> rpb.EmbedRequest:
    return rpb.EmbedRequest(model="text-embedding-3-small", inputs=inputs, **fields)


class TestOpenAIEmbed:
    def test_vectors_and_usage_from_the_sdk_call(self, stub, fake) -> None:
        """The vectors the fake sent (base64, decoded by the SDK), in order, with usage, cost and the SDK's request."""
        fake.script(Reply.embeddings(8))
        response = stub.Embed(_request("one two", "three", user="u-1"), timeout=10)
        assert [list(e.values) for e in response.embeddings] == [fake_vector("one two", 8), fake_vector("three", 8)]
        assert [e.index for e in response.embeddings] == [0, 1]
        assert (response.dimensions, response.usage.input_tokens) == (8, 3)
        assert response.estimated_cost_usd == pytest.approx(3 * 0.02 / 1_000_000)
        assert (response.provider, response.response_model) == ("openai", "text-embedding-3-small")
        (sent,) = fake.embedding_requests
        assert sent.key_ok is True
        assert sent.body == {
            "model": "text-embedding-3-small",
            "input": ["one two", "three"],
            "user": "u-1",
            "encoding_format": "base64",
        }

    def test_dimensions_passed_on(self, stub, fake) -> None:
        fake.script(Reply.embeddings(8))
        response = stub.Embed(_request("short", dimensions=3), timeout=10)
        assert list(response.embeddings[0].values) == fake_vector("short", 3)
        assert fake.embedding_requests[0].body["dimensions"] == 3

    @pytest.mark.parametrize(
        ("reply", "code"),
        [
            (Reply.error(429, "Rate limit reached", type="requests", code="rate_limit_exceeded"), "RESOURCE_EXHAUSTED"),
            (Reply.error(400, "Invalid input", param="input"), "INVALID_ARGUMENT"),
            (Reply.error(503, "overloaded", type="server_error"), "UNAVAILABLE"),
            (Reply.json({"object": "list", "data": [], "model": "x", "usage": None}), "UNAVAILABLE"),
        ],
        ids=["429", "400", "503", "no-data"],
    )
    def test_upstream_errors_mapped_like_chat(self, stub, fake, reply, code) -> None:
        fake.script(reply)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(_request("x"), timeout=10)
        assert MeshError.from_rpc_error(caught.value).code.name == code

    def test_deadline_bounds_a_slow_upstream(self, stub, fake) -> None:
        fake.script(Reply.embeddings(8, delay=5))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(_request("slow"), timeout=1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

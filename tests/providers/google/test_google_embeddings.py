"""Embed through a real router and Gemini adapter onto the loopback fake's `:batchEmbedContents`."""

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
from services.testing import fake_google as fg
from services.testing.fake_google import FakeGemini, Reply
from services.testing.fake_openai import fake_vector

API_KEY = "test-key-gemini-embed-4c2a"
MODEL = "gemini-embedding-001"
ROUTING = {
    "providers": {"google": {"kind": "google"}},
    "defaults": {"max_retries": 0},
    "models": {MODEL: {"provider": "google", "dimensions": 8, "price": {"input_per_mtok": 0.15}}},
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def router(fake: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir: Path = tmp_path_factory.mktemp("google-embed")
    started: list[ServiceProcess] = []
    try:
        env = {"GEMINI_API_KEY": API_KEY, "GOOGLE_API_KEY": "", "LLMMESH_GOOGLE_BASE_URL": fake.url}
        adapter = start_service(["-m", "services.providers.google"], name="google-adapter", workdir=workdir, env=env)
        started.append(adapter)
        (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
        static = {"services": {"llmmesh-provider-google": [adapter.address]}}
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
def stub(router: ServiceProcess, fake: FakeGemini) -> Iterator[router_service_pb2_grpc.RouterServiceStub]:
    fake.script()
    with grpc.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _request(*inputs: str, **fields: object) -> rpb.EmbedRequest:
    return rpb.EmbedRequest(model=MODEL, inputs=inputs, **fields)


class TestGeminiEmbed:
    def test_one_batch_request_vectors_and_usage(self, stub, fake) -> None:
        """Every input in one batchEmbedContents call; the vectors in order, usage and cost from usageMetadata."""
        fake.script(Reply(embed_dimensions=8))
        response = stub.Embed(_request("one two", "three"), timeout=10)
        assert [list(e.values) for e in response.embeddings] == [fake_vector("one two", 8), fake_vector("three", 8)]
        assert (response.dimensions, response.usage.input_tokens) == (8, 3)
        assert response.estimated_cost_usd == pytest.approx(3 * 0.15 / 1_000_000)
        (sent,) = fake.requests
        assert sent.path.endswith(f"/models/{MODEL}:batchEmbedContents")
        assert [item["content"]["parts"][0]["text"] for item in sent.body["requests"]] == ["one two", "three"]

    def test_dimensions_and_missing_usage(self, stub, fake) -> None:
        """`dimensions` is outputDimensionality on every request; no usageMetadata counts 0 tokens."""
        fake.script(Reply(embed_dimensions=8, embed_usage=False))
        response = stub.Embed(_request("short", dimensions=3), timeout=10)
        assert list(response.embeddings[0].values) == fake_vector("short", 3)
        assert fake.requests[0].body["requests"][0]["outputDimensionality"] == 3
        assert response.usage.input_tokens == 0

    @pytest.mark.parametrize(
        ("reply", "code"),
        [
            (fg.error_reply(429, "Resource has been exhausted (e.g. check quota)."), "RESOURCE_EXHAUSTED"),
            (fg.error_reply(400, "Request contains an invalid argument."), "INVALID_ARGUMENT"),
            (fg.error_reply(503, "The model is overloaded."), "UNAVAILABLE"),
            (Reply(body={"embeddings": []}), "UNAVAILABLE"),
        ],
        ids=["429", "400", "503", "no-vectors"],
    )
    def test_upstream_errors_mapped_like_chat(self, stub, fake, reply, code) -> None:
        fake.script(reply)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(_request("x"), timeout=10)
        assert MeshError.from_rpc_error(caught.value).code.name == code

    def test_deadline_bounds_a_slow_upstream(self, stub, fake) -> None:
        fake.script(Reply(embed_dimensions=8, delay=3))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(_request("slow"), timeout=1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

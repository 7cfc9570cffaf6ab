"""An unreadable Retry-After never turns a 429 into INTERNAL (issue 15, finding 3).

A real OpenAI adapter talks to its loopback fake, which answers 429 with a
Retry-After the adapter cannot use (`30s`, prose, `inf`, `nan`, negative,
huge); a router in front falls back to a mock model. The attempt must stay
RESOURCE_EXHAUSTED (so the router moves on and the breaker sees a 429),
never INTERNAL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, start_service
from services.testing.fake_openai import FakeOpenAI, Reply

KEY = "test-key-retry-after-5d1e"
UNREADABLE = ["30s", "soon, please", "inf", "nan", "-5", "1e999", "Wed, 99 Foo 2026 99:99:99 GMT"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(expected_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def processes(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    workdir: Path = tmp_path_factory.mktemp("retry-after")
    started: dict[str, ServiceProcess] = {}
    try:
        started["openai"] = start_service(
            ["-m", "services.providers.openai"],
            name="openai-adapter",
            workdir=workdir,
            env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.url, "LLMMESH_OPENAI_BASE_URL": ""},
        )
        started["mock"] = start_service(["-m", "services.providers.mock"], name="mock", workdir=workdir)
        routing = {
            "providers": {"openai": {"kind": "openai"}, "mock": {"kind": "mock"}},
            "defaults": {"max_retries": 0},
            "models": {
                "gpt-4o-mini": {"provider": "openai", "fallbacks": ["mock-small"]},
                "mock-small": {"provider": "mock"},
            },
        }
        (workdir / "routing.yaml").write_text(yaml.safe_dump(routing))
        static = {
            "services": {
                "llmmesh-provider-openai": [started["openai"].address],
                "llmmesh-provider-mock": [started["mock"].address],
            }
        }
        (workdir / "static.yaml").write_text(yaml.safe_dump(static))
        started["router"] = start_service(
            ["-m", "services.router"],
            name="router",
            workdir=workdir,
            env={
                "LLMMESH_ROUTING_FILE": str(workdir / "routing.yaml"),
                "LLMMESH_STATIC_DISCOVERY_FILE": str(workdir / "static.yaml"),
            },
        )
        yield started
    finally:
        for process in started.values():
            process.terminate()


def _messages() -> list[chat_pb2.Message]:
    return [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hello")])]


def _throttled(value: str) -> Reply:
    return Reply.error(
        429, "Rate limit reached", type="requests", code="rate_limit_exceeded", headers={"retry-after": value}
    )


class TestUnreadableRetryAfter:
    @pytest.mark.parametrize("value", UNREADABLE)
    def test_adapter_keeps_the_429(self, fake, processes, value) -> None:
        """The adapter answers RESOURCE_EXHAUSTED without a usable delay, not INTERNAL."""
        fake.reset()
        fake.script(_throttled(value))
        with grpc.insecure_channel(processes["openai"].address) as channel:
            stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Chat(ppb.ProviderServiceChatRequest(model="gpt-4o-mini", messages=_messages()), timeout=10)
        error = MeshError.from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert error.retry_after is None or 0 <= error.retry_after <= 3600

    @pytest.mark.parametrize("value", ["30s", "inf", "nan"])
    def test_router_falls_back(self, fake, processes, value) -> None:
        """Through the router, the 429 moves on to the fallback, which answers."""
        fake.reset()
        fake.script(_throttled(value))
        with grpc.insecure_channel(processes["router"].address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            response = stub.Chat(rpb.ChatRequest(model="gpt-4o-mini", messages=_messages()), timeout=10)
        assert response.model == "mock-small"
        first = response.attempts[0]
        assert (first.model, first.code) == ("gpt-4o-mini", grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])

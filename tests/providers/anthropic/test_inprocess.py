"""The adapter object in-process (real SDK, loopback fake): what a gRPC deadline would hide."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import MeshError
from services.providers.anthropic.adapter import AnthropicAdapter
from services.providers.anthropic.main import AnthropicSettings, build_client
from services.testing.fake_anthropic import FakeAnthropic, json_reply, message, sse_reply, stream_events
from tests.providers.anthropic.conftest import user

MODEL = "claude-haiku-4-5"


@pytest.fixture
async def adapter(fake: FakeAnthropic, api_key: str) -> AsyncIterator[AnthropicAdapter]:
    settings = AnthropicSettings(anthropic_base_url=fake.url)
    built = AnthropicAdapter(build_client(settings, api_key), models=[], default_max_tokens=64)
    yield built
    await built.aclose()


class TestDeadlines:
    async def test_unary_timeout_is_deadline_exceeded(self, adapter: AnthropicAdapter, fake: FakeAnthropic) -> None:
        """The SDK timing out on a slow upstream maps to DEADLINE_EXCEEDED, and the request is dropped."""
        fake.script(json_reply(message(text="late"), delay=2))
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])
        with pytest.raises(MeshError) as caught:
            await adapter.chat(request, timeout=0.3)
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
        assert fake.requests[0].disconnected.wait(3)

    async def test_stream_stall_is_deadline_exceeded(self, adapter: AnthropicAdapter, fake: FakeAnthropic) -> None:
        """A stream that stalls past the time left ends with DEADLINE_EXCEEDED after the deltas already sent."""
        fake.script(sse_reply(stream_events(message(text="one two three"), pieces=3), event_delay=1.0))
        request = pb.ProviderServiceStreamChatRequest(model=MODEL, messages=[user("Hi")])
        received: list[pb.ProviderServiceStreamChatResponse] = []

        async def consume() -> None:
            async for event in adapter.stream_chat(request, timeout=1.5):
                received.append(event)

        with pytest.raises(MeshError) as caught:
            await consume()
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not any(event.HasField("final") for event in received)

    async def test_no_time_left(self, adapter: AnthropicAdapter, fake: FakeAnthropic) -> None:
        """With no time left nothing is sent upstream."""
        request = pb.ProviderServiceChatRequest(model=MODEL, messages=[user("Hi")])
        with pytest.raises(MeshError) as caught:
            await adapter.chat(request, timeout=0)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert fake.requests == []


class TestModels:
    def test_configured_models_listed(self, api_key: str) -> None:
        """LLMMESH_MODELS (model_names) replaces the default list and names the instance."""
        client = build_client(AnthropicSettings(anthropic_base_url="http://127.0.0.1:9"), api_key)
        adapter = AnthropicAdapter(client, models=["claude-opus-4-8"], default_max_tokens=64, instance="anthropic-eu")
        assert [(m.name, list(m.provider_instances)) for m in adapter.list_models()] == [
            ("claude-opus-4-8", ["anthropic-eu"])
        ]

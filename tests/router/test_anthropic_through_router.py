"""The router in front of the real Anthropic adapter (its SDK against the loopback fake) and the mock.

End to end for issue 15: provider data reaching stream finals, a capability
refusal moving on, and a stream continued by Anthropic prefill.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import grpc
import pytest
import yaml
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.testing.fake_anthropic import FakeAnthropic, message, sse_reply, stream_events

CLAUDE = "claude-haiku-4-5"
ROUTING = {
    "providers": {"anthropic": {"kind": "anthropic", "continues_prefix": True}, "mock": {"kind": "mock"}},
    "models": {
        CLAUDE: {"provider": "anthropic", "fallbacks": ["mock-small"]},
        "mock-small": {"provider": "mock"},
        "mock-first": {"provider": "mock", "upstream_model": "mock-small", "fallbacks": [CLAUDE]},
    },
}


KEY = f"test-key-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def router(fake: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("anthropic-router")
    started: list[ServiceProcess] = []
    try:
        started.append(
            start_service(
                ["-m", "services.providers.anthropic"],
                name="anthropic",
                workdir=workdir,
                env={"ANTHROPIC_API_KEY": KEY, "LLMMESH_ANTHROPIC_BASE_URL": fake.url, "LLMMESH_MODELS": CLAUDE},
            )
        )
        started.append(start_service(["-m", "services.providers.mock"], name="mock", workdir=workdir))
        (workdir / "routing.yaml").write_text(yaml.safe_dump(ROUTING))
        static = {"llmmesh-provider-anthropic": [started[0].address], "llmmesh-provider-mock": [started[1].address]}
        (workdir / "static.yaml").write_text(yaml.safe_dump({"services": static}))
        env = {
            "LLMMESH_ROUTING_FILE": str(workdir / "routing.yaml"),
            "LLMMESH_STATIC_DISCOVERY_FILE": str(workdir / "static.yaml"),
        }
        started.append(start_service(["-m", "services.router"], name="router", workdir=workdir, env=env))
        yield started[-1]
    finally:
        for process in reversed(started):
            process.terminate()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeAnthropic) -> None:
    fake.reset()


@pytest.fixture
async def stub(router: ServiceProcess):
    async with grpc.aio.insecure_channel(router.address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


async def _events(stub, request: rpb.StreamChatRequest) -> list[rpb.StreamChatResponse]:
    return [event async for event in stub.StreamChat(request, timeout=20)]


class TestAnthropicThroughTheRouter:
    async def test_stream_final_keeps_thinking_blocks_and_ignored_settings(self, stub, fake) -> None:
        """Thinking blocks with signatures, ignored settings and the response id reach the caller's stream final."""
        fake.script(sse_reply(stream_events(message(thinking=[("Hmm.", "sig-42")], text="Done."))))
        request = rpb.StreamChatRequest(model=CLAUDE, messages=[_user("Hi")])
        request.settings.temperature = 0.5
        final = (await _events(stub, request))[-1].final
        extension = json_format.MessageToDict(final.extensions)["anthropic"]
        assert extension["thinking"] == [{"type": "thinking", "thinking": "Hmm.", "signature": "sig-42"}]
        assert extension["ignored_settings"] == ["temperature"]
        assert final.response_id == "msg_fake_01"

    async def test_json_object_mode_moves_on_from_anthropic(self, stub, fake) -> None:
        """Anthropic refuses schema-less JSON mode as UNSUPPORTED_FEATURE; the router moves on and the mock answers."""
        request = rpb.ChatRequest(model=CLAUDE, messages=[_user("Give JSON")])
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        response = await stub.Chat(request, timeout=20)
        assert response.model == "mock-small"
        assert (response.attempts[0].model, response.attempts[0].reason) == (CLAUDE, "UNSUPPORTED_FEATURE")
        assert fake.requests == []

    async def test_stream_continued_by_anthropic_prefill(self, stub, fake) -> None:
        """A mock stream cut mid-answer continues on Claude: prefill without trailing whitespace, one seamless text."""
        fake.script(sse_reply(stream_events(message(text=" and the rest."))))
        extensions = struct_pb2.Struct()
        extensions.update({"mock": {"text": "The first part", "stream_cut_after": 2}})
        request = rpb.StreamChatRequest(
            model="mock-first",
            messages=[_user("Go")],
            extensions=extensions,
            routing=rpb.RoutingPolicy(allow_mid_stream_continuation=True),
        )
        events = await _events(stub, request)
        assert [event.WhichOneof("event") for event in events][:3] == ["delta", "delta", "continuation"]
        assert "".join(event.delta.text for event in events) == "The first and the rest."
        assert (events[-1].final.model, events[-1].final.continued) == (CLAUDE, True)
        sent = fake.requests[0].body["messages"]
        assert sent[-1] == {"role": "assistant", "content": [{"type": "text", "text": "The first"}]}

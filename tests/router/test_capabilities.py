"""Model capabilities, Anthropic sampling and provider extensions, through a real router (issue 17, items 9, 10).

One router process over the real Anthropic adapter (its SDK against the
loopback fake) and a mock adapter registered as two provider instances
(`mock` and `mock-b`); its HTTP door on. The routing file marks what each
model can do; the tests read it back from ListModels and GET /v1/models,
watch the router skip candidates that lack what a request needs, check
which sampling settings reach Anthropic's wire, and send extensions that
target one instance or are refused before any attempt.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, start_service
from services.testing.fake_anthropic import FakeAnthropic, json_reply, message, sse_reply, stream_events
from services.testing.mesh import start_router
from tests.providers.anthropic.conftest import assert_golden

SAMPLING = "claude-sampling"
PLAIN = "claude-plain"
ROUTING: dict[str, Any] = {
    "providers": {
        "anthropic": {"kind": "anthropic"},
        "mock": {"kind": "mock"},
        "mock-b": {"kind": "mock"},
    },
    "auto": {"default_tier": "pics", "tiers": {"pics": {"models": ["limited", "mock-small"]}}},
    "models": {
        SAMPLING: {
            "provider": "anthropic",
            "upstream_model": "claude-haiku-4-5",
            "context_window": 200000,
            "capabilities": {"vision": True, "sampling": True, "max_output_tokens": 64000},
            "fallbacks": ["mock-small"],
        },
        PLAIN: {"provider": "anthropic", "upstream_model": "claude-opus-4-7", "fallbacks": ["mock-small"]},
        "limited": {
            "provider": "mock",
            "upstream_model": "mock-small",
            "capabilities": {
                "tools": False,
                "vision": False,
                "documents": False,
                "audio": False,
                "json_schema": False,
                "max_output_tokens": 100,
            },
            "fallbacks": ["mock-small"],
        },
        "legacy-no-tools": {"provider": "mock", "upstream_model": "mock-small", "supports_tools": False},
        "mock-small": {"provider": "mock", "context_window": 8192},
        "on-b": {"provider": "mock-b", "upstream_model": "mock-small"},
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
    workdir = tmp_path_factory.mktemp("capabilities")
    started: list[ServiceProcess] = []
    try:
        started.append(
            start_service(
                ["-m", "services.providers.anthropic"],
                name="anthropic",
                workdir=workdir,
                env={"ANTHROPIC_API_KEY": KEY, "LLMMESH_ANTHROPIC_BASE_URL": fake.url, "LLMMESH_MODELS": ""},
            )
        )
        started.append(start_service(["-m", "services.providers.mock"], name="mock", workdir=workdir))
        static = {
            "llmmesh-provider-anthropic": [started[0].address],
            "llmmesh-provider-mock": [started[1].address],
            "llmmesh-provider-mock-b": [started[1].address],
        }
        started.append(start_router(workdir, ROUTING, static, env={"LLMMESH_HTTP_PORT": "0"}))
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


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _anthropic_extension(holder: Any) -> dict[str, Any]:
    return json_format.MessageToDict(holder.extensions)["anthropic"]


async def _refusal(call: Any) -> MeshError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return MeshError.from_rpc_error(info.value)


class TestListModels:
    async def test_grpc_shows_each_models_capabilities(self, stub) -> None:
        """ListModels carries the routing file's capabilities with defaults applied, legacy flags included."""
        response = await stub.ListModels(rpb.ListModelsRequest(), timeout=10)
        caps = {model.name: model.capabilities for model in response.models}
        assert caps[SAMPLING] == chat_pb2.ModelCapabilities(
            vision=True,
            documents=True,
            audio=True,
            tools=True,
            json_schema=True,
            reasoning=True,
            sampling=True,
            context_window=200000,
            max_output_tokens=64000,
        )
        # An anthropic model not marked `sampling: true` does not take temperature / top_p.
        assert caps[PLAIN].sampling is False
        limited = caps["limited"]
        assert (limited.tools, limited.vision, limited.documents, limited.audio, limited.json_schema) == (
            False,
            False,
            False,
            False,
            False,
        )
        assert caps["legacy-no-tools"].tools is False
        # Other kinds take sampling settings unless told otherwise.
        assert caps["mock-small"].sampling is True
        assert caps["mock-small"].context_window == 8192

    def test_door_lists_them_in_openrouter_names(self, router: ServiceProcess) -> None:
        """GET /v1/models: context_length, input modalities, max completion tokens, supported parameters."""
        url = f"http://127.0.0.1:{router.ready['http_port']}/v1/models"
        with urllib.request.urlopen(url, timeout=10) as answer:
            models = {entry["id"]: entry for entry in json.load(answer)["data"]}
        sampling = models[SAMPLING]
        assert sampling["context_length"] == 200000
        assert sampling["top_provider"] == {"context_length": 200000, "max_completion_tokens": 64000}
        assert sampling["architecture"]["input_modalities"] == ["text", "image", "file", "audio"]
        assert {"temperature", "top_p", "tools", "structured_outputs", "reasoning"} <= set(
            sampling["supported_parameters"]
        )
        assert sampling["llmmesh"]["capabilities"]["sampling"] is True
        limited = models["limited"]
        assert limited["architecture"]["input_modalities"] == ["text"]
        assert not {"tools", "structured_outputs"} & set(limited["supported_parameters"])
        assert "temperature" not in models[PLAIN]["supported_parameters"]


def _image() -> chat_pb2.ContentPart:
    return chat_pb2.ContentPart(image=chat_pb2.ImagePart(url="https://example.com/cat.png"))


def _needs(feature: str) -> rpb.ChatRequest:
    request = rpb.ChatRequest(model="limited", messages=[_user("a b c")])
    if feature == "tools":
        request.tools.add(name="lookup", parameters=_struct({"type": "object"}))
    elif feature == "messages[0].content[1].image":
        request.messages[0].content.append(_image())
    elif feature == "messages[0].content[1].document":
        request.messages[0].content.add(
            document=chat_pb2.DocumentPart(data=b"plain words", mime_type="text/plain", filename="notes.txt")
        )
    elif feature == "messages[0].content[1].audio":
        request.messages[0].content.add(audio=chat_pb2.AudioPart(data=b"RIFF0000WAVE", format="wav"))
    elif feature == "settings.response_format.json_schema":
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        request.settings.response_format.json_schema.update({"type": "object"})
    elif feature == "settings.max_output_tokens":
        request.settings.max_output_tokens = 500
    return request


FEATURES = [
    "tools",
    "messages[0].content[1].image",
    "messages[0].content[1].document",
    "messages[0].content[1].audio",
    "settings.response_format.json_schema",
    "settings.max_output_tokens",
]


class TestCapabilitiesSkipCandidates:
    @pytest.mark.parametrize("feature", FEATURES)
    async def test_a_model_without_it_is_skipped(self, stub, feature: str) -> None:
        """A capability marked false: the attempt is refused UNSUPPORTED_FEATURE naming the field, the fallback answers."""
        response = await stub.Chat(_needs(feature), timeout=10)
        assert response.model == "mock-small"
        first = response.attempts[0]
        assert (first.model, first.reason) == ("limited", "UNSUPPORTED_FEATURE")
        assert first.moved_on_because == f"mock cannot serve {feature}"

    async def test_without_the_feature_the_model_serves(self, stub) -> None:
        """The same model serves a request that needs none of what it lacks."""
        response = await stub.Chat(rpb.ChatRequest(model="limited", messages=[_user("a b c")]), timeout=10)
        assert [attempt.model for attempt in response.attempts] == ["limited"]

    async def test_stream_skips_it_too(self, stub) -> None:
        """Streams skip the same candidate before their first chunk."""
        request = rpb.StreamChatRequest.FromString(_needs("tools").SerializeToString())
        events = [event async for event in stub.StreamChat(request, timeout=10)]
        final = events[-1].final
        assert final.model == "mock-small"
        assert final.attempts[0].reason == "UNSUPPORTED_FEATURE"

    @pytest.mark.parametrize(
        "feature",
        ["messages[0].content[1].image", "messages[0].content[1].audio", "settings.response_format.json_schema"],
    )
    async def test_auto_leaves_such_models_out(self, stub, feature: str) -> None:
        """`auto` does not even try a tier model that lacks an image reader or JSON schemas, and only then."""
        request = _needs(feature)
        request.model = "auto:pics"
        response = await stub.Chat(request, timeout=10)
        assert [attempt.model for attempt in response.attempts] == ["mock-small"]
        plain = await stub.Chat(rpb.ChatRequest(model="auto:pics", messages=[_user("a b")]), timeout=10)
        assert plain.model == "limited"

    async def test_alone_the_caller_gets_the_field(self, stub) -> None:
        """With no fallback, the caller sees INVALID_ARGUMENT UNSUPPORTED_FEATURE naming `tools` (legacy flag)."""
        request = rpb.ChatRequest(model="legacy-no-tools", messages=[_user("a")])
        request.tools.add(name="lookup", parameters=_struct({"type": "object"}))
        error = await _refusal(stub.Chat(request, timeout=10))
        assert (error.code, error.reason, error.field) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_FEATURE",
            "tools",
        )


def _sampled(cls: type, model: str, **settings: Any) -> Any:
    return cls(model=model, messages=[_user("Hi")], settings=chat_pb2.GenerationSettings(**settings))


class TestAnthropicSampling:
    async def test_temperature_reaches_a_model_that_takes_it(self, stub, fake: FakeAnthropic) -> None:
        """`sampling: true`: temperature goes on the wire; with both set top_p does not (Anthropic: one of
        the two), and top_p and seed are reported as ignored."""
        fake.script(json_reply(message(text="ok")))
        response = await stub.Chat(
            _sampled(rpb.ChatRequest, SAMPLING, temperature=0.25, top_p=0.9, seed=7, max_output_tokens=64),
            timeout=10,
        )
        [sent] = fake.requests
        assert sent.body["temperature"] == 0.25
        assert "top_p" not in sent.body
        assert_golden("sampling_temperature", sent.body)
        assert _anthropic_extension(response)["ignored_settings"] == ["top_p", "seed"]

    async def test_top_p_alone_is_sent(self, stub, fake: FakeAnthropic) -> None:
        """top_p alone reaches the model; nothing is reported ignored."""
        fake.script(json_reply(message(text="ok")))
        response = await stub.Chat(_sampled(rpb.ChatRequest, SAMPLING, top_p=0.5), timeout=10)
        assert fake.requests[0].body["top_p"] == 0.5
        assert "ignored_settings" not in _anthropic_extension(response)

    async def test_a_model_not_marked_gets_neither(self, stub, fake: FakeAnthropic) -> None:
        """Without `sampling: true` neither setting is sent and both are reported ignored."""
        fake.script(json_reply(message(text="ok")))
        response = await stub.Chat(_sampled(rpb.ChatRequest, PLAIN, temperature=0.25, top_p=0.9), timeout=10)
        body = fake.requests[0].body
        assert "temperature" not in body
        assert "top_p" not in body
        assert _anthropic_extension(response)["ignored_settings"] == ["temperature", "top_p"]

    async def test_streams_send_it_and_report_the_rest(self, stub, fake: FakeAnthropic) -> None:
        """A stream sends temperature the same way; its final carries the ignored settings."""
        fake.script(sse_reply(stream_events(message(text="Streamed answer."))))
        request = _sampled(rpb.StreamChatRequest, SAMPLING, temperature=0.5, top_p=0.9, max_output_tokens=64)
        events = [event async for event in stub.StreamChat(request, timeout=10)]
        [sent] = fake.requests
        assert_golden("sampling_stream", sent.body)
        assert _anthropic_extension(events[-1].final)["ignored_settings"] == ["top_p"]

    async def test_a_plain_model_stream_reports_both(self, stub, fake: FakeAnthropic) -> None:
        """On a model that takes neither, the stream final reports both as ignored."""
        fake.script(sse_reply(stream_events(message(text="Streamed."))))
        events = [
            event
            async for event in stub.StreamChat(_sampled(rpb.StreamChatRequest, PLAIN, temperature=0.5), timeout=10)
        ]
        assert "temperature" not in fake.requests[0].body
        assert _anthropic_extension(events[-1].final)["ignored_settings"] == ["temperature"]

    async def test_a_temperature_above_one_moves_on(self, stub, fake: FakeAnthropic) -> None:
        """Anthropic takes 0..1: a temperature of 1.5 is UNSUPPORTED_FEATURE there, before any upstream call."""
        response = await stub.Chat(_sampled(rpb.ChatRequest, SAMPLING, temperature=1.5), timeout=10)
        assert fake.requests == []
        assert response.model == "mock-small"
        assert response.attempts[0].moved_on_because == "anthropic cannot serve settings.temperature"


class TestExtensions:
    async def test_an_instance_key_reaches_that_instance_only(self, stub) -> None:
        """extensions["mock-b"] reaches the mock-b instance (as extensions.mock), over the kind's options."""
        request = rpb.ChatRequest(
            model="on-b",
            messages=[_user("a b")],
            extensions=_struct({"mock": {"text": "from the kind"}, "mock-b": {"text": "from mock-b"}}),
        )
        on_b = await stub.Chat(request, timeout=10)
        assert on_b.message.content[0].text == "from mock-b"
        request.model = "mock-small"
        on_mock = await stub.Chat(request, timeout=10)
        assert on_mock.message.content[0].text == "from the kind"

    @pytest.mark.parametrize(
        ("extensions", "field", "words"),
        [
            ({"vllm": {"x": 1}}, "extensions.vllm", "names no provider"),
            ({"anthropic": "fast"}, "extensions.anthropic", "must be an object"),
            ({"anthropic": {"temperature": 0.2}}, "extensions.anthropic.temperature", "settings.temperature"),
            ({"anthropic": {"top_k": 5}}, "extensions.anthropic.top_k", "not an option the anthropic adapter"),
            ({"mock-b": {"max_tokens": 5}}, "extensions.mock-b.max_tokens", "settings.max_output_tokens"),
            ({"openai": {"extra_body": {"messages": []}}}, "extensions.openai.extra_body.messages", "messages"),
        ],
    )
    async def test_bad_extensions_are_refused_before_any_attempt(
        self, stub, fake: FakeAnthropic, extensions: dict[str, Any], field: str, words: str
    ) -> None:
        """INVALID_ARGUMENT naming the field, before the first attempt: no upstream call, no fallback."""
        request = rpb.ChatRequest(model=SAMPLING, messages=[_user("Hi")], extensions=_struct(extensions))
        error = await _refusal(stub.Chat(request, timeout=10))
        assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)
        assert words in error.message
        assert fake.requests == []

    def test_the_door_refuses_them_naming_its_field(self, router: ServiceProcess, fake: FakeAnthropic) -> None:
        """On the HTTP door the same check is a 400 whose param is the caller's `llmmesh.extensions...` path."""
        body = {
            "model": SAMPLING,
            "messages": [{"role": "user", "content": "Hi"}],
            "llmmesh": {"extensions": {"mock-b": {"max_tokens": 5}}},
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{router.ready['http_port']}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 400
        error = json.load(info.value)["error"]
        assert error["param"] == "llmmesh.extensions.mock-b.max_tokens"
        assert error["message"].startswith("llmmesh.extensions.mock-b.max_tokens: is filled by the adapter")
        assert fake.requests == []

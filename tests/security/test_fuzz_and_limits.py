"""Input limits as settings, and fuzzing: generated requests and raw bytes against router and adapter."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.testing.mesh import MockMesh
from tests.security.helpers import error_of

LIMITS = {
    "LLMMESH_MAX_REQUEST_BYTES": "4096",
    "LLMMESH_MAX_MESSAGES": "3",
    "LLMMESH_MAX_TOOLS": "1",
    "LLMMESH_MAX_CONTENT_BYTES": "200",
    "LLMMESH_MAX_OUTPUT_TOKENS": "50",
}
MODELS = ["mock-small", "mock-large", "mock-agent", "auto", "auto:nope", "no-such-model", "", " ", "mock-smal"]
# Statuses a well-behaved service may answer fuzz with; UNKNOWN and INTERNAL mean an unhandled path.
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    """Router and mock adapter with small input limits."""
    with MockMesh(workdir=tmp_path_factory.mktemp("limits"), env=LIMITS) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def channels(limited: MockMesh) -> Iterator[tuple[grpc.Channel, grpc.Channel]]:
    router = grpc.insecure_channel(limited.router_address)
    adapter = grpc.insecure_channel(limited.mocks[0].address)
    yield router, adapter
    router.close()
    adapter.close()


def _text(text: str, role: int = chat_pb2.ROLE_USER) -> chat_pb2.Message:
    return chat_pb2.Message(role=role, content=[chat_pb2.ContentPart(text=text)])  # type: ignore[arg-type]


def _refusal(channel: grpc.Channel, request: rpb.ChatRequest) -> tuple[str | None, str]:
    with pytest.raises(grpc.RpcError) as caught:
        router_service_pb2_grpc.RouterServiceStub(channel).Chat(request, timeout=5)
    error = error_of(caught.value)  # type: ignore[arg-type]
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    return error.field, error.message


class TestInputLimits:
    def test_too_many_messages(self, channels: tuple[grpc.Channel, grpc.Channel]) -> None:
        """Past LLMMESH_MAX_MESSAGES: the field and the limit are named."""
        field, message = _refusal(channels[0], rpb.ChatRequest(model="mock-small", messages=[_text("a")] * 4))
        assert field == "messages"
        assert "limit of 3" in message
        assert "LLMMESH_MAX_MESSAGES" in message

    def test_too_many_tools(self, channels: tuple[grpc.Channel, grpc.Channel]) -> None:
        """Past LLMMESH_MAX_TOOLS."""
        tools = [chat_pb2.ToolDefinition(name="a"), chat_pb2.ToolDefinition(name="b")]
        field, message = _refusal(channels[0], rpb.ChatRequest(model="mock-small", messages=[_text("a")], tools=tools))
        assert field == "tools"
        assert "limit of 1" in message

    def test_content_part_too_large(self, channels: tuple[grpc.Channel, grpc.Channel]) -> None:
        """A text part above LLMMESH_MAX_CONTENT_BYTES names the part's path."""
        request = rpb.ChatRequest(model="mock-small", messages=[_text("ok"), _text("x" * 201)])
        field, message = _refusal(channels[0], request)
        assert field == "messages[1].content[0]"
        assert "limit of 200 bytes" in message

    def test_request_too_large(self, channels: tuple[grpc.Channel, grpc.Channel]) -> None:
        """A request above LLMMESH_MAX_REQUEST_BYTES names its largest message and the limit."""
        request = rpb.ChatRequest(model="mock-small", messages=[_text("y" * 150)] * 2 + [_text("z" * 199)])
        request.extensions.update({"pad": "p" * 4000})
        field, message = _refusal(channels[0], request)
        assert field is not None
        assert field.startswith("messages[")
        assert "limit of 4096 bytes" in message

    def test_output_tokens_capped(self, channels: tuple[grpc.Channel, grpc.Channel]) -> None:
        """max_output_tokens above LLMMESH_MAX_OUTPUT_TOKENS."""
        request = rpb.ChatRequest(
            model="mock-small", messages=[_text("a")], settings=chat_pb2.GenerationSettings(max_output_tokens=51)
        )
        field, message = _refusal(channels[0], request)
        assert field == "settings.max_output_tokens"
        assert "1..50" in message

    def test_adapter_enforces_its_limits(self, channels: tuple[grpc.Channel, grpc.Channel]) -> None:
        """Adapters read the same settings: a direct call past the limit is INVALID_ARGUMENT."""
        request = ppb.ProviderServiceChatRequest(model="mock-small", messages=[_text("a")] * 4)
        with pytest.raises(grpc.RpcError) as caught:
            provider_service_pb2_grpc.ProviderServiceStub(channels[1]).Chat(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "LLMMESH_MAX_MESSAGES" in (caught.value.details() or "")  # type: ignore[attr-defined]


_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_part = st.one_of(
    st.builds(lambda t: chat_pb2.ContentPart(text=t), st.text(max_size=60)),
    st.builds(
        lambda url, mime: chat_pb2.ContentPart(image=chat_pb2.ImagePart(url=url, mime_type=mime)),
        st.sampled_from(["https://x/y.png", "http://a", "ftp://nope", "", "data:image/png;base64,AAAA"]),
        st.sampled_from(["", "image/png", "text/plain"]),
    ),
    st.builds(
        lambda data, mime: chat_pb2.ContentPart(image=chat_pb2.ImagePart(data=data, mime_type=mime)),
        st.binary(max_size=40),
        st.sampled_from(["", "image/png"]),
    ),
    st.just(chat_pb2.ContentPart()),
)
_message = st.builds(
    lambda role, parts, calls, result: chat_pb2.Message(role=role, content=parts, tool_calls=calls, tool_result=result),
    st.integers(0, 6),
    st.lists(_part, max_size=3),
    st.lists(
        st.builds(
            lambda i, n, a: chat_pb2.ToolCall(id=i, name=n, arguments_json=a),
            st.text(max_size=5),
            st.text(max_size=8),
            st.text(max_size=20),
        ),
        max_size=2,
    ),
    st.one_of(
        st.none(),
        st.builds(
            lambda i, c: chat_pb2.ToolResult(tool_call_id=i, content=c), st.text(max_size=5), st.text(max_size=20)
        ),
    ),
)
_tool = st.builds(
    lambda name, schema: json_format.ParseDict({"name": name, "parameters": schema}, chat_pb2.ToolDefinition()),
    st.sampled_from(["calc", "a-b", "", "bad name!", "x" * 70]),
    st.sampled_from(
        [{"type": "object"}, {"type": "string"}, {}, {"type": "object", "properties": {"a": {"type": "number"}}}]
    ),
)
_settings = st.builds(
    lambda temperature, top_p, max_tokens, stop, seed, fmt: chat_pb2.GenerationSettings(
        temperature=temperature,
        top_p=top_p,
        max_output_tokens=max_tokens,
        stop=stop,
        seed=seed,
        response_format=chat_pb2.ResponseFormat(type=fmt),
    ),
    st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
    st.one_of(st.none(), st.floats(-1, 2, allow_nan=False)),
    st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    st.lists(st.text(max_size=4), max_size=3),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    st.integers(0, 3),
)
_routing = st.builds(
    lambda fallbacks, strategy, retries, timeout_ms, hedge_ms: _policy(
        fallbacks, strategy, retries, timeout_ms, hedge_ms
    ),
    st.lists(st.sampled_from(MODELS), max_size=2),
    st.integers(0, 5),
    st.one_of(st.none(), st.integers(-5, 2**31 - 1)),
    st.one_of(st.none(), st.integers(-1000, 3000)),
    st.one_of(st.none(), st.integers(-1000, 3000)),
)


def _policy(
    fallbacks: list[str], strategy: int, retries: int | None, timeout_ms: int | None, hedge_ms: int | None
) -> rpb.RoutingPolicy:
    policy = rpb.RoutingPolicy(fallback_models=fallbacks, strategy=strategy)  # type: ignore[arg-type]
    if retries is not None:
        policy.max_retries = retries
    if timeout_ms is not None:
        policy.per_attempt_timeout.FromMilliseconds(timeout_ms)
    if hedge_ms is not None:
        policy.hedge_delay.FromMilliseconds(hedge_ms)
    return policy


_requests = st.builds(
    lambda model, messages, tools, choice, gen, routing, ext: _request(
        model, messages, tools, choice, gen, routing, ext
    ),
    st.sampled_from(MODELS),
    st.lists(_message, max_size=4),
    st.lists(_tool, max_size=2),
    st.one_of(
        st.none(), st.builds(lambda m, n: chat_pb2.ToolChoice(mode=m, name=n), st.integers(0, 5), st.text(max_size=6))
    ),
    st.one_of(st.none(), _settings),
    st.one_of(st.none(), _routing),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["mock", "openai", "x"]), _json, max_size=2)),
)


def _request(model, messages, tools, choice, gen, routing, ext) -> rpb.ChatRequest:  # type: ignore[no-untyped-def]
    request = rpb.ChatRequest(
        model=model, messages=messages, tools=tools, tool_choice=choice, settings=gen, routing=routing
    )
    if ext:
        with contextlib.suppress(ValueError, TypeError):
            request.extensions.update(ext)
    return request


def _assert_deliberate(call: Callable[[], object], where: str = "") -> None:
    """The call answers, or fails with a status a caller can act on, before its deadline."""
    code, details = grpc.StatusCode.OK, ""
    try:
        call()
    except grpc.RpcError as error:
        code, details = error.code(), error.details()  # type: ignore[attr-defined]
    assert code not in FORBIDDEN, f"{where} {code.name}: {details}"
    assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{where} hung: {details}"


_FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


class TestFuzz:
    @_FUZZ
    @given(request=_requests)
    def test_generated_requests_router(
        self, channels: tuple[grpc.Channel, grpc.Channel], request: rpb.ChatRequest
    ) -> None:
        """Any well-formed message gets an answer or a deliberate status, never UNKNOWN/INTERNAL, within the deadline."""
        _assert_deliberate(lambda: router_service_pb2_grpc.RouterServiceStub(channels[0]).Chat(request, timeout=10))

    @_FUZZ
    @given(request=_requests)
    def test_generated_requests_adapter(
        self, channels: tuple[grpc.Channel, grpc.Channel], request: rpb.ChatRequest
    ) -> None:
        """The same against an adapter's Chat and StreamChat."""
        provider = ppb.ProviderServiceChatRequest(
            model=request.model,
            messages=request.messages,
            tools=request.tools,
            tool_choice=request.tool_choice,
            settings=request.settings,
            extensions=request.extensions,
        )
        stub = provider_service_pb2_grpc.ProviderServiceStub(channels[1])
        streamed = ppb.ProviderServiceStreamChatRequest.FromString(provider.SerializeToString())
        _assert_deliberate(lambda: stub.Chat(provider, timeout=10))
        _assert_deliberate(lambda: list(stub.StreamChat(streamed, timeout=10)))

    @_FUZZ
    @given(
        payload=st.one_of(st.binary(max_size=300), st.sampled_from([b"\xff\xff\xff\xff", b"\x0a\xff", b"\x12\x05abc"]))
    )
    def test_raw_bytes(self, channels: tuple[grpc.Channel, grpc.Channel], payload: bytes) -> None:
        """Garbage bytes as the request message: INVALID_ARGUMENT (or a normal answer if they decode), never UNKNOWN."""
        targets = [
            (channels[0], "/llmmesh.v1.RouterService/Chat", False),
            (channels[0], "/llmmesh.v1.RouterService/StreamChat", True),
            (channels[1], "/llmmesh.v1.ProviderService/Chat", False),
            (channels[1], "/llmmesh.v1.ProviderService/StreamChat", True),
        ]
        for channel, method, streaming in targets:
            call = channel.unary_stream(method) if streaming else channel.unary_unary(method)
            _assert_deliberate(
                lambda call=call, streaming=streaming: (
                    list(call(payload, timeout=10)) if streaming else call(payload, timeout=10)
                ),
                method,
            )

    def test_processes_survived(self, limited: MockMesh) -> None:
        """After the fuzzing, router and adapter are still running."""
        assert limited.router is not None
        assert limited.router.process.poll() is None
        assert limited.mocks[0].process.poll() is None

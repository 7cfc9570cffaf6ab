"""Hostile bodies on both doors: refused with 400 / INVALID_ARGUMENT naming the field (issue 21, findings 2, 6).

A mock adapter and a router with the HTTP door run as real processes.
Requests that protobuf cannot even encode (lone surrogates, schemas nested
past protobuf's decoding depth) are sent as raw bytes over gRPC. Every
hostile request carries a prompt marker; at the end no log line of any
process may contain it. A bounded hypothesis fuzz of HTTP bodies: never a
5xx, and the router keeps running.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx2
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import http_port_of

MARKER = "PROMPT-MARKER-21-c0ffee"
CHAT = "/llmmesh.v1.RouterService/Chat"


class Doors:
    """The router's gRPC channel (raw bytes in, status out) and HTTP client."""

    def __init__(self, mesh: MockMesh) -> None:
        self.mesh = mesh
        self.channel = grpc.insecure_channel(mesh.router_address)
        self.stub = router_service_pb2_grpc.RouterServiceStub(self.channel)
        self.http = httpx2.Client(base_url=f"http://127.0.0.1:{http_port_of(mesh)}", timeout=30)

    def grpc_refusal(self, payload: bytes | rpb.ChatRequest) -> MeshError:
        """The status of a Chat call sent as `payload` (a message, or raw bytes)."""
        raw = payload if isinstance(payload, bytes) else payload.SerializeToString()
        call = self.channel.unary_unary(CHAT, response_deserializer=rpb.ChatResponse.FromString)
        with pytest.raises(grpc.RpcError) as caught:
            call(raw, timeout=20)
        return MeshError.from_rpc_error(caught.value)  # type: ignore[arg-type]

    def http_refusal(self, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = self.http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
        return response.status_code, response.json()["error"] if response.status_code != 200 else {}


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    with MockMesh(env={"LLMMESH_HTTP_PORT": "0"}, workdir=tmp_path_factory.mktemp("hostile")) as mesh:
        doors = Doors(mesh)
        yield doors
        doors.http.close()
        doors.channel.close()


# -- building requests -------------------------------------------------------------------


def _deepen(leaf: dict[str, Any], levels: int) -> dict[str, Any]:
    """`leaf` inside objects, `levels` containers deep in all (`leaf` alone is 1)."""
    node = leaf
    for _ in range(levels - 1):
        node = {"type": "object", "x": node}
    return node


def _grpc_request(**fields: Any) -> rpb.ChatRequest:
    message = chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=f"hi {MARKER}")])
    return rpb.ChatRequest(model=fields.pop("model", "mock-small"), messages=[message], **fields)


def _tag(number: int) -> bytes:
    return bytes([number << 3 | 2])


def _delimited(number: int, payload: bytes) -> bytes:
    length = len(payload)
    varint = b""
    while True:
        byte, length = length & 0x7F, length >> 7
        varint += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return _tag(number) + varint + payload


def _deep_struct_bytes(levels: int) -> bytes:
    """A Struct `levels` deep as bytes, past what protobuf will build or decode."""
    struct = struct_pb2.Struct(fields={"description": struct_pb2.Value(string_value=MARKER)}).SerializeToString()
    for _ in range(levels - 1):
        value = _delimited(5, struct)  # Value.struct_value
        struct = _delimited(1, _delimited(1, b"x") + _delimited(2, value))  # Struct.fields entry
    return struct


def _with_surrogate(request: rpb.ChatRequest, placeholder: str) -> bytes:
    """`request`'s bytes with `placeholder` (4 ASCII letters) turned into a UTF-8-encoded lone surrogate."""
    raw = request.SerializeToString()
    assert raw.count(placeholder.encode()) == 1
    return raw.replace(placeholder.encode(), b"\xed\xa0\x80Z")


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "mock-small", "messages": [{"role": "user", "content": f"hi {MARKER}"}], **fields}


def _tool(parameters: object, name: str = "lookup") -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, "parameters": parameters}}]


# -- gRPC --------------------------------------------------------------------------------


def _assert_refused(error: MeshError, field: str, *words: str) -> None:
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, field), error.message
    for word in words:
        assert word in error.message


class TestGrpcRefusals:
    def test_schema_17_deep(self, doors: Doors) -> None:
        """A tool schema 17 levels deep: INVALID_ARGUMENT on tools[0].parameters naming the limit (16)."""
        tool = chat_pb2.ToolDefinition(name="lookup")
        tool.parameters.update(_deepen({"type": "object"}, 17))
        _assert_refused(doors.grpc_refusal(_grpc_request(tools=[tool])), "tools[0].parameters", "16 levels")

    def test_schema_deeper_than_protobuf_decodes(self, doors: Doors) -> None:
        """300 levels (bytes protobuf refuses to decode): still the field and the limit, not `request`."""
        tool = chat_pb2.ToolDefinition(name="lookup").SerializeToString() + _delimited(3, _deep_struct_bytes(300))
        raw = _grpc_request().SerializeToString() + _delimited(3, tool)
        _assert_refused(doors.grpc_refusal(raw), "tools[0].parameters", "16 levels")

    def test_deep_response_schema_and_extensions(self, doors: Doors) -> None:
        """The same limit on the response schema and on extensions."""
        request = _grpc_request()
        request.settings.response_format.type = chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        request.settings.response_format.json_schema.update(_deepen({"type": "object"}, 20))
        _assert_refused(doors.grpc_refusal(request), "settings.response_format.json_schema", "16 levels")
        request = _grpc_request()
        request.extensions.update({"mock": _deepen({}, 20)})
        _assert_refused(doors.grpc_refusal(request), "extensions", "16 levels")

    @pytest.mark.parametrize(
        ("where", "field"),
        [("model", "model"), ("content", "messages[0].content[0].text"), ("schema key", "tools[0].parameters")],
    )
    def test_lone_surrogate(self, doors: Doors, where: str, field: str) -> None:
        """A UTF-8-encoded lone surrogate in the model, the content or a schema key: the field, not `request`."""
        if where == "model":
            raw = _with_surrogate(_grpc_request(model="QQQQ"), "QQQQ")
        elif where == "content":
            request = _grpc_request()
            request.messages[0].content[0].text = "QQQQ"
            raw = _with_surrogate(request, "QQQQ")
        else:
            tool = chat_pb2.ToolDefinition(name="lookup")
            tool.parameters.update({"type": "object", "properties": {"QQQQ": {"type": "string"}}})
            raw = _with_surrogate(_grpc_request(tools=[tool]), "QQQQ")
        _assert_refused(doors.grpc_refusal(raw), field, "UTF-8")

    def test_unknown_strategy(self, doors: Doors) -> None:
        """Routing strategy 77 is not a strategy: INVALID_ARGUMENT on routing.strategy."""
        request = _grpc_request(routing=rpb.RoutingPolicy(strategy=77))  # type: ignore[arg-type]
        _assert_refused(doors.grpc_refusal(request), "routing.strategy", "77", "ROUTING_STRATEGY_HEDGE")

    @pytest.mark.parametrize(
        ("field", "seconds", "nanos"),
        [
            ("hedge_delay", 10**12, 0),
            ("hedge_delay", -1, 0),
            ("per_attempt_timeout", 7200, 0),
            ("per_attempt_timeout", 1, 2_000_000_000),
            ("per_attempt_timeout", 1, -5),
        ],
    )
    def test_durations_out_of_range(self, doors: Doors, field: str, seconds: int, nanos: int) -> None:
        """Durations beyond an hour, negative, or malformed: INVALID_ARGUMENT naming the field."""
        request = _grpc_request()
        duration = getattr(request.routing, field)
        duration.seconds, duration.nanos = seconds, nanos
        _assert_refused(doors.grpc_refusal(request), f"routing.{field}")


# -- HTTP --------------------------------------------------------------------------------


class TestHttpRefusals:
    @pytest.mark.parametrize("levels", [17, 300])
    def test_deep_tool_schema(self, doors: Doors, levels: int) -> None:
        """Deep tool schemas: 400 naming tools[0].function.parameters and the limit."""
        status, error = doors.http_refusal(_body(tools=_tool(_deepen({"type": "object"}, levels))))
        assert (status, error["param"]) == (400, "tools[0].function.parameters")
        assert "16 levels" in error["message"]

    def test_deep_response_schema_and_extensions(self, doors: Doors) -> None:
        """The same limit on response_format.json_schema.schema and llmmesh.extensions."""
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": _deepen({"type": "object"}, 20)}}
        status, error = doors.http_refusal(_body(response_format=fmt))
        assert (status, error["param"]) == (400, "response_format.json_schema.schema")
        status, error = doors.http_refusal(_body(llmmesh={"extensions": {"mock": _deepen({}, 20)}}))
        assert (status, error["param"]) == (400, "llmmesh.extensions")

    def test_100k_nested_brackets(self, doors: Doors) -> None:
        """100,000 nested `[`: 400 on body, naming the limit."""
        status, error = doors.http_refusal(b"[" * 100_000 + b"]" * 100_000)
        assert (status, error["param"]) == (400, "body")
        assert "levels deep" in error["message"]

    def test_deep_unknown_field(self, doors: Doors) -> None:
        """Nesting in a field the door ignores is bounded too."""
        status, error = doors.http_refusal(_body(metadata=_deepen({}, 500)))
        assert (status, error["param"]) == (400, "body")

    @pytest.mark.parametrize(
        ("raw", "param"),
        [
            (b'{"model":"mock-small","messages":[{"role":"user","content":"hi \\ud800"}]}', "messages[0].content"),
            (b'{"model":"\\ud800","messages":[{"role":"user","content":"hi"}]}', "model"),
            (
                b'{"model":"mock-small","messages":[{"role":"user","content":"hi"}],'
                b'"tools":[{"type":"function","function":{"name":"t","parameters":'
                b'{"type":"object","properties":{"\\udc00x":{"type":"string"}}}}}]}',
                "tools[0].function.parameters.properties.\\udc00x",
            ),
        ],
    )
    def test_lone_surrogate(self, doors: Doors, raw: bytes, param: str) -> None:
        """A lone surrogate escape in content, model or a schema key: 400 naming where."""
        status, error = doors.http_refusal(raw)
        assert (status, error["param"]) == (400, param)
        assert "surrogate" in error["message"]

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"llmmesh": {"hedge_delay_ms": 1e300}}, "llmmesh.hedge_delay_ms"),
            ({"llmmesh": {"per_attempt_timeout_ms": 1e300}}, "llmmesh.per_attempt_timeout_ms"),
            ({"llmmesh": {"strategy": 77}}, "llmmesh.strategy"),
            ({"max_tokens": True}, "max_tokens"),
            ({"max_completion_tokens": 5.5}, "max_completion_tokens"),
            ({"temperature": True}, "temperature"),
            ({"stream": "yes"}, "stream"),
            ({"seed": 2**70}, "seed"),
        ],
    )
    def test_wrong_values(self, doors: Doors, fields: dict[str, Any], param: str) -> None:
        """Out-of-range and wrongly typed values: 400 naming the field."""
        status, error = doors.http_refusal(_body(**fields))
        assert (status, error["param"]) == (400, param), error


# -- logs ---------------------------------------------------------------------------------


class TestLogsKeepPromptsOut:
    def test_no_prompt_marker_in_any_log(self, doors: Doors) -> None:
        """After hostile and ordinary requests on both doors, no process logged the prompt marker."""
        for levels in (17, 40, 300):
            doors.http_refusal(_body(tools=_tool(_deepen({"type": "object"}, levels))))
        doors.http_refusal(
            b'{"model":"mock-small","messages":[{"role":"user","content":"' + MARKER.encode() + b'\\ud800"}]}'
        )
        doors.http_refusal(_body(llmmesh={"hedge_delay_ms": 1e300}))
        doors.http_refusal(_body(model="no-such-model"))
        doors.http.post("/v1/chat/completions", json=_body())
        doors.http.post("/v1/chat/completions", json=_body(stream=True))
        tool = chat_pb2.ToolDefinition(name="lookup").SerializeToString() + _delimited(3, _deep_struct_bytes(300))
        doors.grpc_refusal(_grpc_request().SerializeToString() + _delimited(3, tool))
        doors.stub.Chat(_grpc_request(), timeout=20)
        # An adapter failure: the mock fails this request on purpose.
        failing = _grpc_request(routing=rpb.RoutingPolicy(max_retries=0))
        failing.extensions.update(
            {
                "mock": {"fail_code": "UNAVAILABLE", "fail_message": "boom"},
            }
        )
        doors.grpc_refusal(failing)
        processes = [doors.mesh.router, *doors.mesh.mocks]
        for process in processes:
            assert process is not None
            log = process.log()
            assert MARKER not in log, f"{process.name} logged the prompt marker:\n{_around(log, MARKER)}"


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 600) : at + 200]


# -- fuzz ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["\ud800", "\udfff", "mock-small", "auto", "user", "function", "text", "image_url"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "model",
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "n",
        "stream",
        "stream_options",
        "llmmesh",
    ]
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "nobody"])},
    optional={"content": _json, "tool_calls": _json, "tool_call_id": _json, "name": _json},
)
_mesh_options = st.fixed_dictionaries(
    {},
    optional={
        "strategy": st.one_of(st.sampled_from(["fallback", "hedge", "fanout_all", "x"]), st.integers()),
        "hedge_delay_ms": st.one_of(st.floats(), st.integers(), st.booleans()),
        "per_attempt_timeout_ms": st.one_of(st.floats(), st.integers()),
        "max_retries": _scalars,
        "fallback_models": _json,
        "extensions": _json,
    },
)
_bodies = st.fixed_dictionaries(
    {
        "model": st.one_of(st.sampled_from(["mock-small", "auto", "nope"]), _scalars),
        "messages": st.lists(_message, max_size=3),
    },
    optional={"llmmesh": _mesh_options, "tools": _json, "max_tokens": _scalars, "temperature": _scalars},
).flatmap(lambda body: st.dictionaries(_keys, _json, max_size=2).map(lambda extra: {**extra, **body}))


def _encode(body: object) -> bytes:
    # ensure_ascii: lone surrogates travel as \\ud800 escapes, as a hostile client would send them.
    return json.dumps(body, ensure_ascii=True).encode()


class TestFuzzHttpBodies:
    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=st.one_of(_bodies, _json))
    def test_generated_bodies(self, doors: Doors, body: object) -> None:
        """Any JSON body: an answer or a 4xx, never a 5xx."""
        response = doors.http.post("/v1/chat/completions", content=_encode(body), headers={"x-llmmesh-timeout": "10"})
        assert response.status_code < 500, response.text

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(raw=st.binary(max_size=200))
    def test_raw_bytes(self, doors: Doors, raw: bytes) -> None:
        """Bytes that are not JSON: 400, never a 5xx."""
        response = doors.http.post("/v1/chat/completions", content=raw)
        assert response.status_code < 500, response.text

    def test_router_survived(self, doors: Doors) -> None:
        """After the fuzzing the router still runs and answers."""
        assert doors.mesh.router is not None
        assert doors.mesh.router.process.poll() is None
        assert doors.stub.Chat(_grpc_request(), timeout=20).model == "mock-small"

"""CallerContext (end user, labels) and the caller's request id, through both doors of a live router.

The router validates them like any field, writes labels and the request id
(never the end user) to its access log, and passes the context on to the
adapter; the adapters' mappings are in tests/providers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx2
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import MOCK_CONFIG, ROUTING, http_port_of

USER = "u-5f1e2a"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    env = {"LLMMESH_HTTP_PORT": "0", "LLMMESH_ACCESS_LOG": "true"}
    with MockMesh(
        mock_config=MOCK_CONFIG, routing=ROUTING, env=env, workdir=tmp_path_factory.mktemp("caller")
    ) as started:
        yield started


def _chat(**caller: Any) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model="mock-small",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])],
        caller=chat_pb2.CallerContext(**caller),
    )


def _access_line(mesh: MockMesh, request_id: str) -> dict[str, Any]:
    assert mesh.router is not None
    for line in mesh.router.log().splitlines():
        if '"event": "request"' in line and request_id in line:
            return json.loads(line)  # type: ignore[no-any-return]
    raise AssertionError(f"no access-log line with {request_id}")


def test_grpc_labels_and_request_id_reach_the_access_log(mesh: MockMesh) -> None:
    with grpc.insecure_channel(mesh.router_address) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        stub.Chat(
            _chat(user=USER, labels={"team": "search", "feature": "autocomplete"}),
            timeout=10,
            metadata=(("x-request-id", "req-grpc-1"),),
        )
    line = _access_line(mesh, "req-grpc-1")
    assert line["labels"] == {"feature": "autocomplete", "team": "search"}
    assert USER not in json.dumps(line)


def test_http_door_maps_openai_fields(mesh: MockMesh) -> None:
    body = {
        "model": "mock-small",
        "messages": [{"role": "user", "content": "hi"}],
        "safety_identifier": USER,
        "metadata": {"team": "ads"},
    }
    url = f"http://127.0.0.1:{http_port_of(mesh)}/v1/chat/completions"
    response = httpx2.post(url, json=body, headers={"X-Request-Id": "req-http-1"}, timeout=10)
    assert response.status_code == 200, response.text
    line = _access_line(mesh, "req-http-1")
    assert (line["door"], line["labels"]) == ("http", {"team": "ads"})
    assert USER not in json.dumps(line)


@pytest.mark.parametrize(
    ("caller", "field"),
    [
        ({"user": "x" * 65}, "caller.user"),
        ({"user": "has space"}, "caller.user"),
        ({"labels": {"Team": "a"}}, "caller.labels"),
        ({"labels": {"team": "Not Lower"}}, "caller.labels.team"),
        ({"labels": {f"k{i}": "v" for i in range(17)}}, "caller.labels"),
    ],
)
def test_grpc_bad_caller_is_refused_naming_the_field(mesh: MockMesh, caller: dict[str, Any], field: str) -> None:
    with grpc.insecure_channel(mesh.router_address) as channel, pytest.raises(grpc.RpcError) as caught:
        router_service_pb2_grpc.RouterServiceStub(channel).Chat(_chat(**caller), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"safety_identifier": "x" * 65}, "safety_identifier"),
        ({"user": "a b"}, "user"),
        ({"metadata": {"A": "b"}}, "metadata"),
    ],
)
def test_http_bad_caller_is_a_400_naming_the_openai_field(mesh: MockMesh, extra: dict[str, Any], param: str) -> None:
    body = {"model": "mock-small", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = httpx2.post(f"http://127.0.0.1:{http_port_of(mesh)}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_request_id_that_could_forge_log_lines_is_left_out(mesh: MockMesh) -> None:
    with grpc.insecure_channel(mesh.router_address) as channel:
        router_service_pb2_grpc.RouterServiceStub(channel).Chat(
            _chat(labels={"probe": "forged-id"}), timeout=10, metadata=(("x-request-id", 'a" "b'),)
        )
    assert mesh.router is not None
    lines = [line for line in mesh.router.log().splitlines() if "forged-id" in line]
    assert len(lines) == 1
    assert "request_id" not in json.loads(lines[0])

"""Model capabilities, Anthropic sampling and extensions checks in the production shape (issue 17 items 9, 10).

The routing file is the prod ConfigMap's: its capabilities reach ListModels,
the capability metadata crosses the internal-token and mTLS hop to the
Anthropic adapters, and a bad extension never reaches an upstream.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.testing.production import ProductionMesh
from tests.production.helpers import MODELS, chat, reset_upstreams, script_text, stream_chat, upstream_requests

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]


def _stub(channel: grpc.Channel) -> router_service_pb2_grpc.RouterServiceStub:
    return router_service_pb2_grpc.RouterServiceStub(channel)


def test_list_models_shows_the_configmaps_capabilities(mesh: ProductionMesh) -> None:
    """ListModels carries each model's capabilities as the prod routing file states them."""
    with mesh.channel() as channel:
        listed = _stub(channel).ListModels(rpb.ListModelsRequest(), timeout=10, metadata=mesh.caller("team-b"))
    caps = {model.name: model.capabilities for model in listed.models}
    assert caps[MODELS["anthropic"]].sampling is True
    assert caps[MODELS["anthropic"]].max_output_tokens == 64000
    assert caps[MODELS["openai"]].reasoning is False
    assert caps[MODELS["google"]].audio is True


def test_anthropic_gets_temperature_and_reports_the_rest(mesh: ProductionMesh) -> None:
    """Through the mesh, temperature reaches Anthropic's wire; top_p is reported ignored, unary and streamed."""
    settings = chat_pb2.GenerationSettings(temperature=0.3, top_p=0.8)
    reset_upstreams(mesh)
    script_text(mesh, "anthropic", "warm answer")
    with mesh.channel() as channel:
        answer = _stub(channel).Chat(
            chat(MODELS["anthropic"], settings=settings), timeout=30, metadata=mesh.caller("team-b")
        )
    assert mesh.anthropic.requests[0].body["temperature"] == pytest.approx(0.3)
    assert "top_p" not in mesh.anthropic.requests[0].body
    assert json_format.MessageToDict(answer.extensions)["anthropic"]["ignored_settings"] == ["top_p"]
    reset_upstreams(mesh)
    script_text(mesh, "anthropic", "warm stream", stream=True)
    with mesh.channel() as channel:
        events = list(
            _stub(channel).StreamChat(
                stream_chat(MODELS["anthropic"], settings=settings), timeout=30, metadata=mesh.caller("team-b")
            )
        )
    assert mesh.anthropic.requests[0].body["temperature"] == pytest.approx(0.3)
    assert json_format.MessageToDict(events[-1].final.extensions)["anthropic"]["ignored_settings"] == ["top_p"]


def test_a_bad_extension_reaches_no_upstream(mesh: ProductionMesh) -> None:
    """An option the adapter fills itself is INVALID_ARGUMENT naming it, before any attempt."""
    reset_upstreams(mesh)
    extensions = struct_pb2.Struct()
    extensions.update({"anthropic": {"max_tokens": 5}})
    with mesh.channel() as channel, pytest.raises(grpc.RpcError) as info:
        _stub(channel).Chat(
            chat(MODELS["anthropic"], extensions=extensions), timeout=30, metadata=mesh.caller("team-b")
        )
    error = MeshError.from_rpc_error(info.value)
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "extensions.anthropic.max_tokens")
    assert upstream_requests(mesh, "anthropic") == 0

"""Calls through the production-shaped mesh: every provider, unary, streaming and tools, both doors, the agent."""

from __future__ import annotations

import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from services.testing.production import ProductionMesh
from tests.production.helpers import MODELS, chat, script_text, upstream_requests

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]


class TestEveryProvider:
    @pytest.mark.parametrize("kind", list(MODELS))
    def test_unary(self, mesh: ProductionMesh, kind: str) -> None:
        """A unary chat through the Service address reaches the kind's adapter (over mTLS, with the token) and back."""
        script_text(mesh, kind, f"hello from {kind}")
        with mesh.channel() as channel:
            response = router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                chat(MODELS[kind], f"hello {kind}"), timeout=30, metadata=mesh.caller()
            )
        assert response.model == MODELS[kind]
        assert response.finish_reason == chat_pb2.FINISH_REASON_STOP
        if kind == "mock":
            assert f"hello {kind}" in response.message.content[0].text
        else:
            assert response.message.content[0].text.strip() == f"hello from {kind}"
            assert upstream_requests(mesh, kind) == 1

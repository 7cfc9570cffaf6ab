"""LLMMESH_CAPTURE_CONTENT=true: prompt and completion text on the adapter's chat span."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_names as names
from services.common.otlp_receiver import OtlpReceiver
from services.testing.mesh import MockMesh
from tests.telemetry.conftest import (
    ADAPTER,
    MOCK_CONFIG,
    ROUTING,
    by_service,
    new_traceparent,
    spans_when,
    telemetry_env,
)


@pytest.fixture(scope="module")
def capturing(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    env = telemetry_env(receiver, LLMMESH_CAPTURE_CONTENT="true")
    with MockMesh(
        mock_config=MOCK_CONFIG, routing=ROUTING, env=env, workdir=tmp_path_factory.mktemp("capture")
    ) as mesh:
        yield mesh


class TestContentCapture:
    async def test_prompt_and_completion_recorded_when_enabled(
        self, capturing: MockMesh, receiver: OtlpReceiver
    ) -> None:
        """With capture on, the adapter span holds gen_ai.input.messages and gen_ai.output.messages in the GenAI schema."""
        traceparent, trace_id = new_traceparent()
        request = rpb.ChatRequest(
            model="mock-small",
            messages=[
                chat_pb2.Message(role=chat_pb2.ROLE_SYSTEM, content=[chat_pb2.ContentPart(text="Be brief.")]),
                chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="capture me")]),
            ],
        )
        async with grpc.aio.insecure_channel(capturing.router_address) as channel:
            response = await router_service_pb2_grpc.RouterServiceStub(channel).Chat(
                request, timeout=10, metadata=(("traceparent", traceparent),)
            )
        (adapter,) = by_service(spans_when(receiver, trace_id, count=3), ADAPTER)
        assert json.loads(adapter.attributes[names.GEN_AI_INPUT_MESSAGES]) == [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "capture me"}]},
        ]
        assert json.loads(adapter.attributes[names.GEN_AI_OUTPUT_MESSAGES]) == [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": response.message.content[0].text}],
                "finish_reason": "stop",
            }
        ]

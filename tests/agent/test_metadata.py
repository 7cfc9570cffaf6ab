"""What the agent tells the router on every step: metadata and deadline, seen by a recording router."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _RecordingRouter(router_service_pb2_grpc.RouterServiceServicer):
    """Answers with one calculator call, then a final answer; records metadata and deadlines."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def Chat(self, request: rpb.ChatRequest, context: grpc.ServicerContext) -> rpb.ChatResponse:
        with self._lock:
            self.calls.append(
                {
                    "metadata": dict(context.invocation_metadata()),
                    "time_remaining": context.time_remaining(),
                    "tools": [tool.name for tool in request.tools],
                    "roles": [message.role for message in request.messages],
                }
            )
        message = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT)
        if not any(m.role == chat_pb2.ROLE_TOOL for m in request.messages):
            message.tool_calls.add(id="c1", name="calculator", arguments_json='{"expression": "6 * 7"}')
        else:
            message.content.add(text="42")
        return rpb.ChatResponse(
            message=message,
            usage=chat_pb2.Usage(input_tokens=100, output_tokens=20),
            model=request.model,
            provider="recording",
            estimated_cost_usd=0.01,
        )


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_RecordingRouter, ServiceProcess]]:
    router = _RecordingRouter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(router, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # The embedded default profiles: this also checks they load.
    agent = start_service(
        ["-m", "services.agent"],
        name="agent",
        workdir=tmp_path_factory.mktemp("agent-metadata"),
        env={"LLMMESH_ROUTER_ADDRESS": f"127.0.0.1:{port}"},
    )
    try:
        yield router, agent
    finally:
        agent.terminate()
        server.stop(0)


class TestRouterCallMetadata:
    async def test_each_step_carries_run_step_budget_and_trace(self, recording) -> None:
        """Every router call names the run, the step and the budget left; trace context passes through."""
        router, agent = recording
        router.calls.clear()
        async with grpc.aio.insecure_channel(agent.address) as channel:
            response = await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=apb.AgentTask(input="six times seven?", max_total_tokens=1000, max_cost_usd=0.5)),
                timeout=20,
                metadata=(("traceparent", TRACEPARENT),),
            )
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        assert response.end.answer == "42"
        first, second = (call["metadata"] for call in router.calls)
        assert first["llmmesh-agent-run-id"] == second["llmmesh-agent-run-id"]
        assert (first["llmmesh-agent-step"], second["llmmesh-agent-step"]) == ("1", "2")
        assert first["llmmesh-agent-profile"] == "default"
        assert first["llmmesh-agent-max-steps"] == "6"
        assert (first["llmmesh-agent-remaining-tokens"], second["llmmesh-agent-remaining-tokens"]) == ("1000", "880")
        assert (first["llmmesh-agent-remaining-cost-usd"], second["llmmesh-agent-remaining-cost-usd"]) == (
            "0.500000",
            "0.490000",
        )
        assert first["traceparent"] == TRACEPARENT
        assert response.end.totals.estimated_cost_usd == pytest.approx(0.02)

    async def test_router_deadline_fits_inside_the_callers(self, recording) -> None:
        """The router call's deadline is the caller's time left less a margin, never more."""
        router, agent = recording
        router.calls.clear()
        async with grpc.aio.insecure_channel(agent.address) as channel:
            await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=apb.AgentTask(input="six times seven?")), timeout=8
            )
        remaining = [call["time_remaining"] for call in router.calls]
        assert all(value is not None and 0 < value < 8 for value in remaining)

    async def test_profile_system_prompt_and_tools_are_sent(self, recording) -> None:
        """The default profile's system prompt leads the conversation and its tools are offered."""
        router, agent = recording
        router.calls.clear()
        async with grpc.aio.insecure_channel(agent.address) as channel:
            await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=apb.AgentTask(input="six times seven?")), timeout=10
            )
        first = router.calls[0]
        assert first["roles"] == [chat_pb2.ROLE_SYSTEM, chat_pb2.ROLE_USER]
        assert first["tools"] == ["calculator", "current_time", "text_stats"]
        assert "llmmesh-agent-remaining-cost-usd" not in first["metadata"]  # the default profile has no cost budget

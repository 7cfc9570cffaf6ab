"""One trace per request across agent, router and adapter processes, with GenAI attributes."""

from __future__ import annotations

import grpc
import pytest

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_names as names
from services.common.otlp_receiver import OtlpReceiver, format_trace
from tests.telemetry.conftest import ADAPTER, AGENT, ROUTER, TracedMesh, by_service, new_traceparent, spans_when

QUESTION = "What is the monthly total of 1234 over a year?"


def _chat_request(model: str, text: str, **routing: object) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])],
        routing=rpb.RoutingPolicy(**routing),  # type: ignore[arg-type]
    )


async def _router_chat(traced: TracedMesh, request: rpb.ChatRequest, traceparent: str) -> rpb.ChatResponse:
    async with grpc.aio.insecure_channel(traced.router_address) as channel:
        return await router_service_pb2_grpc.RouterServiceStub(channel).Chat(
            request, timeout=10, metadata=(("traceparent", traceparent),)
        )


class TestAgentTrace:
    async def test_one_agent_run_is_one_trace_with_parent_links(
        self, traced: TracedMesh, receiver: OtlpReceiver
    ) -> None:
        """An agent run's spans in agent, router and adapter share one trace id and nest run → step → router → attempt → adapter."""
        receiver.clear()
        async with grpc.aio.insecure_channel(traced.agent_address) as channel:
            response = await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=apb.AgentTask(input=QUESTION, model="mock-agent")), timeout=20
            )
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        # run + 2 steps + 1 tool in the agent; 2 chats + 2 attempts in the router; 2 chats in the adapter.
        spans = receiver.wait_for(
            lambda r: (
                (found := [s for s in r.spans() if s.service in (AGENT, ROUTER, ADAPTER)])
                and len(found) >= 10
                and found
            )
        )
        assert len(spans) == 10, format_trace(spans)
        assert len({span.trace_id for span in spans}) == 1
        by_id = {span.span_id: span for span in spans}

        def parent(span: object) -> object:
            return by_id.get(span.parent_span_id)  # type: ignore[attr-defined]

        (run,) = [s for s in spans if s.name.startswith("invoke_agent ")]
        assert run.service == AGENT
        assert run.kind == "server"
        assert run.parent_span_id == ""
        steps = [s for s in by_service(spans, AGENT) if s.name == "chat mock-agent"]
        tools = [s for s in spans if s.name == "execute_tool calculator"]
        assert len(steps) == 2
        assert len(tools) == 1
        assert all(parent(s) is run for s in [*steps, *tools])
        assert [s.attributes[names.AGENT_STEP] for s in steps] == [1, 2]
        router_chats = [s for s in by_service(spans, ROUTER) if s.name == "chat mock-agent"]
        attempts = [s for s in spans if s.name == "attempt mock-agent"]
        adapter_chats = by_service(spans, ADAPTER)
        assert {parent(s).span_id for s in router_chats} == {s.span_id for s in steps}  # type: ignore[attr-defined]
        assert {parent(s).span_id for s in attempts} == {s.span_id for s in router_chats}  # type: ignore[attr-defined]
        assert {parent(s).span_id for s in adapter_chats} == {s.span_id for s in attempts}  # type: ignore[attr-defined]
        assert all(s.kind == "server" for s in [*router_chats, *adapter_chats])
        assert run.attributes[names.GEN_AI_OPERATION_NAME] == "invoke_agent"
        assert run.attributes[names.AGENT_END_REASON] == "answer"
        assert tools[0].attributes[names.GEN_AI_TOOL_NAME] == "calculator"

    async def test_agent_logs_carry_the_trace_id(self, traced: TracedMesh, receiver: OtlpReceiver) -> None:
        """The agent's 'run started' log line names the run's trace_id and span_id."""
        receiver.clear()
        async with grpc.aio.insecure_channel(traced.agent_address) as channel:
            await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=apb.AgentTask(input="hello there", model="mock-agent")), timeout=20
            )
        run = receiver.wait_for(lambda r: [s for s in r.spans() if s.name.startswith("invoke_agent")])[0]
        assert traced.agent is not None
        lines = [line for line in traced.agent.log().splitlines() if '"run started"' in line]
        assert any(run.trace_id in line and run.span_id in line for line in lines)


class TestRouterTrace:
    async def test_fallback_shows_two_attempt_spans_with_codes(
        self, traced: TracedMesh, receiver: OtlpReceiver
    ) -> None:
        """A fallback is two attempt spans: the primary FAILED with UNAVAILABLE, the fallback succeeded and says why."""
        traceparent, trace_id = new_traceparent()
        response = await _router_chat(traced, _chat_request("mock-down", "hi", max_retries=0), traceparent)
        assert response.model == "mock-small"
        spans = spans_when(receiver, trace_id, count=5)  # router chat + 2 attempts + 2 adapter chats
        attempts = sorted(
            (s for s in spans if s.name.startswith("attempt ")), key=lambda s: s.attributes[names.ATTEMPT_INDEX]
        )
        assert [(a.name, a.attributes[names.ATTEMPT_OUTCOME], a.attributes[names.ATTEMPT_CODE]) for a in attempts] == [
            ("attempt mock-down", "failed", "UNAVAILABLE"),
            ("attempt mock-small", "succeeded", "OK"),
        ]
        failed, fallback = attempts
        assert failed.status_code == 2  # ERROR
        assert fallback.attributes[names.ATTEMPT_FALLBACK_REASON] == "unavailable"
        (router_chat,) = [s for s in spans if s.service == ROUTER and s.kind == "server"]
        assert router_chat.name == "chat mock-down"
        assert router_chat.parent_span_id == traceparent.split("-")[2]
        assert router_chat.attributes[names.ROUTER_MODEL] == "mock-small"
        assert all(a.parent_span_id == router_chat.span_id for a in attempts)
        adapters = {s.parent_span_id: s for s in by_service(spans, ADAPTER)}
        assert adapters[failed.span_id].attributes[names.ERROR_TYPE] == "UNAVAILABLE"
        assert names.ERROR_TYPE not in adapters[fallback.span_id].attributes
        assert "fallback: unavailable" in format_trace(spans)

    async def test_genai_attributes_carry_the_answer(self, traced: TracedMesh, receiver: OtlpReceiver) -> None:
        """Adapter and router chat spans carry provider, models, token usage and finish reasons of the answer."""
        traceparent, trace_id = new_traceparent()
        response = await _router_chat(traced, _chat_request("mock-small", "Hello, mesh!"), traceparent)
        spans = spans_when(receiver, trace_id, count=3)
        (adapter,) = by_service(spans, ADAPTER)
        (router,) = [s for s in spans if s.service == ROUTER and s.kind == "server"]
        expected = {
            names.GEN_AI_OPERATION_NAME: "chat",
            names.GEN_AI_PROVIDER_NAME: "mock",
            names.GEN_AI_REQUEST_MODEL: "mock-small",
            names.GEN_AI_RESPONSE_MODEL: response.response_model,
            names.GEN_AI_USAGE_INPUT_TOKENS: response.usage.input_tokens,
            names.GEN_AI_USAGE_OUTPUT_TOKENS: response.usage.output_tokens,
            names.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        }
        assert response.usage.output_tokens > 0
        assert {key: adapter.attributes.get(key) for key in expected} == expected
        assert adapter.name == "chat mock-small"
        assert {key: router.attributes.get(key) for key in expected} == expected
        assert router.attributes[names.ROUTER_ESTIMATED_COST] == pytest.approx(response.estimated_cost_usd)

    async def test_prompt_and_completion_are_not_recorded_by_default(
        self, traced: TracedMesh, receiver: OtlpReceiver
    ) -> None:
        """Without LLMMESH_CAPTURE_CONTENT no span carries the prompt or the answer."""
        traceparent, trace_id = new_traceparent()
        response = await _router_chat(traced, _chat_request("mock-small", "my private prompt"), traceparent)
        spans = spans_when(receiver, trace_id, count=3)
        answer = response.message.content[0].text
        for span in spans:
            assert names.GEN_AI_INPUT_MESSAGES not in span.attributes
            assert names.GEN_AI_OUTPUT_MESSAGES not in span.attributes
            assert not any("my private prompt" in str(value) for value in span.attributes.values())
            assert not any(answer in str(value) for value in span.attributes.values())

    async def test_stream_chat_is_traced_like_unary(self, traced: TracedMesh, receiver: OtlpReceiver) -> None:
        """A streamed chat has the same router → attempt → adapter chain, with usage from the final message."""
        traceparent, trace_id = new_traceparent()
        request = rpb.StreamChatRequest(
            model="mock-small",
            messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="stream it")])],
        )
        async with grpc.aio.insecure_channel(traced.router_address) as channel:
            call = router_service_pb2_grpc.RouterServiceStub(channel).StreamChat(
                request, timeout=10, metadata=(("traceparent", traceparent),)
            )
            events = [event async for event in call]
        final = events[-1].final
        spans = spans_when(receiver, trace_id, count=3)
        (router,) = [s for s in spans if s.service == ROUTER and s.kind == "server"]
        (attempt,) = [s for s in spans if s.name == "attempt mock-small"]
        (adapter,) = by_service(spans, ADAPTER)
        assert (attempt.parent_span_id, adapter.parent_span_id) == (router.span_id, attempt.span_id)
        assert router.attributes[names.GEN_AI_REQUEST_STREAM] is True
        assert adapter.attributes[names.GEN_AI_USAGE_OUTPUT_TOKENS] == final.usage.output_tokens

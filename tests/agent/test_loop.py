"""The loop through real processes: agent → router → scripted mock adapter, tools local and remote."""

from __future__ import annotations

import grpc
import pytest

from llmmesh.v1 import agent_service_pb2 as apb
from tests.agent.conftest import AgentMesh, kinds, task, wait_for


async def _run(stub, text: str, *, timeout: float = 15, **fields) -> apb.RunResponse:
    return await stub.Run(apb.RunRequest(task=task(text, **fields)), timeout=timeout)


class TestAnswer:
    async def test_two_step_tool_run_streams_events_in_order(self, agent_stub) -> None:
        """A think → act → observe → answer run streams its events in loop order and ends with the right answer."""
        call = agent_stub.StreamRun(
            apb.StreamRunRequest(task=task("What is the monthly total over a year?")), timeout=15
        )
        events = [response.event async for response in call]
        assert kinds(events) == [
            "step_started",
            "model_output",
            "tool_call_requested",
            "tool_call_requested",
            "tool_call_finished",
            "tool_call_finished",
            "step_started",
            "model_output",
            "end",
        ]
        assert [e.tool_call_requested.call.name for e in events[2:4]] == ["current_time", "calculator"]
        finished = {e.tool_call_finished.result.name: e.tool_call_finished.result for e in events[4:6]}
        assert finished["calculator"].content == "14808"
        assert not finished["calculator"].is_error
        assert '"timezone": "UTC"' in finished["current_time"].content
        end = events[-1].end
        assert end.reason == apb.RUN_END_REASON_ANSWER
        assert "calculator = 14808" in end.answer
        assert end.totals.iterations == 2
        assert end.totals.usage.input_tokens == sum(e.model_output.usage.input_tokens for e in events[:-1])
        assert events[0].step_started.model == "mock-agent"
        assert events[1].model_output.provider == "mock"

    async def test_unary_run_returns_end_and_every_event(self, agent_stub) -> None:
        """Run returns the RunEnd and the same ordered events, the RunEnd last."""
        response = await _run(agent_stub, "What is the monthly total over a year?")
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        assert kinds(list(response.events))[-1] == "end"
        assert response.events[-1].end == response.end
        assert kinds(list(response.events)).count("tool_call_finished") == 2


class TestToolsAsObservations:
    async def test_parallel_tool_calls_overlap(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """Two 300 ms tool calls of one turn run concurrently: their start/end intervals at the tool overlap."""
        response = await _run(agent_stub, "Run both waits in parallel")
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        ids = [e.tool_call_requested.call.id for e in response.events if e.HasField("tool_call_requested")]
        seen = {(e["call_id"], e["event"]): e["time"] for e in agent_mesh.tool_events() if e["call_id"] in ids}
        starts = [seen[(call_id, "start")] for call_id in ids]
        ends = [seen[(call_id, "end")] for call_id in ids]
        assert len(ids) == 2
        # Each call started before the other ended: the intervals overlap.
        assert max(starts) < min(ends)

    async def test_failing_tool_is_observed_and_loop_recovers(self, agent_stub) -> None:
        """A tool error comes back as an is_error result the model sees, and the run still answers."""
        response = await _run(agent_stub, "Please divide by zero")
        finished = [e.tool_call_finished.result for e in response.events if e.HasField("tool_call_finished")]
        assert [(r.name, r.is_error) for r in finished] == [("calculator", True)]
        assert "division by zero" in finished[0].content
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        assert response.end.answer == "Recovered from: calculator = cannot evaluate '1/0': division by zero"

    async def test_schema_error_reaches_the_model(self, agent_stub) -> None:
        """Arguments that break the tool's JSON Schema are not run; the schema error is what the model reads next."""
        response = await _run(agent_stub, "Call it with bad arguments")
        finished = [e.tool_call_finished.result for e in response.events if e.HasField("tool_call_finished")]
        assert finished[0].is_error
        assert "'expression' is a required property" in finished[0].content
        # The scripted model echoes the tool messages it received: the error travelled through router and adapter.
        assert "'expression' is a required property" in response.end.answer

    async def test_unknown_tool_is_an_observation(self, agent_stub) -> None:
        """A tool name the agent does not know becomes an error result listing the tools that exist."""
        response = await _run(agent_stub, "Use an unknown tool")
        assert response.end.reason == apb.RUN_END_REASON_ANSWER
        assert "unknown tool 'teleport'" in response.end.answer
        assert "calculator" in response.end.answer


class TestEndings:
    async def test_iteration_limit_is_not_an_answer(self, agent_stub) -> None:
        """A model that keeps calling tools stops at max_iterations with ITERATION_LIMIT and no answer."""
        response = await _run(agent_stub, "Loop forever", max_iterations=3)
        assert response.end.reason == apb.RUN_END_REASON_ITERATION_LIMIT
        assert response.end.answer == ""
        assert response.end.totals.iterations == 3
        assert kinds(list(response.events)).count("step_started") == 3
        # The last step's tool calls are not run: nobody would read their results.
        assert kinds(list(response.events)).count("tool_call_finished") == 2

    @pytest.mark.parametrize("budget", [30, 60])
    async def test_token_budget_refuses_a_step_that_would_cross_it(self, agent_stub, budget: int) -> None:
        """A step whose known input (the conversation so far) would cross max_total_tokens is not started: TOKEN_BUDGET within budget."""
        response = await _run(agent_stub, "Loop forever", max_total_tokens=budget)
        assert response.end.reason == apb.RUN_END_REASON_TOKEN_BUDGET
        used = response.end.totals.usage.input_tokens + response.end.totals.usage.output_tokens
        assert 0 < used <= budget
        assert "the next step would send about" in response.end.detail
        # 30 stops after the first step (its resend alone would cross); 60 leaves room for a second.
        assert response.end.totals.iterations == (1 if budget == 30 else 2)

    async def test_cost_budget_refuses_a_step_that_would_cross_it(self, agent_stub) -> None:
        """At $1 a token, a first step of $18 leaves $12 of $30: the second step's known input costs more, so it is never sent."""
        response = await _run(agent_stub, "Loop forever", model="mock-priced", max_cost_usd=30.0)
        assert response.end.reason == apb.RUN_END_REASON_COST_BUDGET
        assert 0 < response.end.totals.estimated_cost_usd <= 30.0
        assert response.end.totals.iterations == 1
        assert "at the last step's rate" in response.end.detail

    async def test_cost_budget_ends_the_run(self, agent_stub) -> None:
        """The router's estimated cost counts against max_cost_usd; spending it ends the run with COST_BUDGET."""
        response = await _run(agent_stub, "Loop forever", model="mock-priced", max_cost_usd=1.0)
        assert response.end.reason == apb.RUN_END_REASON_COST_BUDGET
        assert response.end.totals.estimated_cost_usd >= 1.0
        assert response.end.totals.iterations == 1

    async def test_deadline_stops_before_a_step_that_cannot_finish(self, agent_stub) -> None:
        """With a short caller deadline, the run ends with DEADLINE (an OK call), not a cut stream or an error."""
        call = agent_stub.StreamRun(apb.StreamRunRequest(task=task("Loop forever", model="mock-paced")), timeout=2.0)
        events = [response.event async for response in call]
        assert await call.code() == grpc.StatusCode.OK
        end = events[-1].end
        assert end.reason == apb.RUN_END_REASON_DEADLINE
        assert end.answer == ""
        assert 1 <= end.totals.iterations < 8
        assert kinds(events).count("end") == 1

    async def test_deadline_during_a_model_call(self, agent_stub, agent_mesh: AgentMesh) -> None:
        """A model slower than the caller's deadline ends the run with DEADLINE, and the adapter's call is cancelled."""
        response = await _run(agent_stub, "Loop forever", model="mock-slow", timeout=1.5)
        assert response.end.reason == apb.RUN_END_REASON_DEADLINE
        assert "during step 1" in response.end.detail
        cancelled = await wait_for(lambda: agent_mesh.mesh.events("cancelled"))
        assert [event["model"] for event in cancelled] == ["mock-slow"]

    async def test_router_error_ends_with_error(self, agent_stub) -> None:
        """An unknown model fails the model call; the run ends with ERROR naming the router's code."""
        response = await _run(agent_stub, "hello", model="no-such-model")
        assert response.end.reason == apb.RUN_END_REASON_ERROR
        assert "NOT_FOUND" in response.end.detail
        assert kinds(list(response.events)) == ["step_started", "end"]

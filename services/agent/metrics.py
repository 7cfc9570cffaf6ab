"""The agent's metrics: runs in flight and by how they ended, steps, tool calls and their durations.

Recorded from the run's events at the servicer (the loop stays unaware);
exported by the agent process only (`register`, from services/agent/main.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field

from opentelemetry import metrics
from opentelemetry.metrics import Histogram, Meter

from llmmesh.v1 import agent_service_pb2 as apb
from services.common import telemetry_names as names
from services.common.telemetry import DURATION_HISTOGRAM, Tally, register_tally, telemetry


@dataclass
class AgentMetrics:
    run_duration: Histogram
    tool_duration: Histogram
    runs: Tally = field(default_factory=Tally)
    steps: Tally = field(default_factory=Tally)
    tool_calls: Tally = field(default_factory=Tally)
    in_flight: Tally = field(default_factory=Tally)

    @classmethod
    def create(cls, meter: Meter) -> AgentMetrics:
        return cls(
            run_duration=meter.create_histogram(
                names.METRIC_AGENT_RUN_DURATION,
                description="Agent runs, by profile and end reason.",
                **DURATION_HISTOGRAM,
            ),
            tool_duration=meter.create_histogram(
                names.METRIC_AGENT_TOOL_DURATION, description="Tool calls, by tool and outcome.", **DURATION_HISTOGRAM
            ),
        )


_current = AgentMetrics.create(metrics.NoOpMeter("llmmesh"))


def register() -> AgentMetrics:
    """Creates and exports the agent's instruments on the process meter; call once, from the agent's main."""
    global _current  # one per process, like telemetry()
    meter = telemetry().meter
    _current = AgentMetrics.create(meter)
    for name, tally, unit, description, up_down in (
        (names.METRIC_AGENT_RUNS, _current.runs, "{run}", "Finished runs by profile and end reason.", False),
        (names.METRIC_AGENT_STEPS, _current.steps, "{step}", "Steps (model turns) begun, by profile.", False),
        (names.METRIC_AGENT_TOOL_CALLS, _current.tool_calls, "{call}", "Tool calls by tool and outcome.", False),
        (names.METRIC_AGENT_IN_FLIGHT, _current.in_flight, "{run}", "Runs in progress, by profile.", True),
    ):
        register_tally(meter, name, tally, unit=unit, description=description, up_down=up_down)
    return _current


async def observed(
    profile: str, events: AsyncIterator[apb.RunEvent], *, tools: Collection[str]
) -> AsyncIterator[apb.RunEvent]:
    """`events` unchanged, counted on the way: in flight until the run ends or the caller goes.

    Tool names outside `tools` (a model may ask for any name) count as `unknown`: bounded labels.
    """
    current = _current
    agent = ((names.GEN_AI_AGENT_NAME, profile),)
    started = time.perf_counter()
    current.in_flight.add(1, agent)
    reason = "cancelled"  # what a run cut short by its caller ends as
    try:
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "step_started":
                current.steps.add(1, agent)
            elif kind == "tool_call_finished":
                _tool_finished(current, event.tool_call_finished, tools)
            elif kind == "tool_calls_limited":
                refused = ((names.GEN_AI_TOOL_NAME, ""), (names.TOOL_OUTCOME, "refused"))
                current.tool_calls.add(len(event.tool_calls_limited.refused_call_ids), refused)
            elif kind == "end":
                reason = apb.RunEndReason.Name(event.end.reason).removeprefix("RUN_END_REASON_").lower()
            yield event
    finally:
        current.in_flight.add(-1, agent)
        ended = (*agent, (names.AGENT_END_REASON, reason))
        current.runs.add(1, ended)
        current.run_duration.record(time.perf_counter() - started, dict(ended))


def _tool_finished(current: AgentMetrics, finished: apb.ToolCallFinished, tools: Collection[str]) -> None:
    outcome = "error" if finished.result.is_error else "ok"
    tool = finished.result.name if finished.result.name in tools else names.MODEL_UNKNOWN
    key = ((names.GEN_AI_TOOL_NAME, tool), (names.TOOL_OUTCOME, outcome))
    current.tool_calls.add(1, key)
    current.tool_duration.record(finished.duration.ToNanoseconds() / 1e9, dict(key))

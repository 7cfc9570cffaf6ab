"""Bounds on the tool calls of a run: per model turn, per run, and at once.

A model (or a prompt injection speaking through it) may ask for any number
of tool calls in one turn. The agent runs at most `per_turn` of them, at
most `per_run` over the whole run, and at most `concurrent` at the same
time; every call over a count limit is not run and is answered to the model
with an error result that names the limit. Profiles set the limits;
the LLMMESH_AGENT_MAX_* settings are both the defaults and the ceilings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import chat_pb2
from services.agent.profiles import Profile

DEFAULT_PER_TURN = 16
DEFAULT_PER_RUN = 64
DEFAULT_CONCURRENT = 4


@dataclass(frozen=True)
class ToolLimits:
    """The limits of one run (or, in the process settings, the ceilings of every run)."""

    per_turn: int = DEFAULT_PER_TURN
    per_run: int = DEFAULT_PER_RUN
    concurrent: int = DEFAULT_CONCURRENT

    def for_profile(self, profile: Profile) -> ToolLimits:
        """The profile's limits where it sets them, never above these."""
        return ToolLimits(
            per_turn=min(profile.max_tool_calls_per_turn or self.per_turn, self.per_turn),
            per_run=min(profile.max_tool_calls_per_run or self.per_run, self.per_run),
            concurrent=min(profile.max_concurrent_tool_calls or self.concurrent, self.concurrent),
        )


DEFAULT_LIMITS = ToolLimits()


@dataclass(frozen=True)
class Admission:
    """The calls of a turn that run, and the rest with the limit that refused each (both in call order)."""

    run: list[chat_pb2.ToolCall]
    refused: list[tuple[chat_pb2.ToolCall, apb.ToolCallLimit.ValueType]] = field(default_factory=list)


def admit(calls: Sequence[chat_pb2.ToolCall], limits: ToolLimits, *, already_run: int) -> Admission:
    """The first calls that fit both the per-turn limit and what is left of the run's."""
    room = max(limits.per_run - already_run, 0)
    taken = min(limits.per_turn, room)
    refused = [
        (call, apb.TOOL_CALL_LIMIT_PER_TURN if index >= limits.per_turn else apb.TOOL_CALL_LIMIT_PER_RUN)
        for index, call in enumerate(calls[taken:], start=taken)
    ]
    return Admission(run=list(calls[:taken]), refused=refused)


def refusal(limit: apb.ToolCallLimit.ValueType, limits: ToolLimits, *, requested: int) -> str:
    """The error result the model reads for a call a limit refused."""
    if limit == apb.TOOL_CALL_LIMIT_PER_TURN:
        return (
            f"not run: you asked for {requested} tool calls in one turn and at most {limits.per_turn} run per "
            f"turn (max_tool_calls_per_turn); the first {limits.per_turn} ran. Ask for fewer calls at once."
        )
    return (
        f"not run: this run has used all {limits.per_run} of its tool calls (max_tool_calls_per_run); "
        "answer with the results you have."
    )


def limit_value(limit: apb.ToolCallLimit.ValueType, limits: ToolLimits) -> int:
    return limits.per_turn if limit == apb.TOOL_CALL_LIMIT_PER_TURN else limits.per_run

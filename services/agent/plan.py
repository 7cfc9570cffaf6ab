"""From an AgentTask and its profile to the settled plan of one run.

The task overrides the profile field by field; bad fields are rejected with
INVALID_ARGUMENT naming the field (`task.tools[1]`) and how to fix it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.agent.profiles import MAX_ITERATIONS, ProfilesFile
from services.agent.tool_limits import DEFAULT_LIMITS, ToolLimits
from services.agent.tools import Tool
from services.common.errors import invalid_argument

MAX_INPUT_CHARS = 1_000_000


@dataclass(frozen=True)
class RunPlan:
    """Everything one run needs, settled before the first step."""

    profile: str
    model: str
    system_prompt: str
    input: str
    history: tuple[chat_pb2.Message, ...]
    tools: Mapping[str, Tool]
    routing: rpb.RoutingPolicy
    settings: chat_pb2.GenerationSettings | None
    max_iterations: int
    #: 0: no token budget.
    max_total_tokens: int
    #: 0: no cost budget.
    max_cost_usd: float
    tool_limits: ToolLimits = DEFAULT_LIMITS
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def plan_run(
    task: apb.AgentTask,
    profiles: ProfilesFile,
    available: Mapping[str, Tool],
    ceilings: ToolLimits = DEFAULT_LIMITS,
) -> RunPlan:
    """The plan for `task`, or INVALID_ARGUMENT naming the bad field; `ceilings` bound the tool limits."""
    if not task.input.strip():
        raise invalid_argument("task.input", "is blank; give the agent a question or an instruction")
    if len(task.input) > MAX_INPUT_CHARS:
        raise invalid_argument("task.input", f"is {len(task.input)} characters, above the limit of {MAX_INPUT_CHARS}")
    profile_name = task.profile or profiles.default_profile
    profile = profiles.profiles.get(profile_name)
    if profile is None:
        known = ", ".join(sorted(profiles.profiles))
        raise invalid_argument("task.profile", f"{task.profile!r} is not a known profile; use one of: {known}")
    if not 0 <= task.max_iterations <= MAX_ITERATIONS:
        raise invalid_argument(
            "task.max_iterations", f"{task.max_iterations} is outside 0..{MAX_ITERATIONS}; 0 uses the profile's"
        )
    if task.max_total_tokens < 0:
        raise invalid_argument("task.max_total_tokens", "is negative; 0 uses the profile's budget")
    if not math.isfinite(task.max_cost_usd) or task.max_cost_usd < 0:
        raise invalid_argument("task.max_cost_usd", "must be a finite number >= 0; 0 uses the profile's budget")
    model = task.model.strip() or profile.model
    routing = rpb.RoutingPolicy()
    if task.HasField("routing"):
        routing.CopyFrom(task.routing)
    elif model == profile.model:
        # A profile's fallbacks belong to its model; a task naming another model brings its own.
        routing.fallback_models.extend(profile.fallback_models)
    settings = None
    if profile.temperature is not None or profile.max_output_tokens is not None:
        settings = chat_pb2.GenerationSettings(
            temperature=profile.temperature, max_output_tokens=profile.max_output_tokens
        )
    return RunPlan(
        profile=profile_name,
        model=model,
        system_prompt=task.system_prompt or profile.system_prompt,
        input=task.input,
        history=tuple(task.history),
        tools=_tools(task, profile.tools, available),
        routing=routing,
        settings=settings,
        max_iterations=task.max_iterations or profile.max_iterations,
        max_total_tokens=task.max_total_tokens or profile.max_total_tokens,
        max_cost_usd=task.max_cost_usd or profile.max_cost_usd,
        tool_limits=ceilings.for_profile(profile),
    )


def _tools(task: apb.AgentTask, allowed: list[str] | None, available: Mapping[str, Tool]) -> dict[str, Tool]:
    """The profile's tools that exist now, narrowed to the task's list when it has one."""
    offered = {name: tool for name, tool in available.items() if allowed is None or name in allowed}
    if not task.tools:
        return offered
    chosen: dict[str, Tool] = {}
    for index, name in enumerate(task.tools):
        if name not in offered:
            hint = ", ".join(offered) or "none"
            raise invalid_argument(f"task.tools[{index}]", f"{name!r} is not a tool this profile may use; use: {hint}")
        chosen[name] = offered[name]
    return chosen

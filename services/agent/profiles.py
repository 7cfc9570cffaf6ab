"""Agent profiles: named presets of model, system prompt, tools and limits.

Read from the YAML file named by LLMMESH_AGENT_PROFILES, else the embedded
`defaults/profiles.yaml`; validated at start so a bad file stops the agent
with `file:line: path: problem`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.yamlconfig import ConfigProblem, load_packaged_yaml_model, load_yaml_model

MAX_ITERATIONS = 50
_PROFILE_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Profile(_Strict):
    """One agent preset. Per-request fields of AgentTask override these."""

    description: str = ""
    #: A model name, alias, `auto` or `auto:<tier>`, as the router knows it.
    model: str = Field(min_length=1)
    #: Tried in order by the router after `model` (RoutingPolicy.fallback_models).
    fallback_models: list[str] = Field(default_factory=list)
    system_prompt: str = ""
    #: Tool names this profile may use; omitted: every tool the agent knows, remote ones included.
    tools: list[str] | None = None
    max_iterations: int = Field(8, ge=1, le=MAX_ITERATIONS)
    #: Input + output tokens over a run; 0: no token budget.
    max_total_tokens: int = Field(0, ge=0)
    #: Estimated US dollars over a run (router price table); 0: no cost budget.
    max_cost_usd: float = Field(0.0, ge=0)
    #: Tool calls run from one model turn; the rest get an error result. None: the process setting.
    max_tool_calls_per_turn: int | None = Field(None, ge=1, le=1000)
    #: Tool calls run over the whole run. None: the process setting.
    max_tool_calls_per_run: int | None = Field(None, ge=1, le=100_000)
    #: Tool calls running at the same time. None: the process setting.
    max_concurrent_tool_calls: int | None = Field(None, ge=1, le=256)
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | None = Field(None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _tool_names_are_valid(self) -> Profile:
        for index, name in enumerate(self.tools or []):
            if not _matches(_TOOL_NAME, name):
                raise ConfigProblem(("tools", index), f"{name!r} is not 1-64 characters of [A-Za-z0-9_-]")
        return self


class ProfilesFile(_Strict):
    """The whole profiles file."""

    #: The profile used when a task names none.
    default_profile: str = "default"
    profiles: dict[str, Profile] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_and_default(self) -> ProfilesFile:
        for name in self.profiles:
            if not _matches(_PROFILE_NAME, name):
                raise ConfigProblem(("profiles", name), "profile names are lower-case letters, digits, '_' and '-'")
        if self.default_profile not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise ConfigProblem(("default_profile",), f"{self.default_profile!r} is not a profile here ({known})")
        return self


def load_profiles(path: str) -> ProfilesFile:
    """The profiles file at `path`, or the embedded default when `path` is empty."""
    if path:
        return load_yaml_model(ProfilesFile, path)
    return load_packaged_yaml_model(ProfilesFile, "services.agent.defaults", "profiles.yaml")


def _matches(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None

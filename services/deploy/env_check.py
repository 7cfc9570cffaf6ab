"""Manifest environment against what the code reads, both ways, and values the settings accept."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from unittest import mock

from pydantic import ValidationError

from services.deploy.code_env import CodeEnv, Variable
from services.deploy.invariants import DEPENDENT_VARIABLE, Obj, deployments, is_llmmesh, literal_env, ref

# Read by the code, but a Deployment need not set them. Keep this short.
OPTIONAL_IN_MANIFESTS: Mapping[str, str] = {
    "LLMMESH_READY_FILE": "test hook: the bound port is written to this file",
    "LLMMESH_MOCK_EVENTS_FILE": "test hook: the mock appends one line per call",
    "LLMMESH_TOOL_EVENTS_FILE": "test hook: the example ToolService appends one line per call",
    "LLMMESH_TOOL_REQUIRE_CALLER": "the example ToolService's setting (shipped in the agent's package, not run by it)",
    "LLMMESH_TOOL_ALLOWED_TENANTS": "the example ToolService's setting (shipped in the agent's package, not run by it)",
    "LLMMESH_TOOL_ALLOWED_CLIENTS": "the example ToolService's setting (shipped in the agent's package, not run by it)",
    "GOOGLE_API_KEY": "the other spelling of GEMINI_API_KEY, which the manifests set",
    "OPENAI_BASE_URL": "the SDK's spelling; the manifests set LLMMESH_OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL": "the SDK's spelling; the manifests set LLMMESH_ANTHROPIC_BASE_URL",
}
# Set by the manifests for work landing in parallel; allowed before any code reads them.
AHEAD_OF_CODE: Mapping[str, str] = {}
# Required of every llmmesh Deployment by the naming contract (docs/architecture.md).
ALWAYS_REQUIRED = ("OTEL_SERVICE_NAME",)


@dataclass(frozen=True)
class EnvFindings:
    problems: list[str]
    notes: list[str]
    # AHEAD_OF_CODE name → whether each built workload that sets it reads it.
    ahead_read: dict[str, list[bool]]


def workload_of(container: Obj) -> str | None:
    """`router`, `agent` or `provider:<kind>` from the container's llmmesh arguments."""
    args = list(container.get("command") or [])[1:] + list(container.get("args") or [])
    if args[:1] == ["router"]:
        return "router"
    if args[:1] == ["agent-server"]:
        return "agent"
    if args[:1] == ["provider"] and len(args) >= 2:
        return f"provider:{args[1]}"
    return None


def llmmesh_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for deployment in filter(is_llmmesh, deployments(objects)):
        for container in deployment["spec"]["template"]["spec"].get("containers") or []:
            yield deployment, container


def check_env(objects: list[Obj], code: Mapping[str, CodeEnv]) -> EnvFindings:
    problems: list[str] = []
    notes: list[str] = []
    ahead_read: dict[str, list[bool]] = {}
    for deployment, container in llmmesh_containers(objects):
        at = f"{ref(deployment)} container {container.get('name')}"
        workload = workload_of(container)
        if workload is None:
            problems.append(
                f"{at}: args {container.get('args')} must start with router, agent-server or provider <kind>"
            )
            continue
        env = code[workload]
        present = {entry["name"] for entry in container.get("env") or []}
        missing = [v for v in env.variables if not present & set(v.names) and not _optional(v)]
        missing_names = [" or ".join(v.names) + f" ({v.source})" for v in missing]
        missing_names += [name for name in ALWAYS_REQUIRED if name not in present]
        if missing_names:
            problems.append(f"{at}: the code reads these, add them to env: {', '.join(missing_names)}")
        # A variable other values expand, $(HOST_IP) in CONSUL_HTTP_ADDR, is used though no code reads it.
        allowed = env.names() | env.library | set(OPTIONAL_IN_MANIFESTS) | set(AHEAD_OF_CODE) | expanded(container)
        unknown = sorted(present - allowed)
        if unknown and env.built:
            problems.append(f"{at}: no code of {workload} reads these, remove or fix them: {', '.join(unknown)}")
        elif unknown:
            notes.append(f"{workload} is not in this tree yet; set for it but not verified: {', '.join(unknown)}")
        for name in present & set(AHEAD_OF_CODE):
            if env.built:
                ahead_read.setdefault(name, []).append(name in env.names() or name in env.library)
        problems += _check_values(at, env, literal_env(container))
    return EnvFindings(problems, notes, ahead_read)


def expanded(container: Obj) -> set[str]:
    """Names that the container's own env values reference as $(NAME) (Kubernetes dependent variables)."""
    return {name for value in literal_env(container).values() for name in DEPENDENT_VARIABLE.findall(value)}


def _optional(variable: Variable) -> bool:
    return any(name in OPTIONAL_IN_MANIFESTS for name in variable.names)


def _check_values(at: str, env: CodeEnv, values: Mapping[str, str]) -> list[str]:
    """Loads each settings class from the manifest's literal values, as the process would."""
    problems = []
    for path in env.settings_classes:
        module_name, _, qualname = path.partition(":")
        cls = getattr(importlib.import_module(module_name), qualname)
        with mock.patch.dict(os.environ, values, clear=True):
            try:
                cls()
            except ValidationError as error:
                prefix = str(cls.model_config.get("env_prefix", ""))
                for issue in error.errors():
                    name = (prefix + "_".join(str(part) for part in issue["loc"])).upper()
                    if name in values:
                        problems.append(f"{at}: {name}={values[name]!r} is rejected by {qualname}: {issue['msg']}")
    return problems

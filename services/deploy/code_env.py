"""The environment variables each llmmesh workload's code reads, derived from the code.

A workload is what one Deployment runs: `router`, `agent`, or `provider:<kind>`.
Its code is the import closure of its package (every module in it, plus the
shared entry points), found by importing it in a fresh interpreter, so other
workloads' modules never leak in. From that closure:

* settings: every pydantic-settings class defined in our modules (LLMMESH_*
  fields, aliases honoured);
* direct reads: in our modules that touch `os.environ`/`os.getenv`, every
  ALL_CAPS_WITH_UNDERSCORE string literal (the provider key variables, the
  SDKs' base-URL variables, LLMMESH_ROUTER_ADDRESS);
* library reads: the same literals in the third-party modules the closure
  loads (py-consul's CONSUL_HTTP_*), plus every OTEL_* variable the
  OpenTelemetry SDK defines. These may appear in manifests but are not required.

Nothing here is hard-coded per workload, so settings added by other changes
show up on their own.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# An ALL_CAPS name with at least one underscore, quoted: "OPENAI_API_KEY".
_ENV_LITERAL = re.compile(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["']""")
_READS_ENVIRON = re.compile(r"\bos\.environ\b|\bgetenv\(|\benviron\.get\(|\benviron\[")
_OURS = "services"
# The checker's own package is not part of any workload.
_NOT_WORKLOAD_CODE = ("services.deploy",)


@dataclass(frozen=True)
class Variable:
    """One setting the code reads; any of `names` sets it (pydantic AliasChoices)."""

    names: tuple[str, ...]
    source: str
    has_default: bool = True
    # From the settings class, for people (docs/settings.md); empty for direct reads.
    default: str = field(default="", compare=False)
    description: str = field(default="", compare=False)


@dataclass(frozen=True)
class CodeEnv:
    """What one workload's code reads from the environment."""

    workload: str
    built: bool
    variables: tuple[Variable, ...] = ()
    library: frozenset[str] = frozenset()
    settings_classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def names(self) -> set[str]:
        return {name for variable in self.variables for name in variable.names}

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "built": self.built,
            "variables": [
                {
                    "names": v.names,
                    "source": v.source,
                    "has_default": v.has_default,
                    "default": v.default,
                    "description": v.description,
                }
                for v in self.variables
            ],
            "library": sorted(self.library),
            "settings_classes": list(self.settings_classes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodeEnv:
        return cls(
            workload=data["workload"],
            built=data["built"],
            variables=tuple(
                Variable(tuple(v["names"]), v["source"], v["has_default"], v["default"], v["description"])
                for v in data["variables"]
            ),
            library=frozenset(data["library"]),
            settings_classes=tuple(data["settings_classes"]),
        )


def workload_packages(workload: str) -> tuple[str, tuple[str, ...]]:
    """The workload's own package, and the shared modules its entry point runs (some only when configured)."""
    watch = "services.common.consul_discovery.watch"  # imported on LLMMESH_DISCOVERY=consul only
    if workload == "router":
        return "services.router", ("services.common.server", watch)
    if workload == "agent":
        return "services.agent", ("services.common.server", watch)
    if workload.startswith("provider:"):
        registration = "services.common.consul_discovery.registration"
        return f"services.providers.{workload.removeprefix('provider:')}", ("services.providers.runner", registration)
    raise ValueError(f"unknown workload {workload!r}: expected router, agent or provider:<kind>")


def derive(workloads: Iterable[str], python: str = sys.executable) -> dict[str, CodeEnv]:
    """Derives each workload's variables, each in its own interpreter (in parallel)."""
    names = sorted(set(workloads))

    def one(workload: str) -> CodeEnv:
        done = subprocess.run(
            [python, "-m", "services.deploy.code_env", workload],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"deriving the variables of {workload} failed:\n{done.stderr}")
        return CodeEnv.from_json(json.loads(done.stdout))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def _collect(workload: str) -> CodeEnv:
    primary, shared = workload_packages(workload)
    built = _import_tree(primary)
    for shared_module in shared:
        importlib.import_module(shared_module)
    ours = [m for name, m in sorted(sys.modules.items()) if _is_workload_code(name) and m is not None]
    variables: list[Variable] = []
    classes: list[str] = []
    for module in ours:
        for cls in _settings_classes(module):
            classes.append(f"{cls.__module__}:{cls.__qualname__}")
            variables.extend(_settings_variables(cls))
    for module in ours:
        for name in sorted(_env_literals(module)):
            variables.append(Variable((name,), _relative_file(module)))
    library = set(_otel_sdk_variables())
    for name, module in list(sys.modules.items()):
        if (
            module is not None
            and not name.startswith((_OURS, "__main__"))
            and name.split(".")[0] not in sys.stdlib_module_names
        ):
            library |= _env_literals(module)
    return CodeEnv(workload, built, tuple(_unique(variables)), frozenset(library), tuple(classes))


def _import_tree(package: str) -> bool:
    """Imports the package and every module in it; False when it is not in this tree yet."""
    try:
        root = importlib.import_module(package)
    except ModuleNotFoundError as error:
        if error.name is not None and package.startswith(error.name):
            return False
        raise
    found = False
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), package + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # running it would start the service
            continue
        importlib.import_module(info.name)
        found = True
    return found


def _is_workload_code(name: str) -> bool:
    return (name == _OURS or name.startswith(_OURS + ".")) and not name.startswith(_NOT_WORKLOAD_CODE)


def _settings_classes(module: ModuleType) -> list[type]:
    from pydantic_settings import BaseSettings

    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseSettings)
        and value is not BaseSettings
        and value.__module__ == module.__name__
    ]


def _settings_variables(cls: type) -> list[Variable]:
    from services.common.settings import setting_docs

    # Inherited fields belong to the base class, which is collected on its own.
    return [
        Variable(doc.names, f"{cls.__qualname__}.{doc.field}", not doc.required, doc.default, doc.description)
        for doc in setting_docs(cls)  # type: ignore[arg-type]
        if doc.owner is cls
    ]


def _env_literals(module: ModuleType) -> set[str]:
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return set()
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    if not _READS_ENVIRON.search(source):
        return set()
    return set(_ENV_LITERAL.findall(source))


def _otel_sdk_variables() -> set[str]:
    """Every OTEL_* variable the OpenTelemetry API and SDK define (the SDK reads them)."""
    import opentelemetry.environment_variables as api_variables
    import opentelemetry.sdk.environment_variables as sdk_variables

    return {
        value
        for module in (api_variables, sdk_variables)
        for value in vars(module).values()
        if isinstance(value, str) and value.startswith("OTEL_")
    }


def _relative_file(module: ModuleType) -> str:
    path = Path(getattr(module, "__file__", "") or module.__name__)
    parts = path.parts
    return "/".join(parts[parts.index(_OURS) :]) if _OURS in parts else str(path)


def _unique(variables: list[Variable]) -> list[Variable]:
    seen: set[tuple[str, ...]] = set()
    unique = []
    for variable in variables:
        if variable.names not in seen:
            seen.add(variable.names)
            unique.append(variable)
    return unique


if __name__ == "__main__":
    print(json.dumps(_collect(sys.argv[1]).to_json()))

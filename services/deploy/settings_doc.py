"""docs/settings.md: every environment variable the code reads, generated from the code.

    python -m services.deploy.settings_doc [--write]

The variables come from services.deploy.code_env (the same derivation the
Kubernetes check uses): each settings class's fields with their defaults
and descriptions, per workload, and the variables read straight from
os.environ, whose meaning is written once below in DIRECT_READS. `make
docs` writes the file; `make k8s-check` fails when it is stale or when a
variable read directly has no entry here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from services.deploy.code_env import CodeEnv, Variable, derive

REPO = Path(__file__).resolve().parents[2]
DOC = Path("docs/settings.md")
WORKLOADS = (
    "router",
    "agent",
    "provider:mock",
    "provider:openai",
    "provider:anthropic",
    "provider:google",
)
_PROVIDERS = frozenset(w for w in WORKLOADS if w.startswith("provider:"))

# Variables read with os.environ rather than through a settings class: who reads each, and what it means.
# Every such variable the services read must be here (make k8s-check says which is missing).
DIRECT_READS: Mapping[str, tuple[str, str]] = {
    "OPENAI_API_KEY": ("the openai adapter", "Its key (the SDK's own variable)."),
    "OPENAI_BASE_URL": ("the openai adapter", "The SDK's base URL variable; LLMMESH_OPENAI_BASE_URL wins over it."),
    "ANTHROPIC_API_KEY": ("the anthropic adapter", "Its key."),
    "ANTHROPIC_BASE_URL": (
        "the anthropic adapter",
        "The SDK's base URL variable; LLMMESH_ANTHROPIC_BASE_URL wins over it.",
    ),
    "GOOGLE_API_KEY": ("the google adapter", "Its key; wins over GEMINI_API_KEY when both are set."),
    "GEMINI_API_KEY": ("the google adapter", "Its key when GOOGLE_API_KEY is unset."),
    "LLMMESH_ROUTER_ADDRESS": (
        "MeshClient, `llmmesh chat` and `models`",
        "Where they connect; default 127.0.0.1:50051 (the agent's own setting is above).",
    ),
    "LLMMESH_AGENT_ADDRESS": ("`llmmesh agent`", "Where it connects; default 127.0.0.1:50052."),
    "LLMMESH_API_KEY": (
        "MeshClient and the CLI",
        "The caller key they send as `authorization: Bearer <key>`; unset: none is sent.",
    ),
}
_HEADER = """# Settings: every environment variable

Generated from the settings classes by `make docs` (services/deploy/settings_doc.py);
`make k8s-check` fails when this file is stale, so it always matches the code.
A process reads only the variables of its own rows; unset variables take the
default shown. Empty values count as unset where the meaning says so.
The README explains the settings in context; this is the complete list.
"""


def render(code: Mapping[str, CodeEnv]) -> str:
    """The whole document for the derived `code` of WORKLOADS."""
    classes: dict[str, list[Variable]] = {}
    readers: dict[str, set[str]] = {}
    for workload in WORKLOADS:
        for variable in code[workload].variables:
            owner = variable.source.split(".")[0]
            if "/" in variable.source:
                continue  # read directly: below
            if variable not in classes.setdefault(owner, []):
                classes[owner].append(variable)
            readers.setdefault(owner, set()).add(workload)
    out = [_HEADER]
    for owner in sorted(classes, key=lambda name: (-len(readers[name]), name)):
        out.append(f"\n## {owner}: {_who(readers[owner])}\n")
        out.append("| variable | default | meaning |\n|---|---|---|")
        for variable in classes[owner]:
            default = f"`{variable.default}`" if variable.default else ""
            names = " or ".join(f"`{name}`" for name in variable.names)
            out.append(f"| {names} | {default} | {_cell(variable.description)} |")
    out.append("\n## Read directly (not through a settings class)\n")
    out.append("| variable | read by | meaning |\n|---|---|---|")
    for name, (readers_of, meaning) in sorted(DIRECT_READS.items()):
        out.append(f"| `{name}` | {readers_of} | {_cell(meaning)} |")
    out.append(
        "\nTelemetry also follows the standard OpenTelemetry variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, "
        "`OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`, `OTEL_SDK_DISABLED`, ...), and py-consul reads "
        "`CONSUL_HTTP_ADDR` and `CONSUL_HTTP_TOKEN`."
    )
    return "\n".join(out) + "\n"


def direct_reads(code: Mapping[str, CodeEnv]) -> set[str]:
    """What the services read with os.environ that people set: provider keys and URLs, LLMMESH_* ones.

    code_env finds these as string literals in modules that touch os.environ;
    the CLI is left out, since `llmmesh up` writes many variables for the
    processes it starts.
    """
    settings = {name for variable in _all(code) if "/" not in variable.source for name in variable.names}
    return {
        name
        for variable in _all(code)
        if "/" in variable.source
        for name in variable.names
        if name not in settings and (name.startswith("LLMMESH_") or name.endswith(("_API_KEY", "_BASE_URL")))
    }


def problems(repo: Path, code: Mapping[str, CodeEnv]) -> list[str]:
    """What is wrong with the committed docs/settings.md (empty: nothing)."""
    known = dict(code)
    missing = [w for w in WORKLOADS if w not in known]
    if missing:
        known.update(derive(missing))
    found = [
        f"{DOC}: {name} is read directly but has no meaning in DIRECT_READS (services/deploy/settings_doc.py)"
        for name in sorted(direct_reads(known))
        if name not in DIRECT_READS
    ]
    path = repo / DOC
    if not path.exists() or path.read_text(encoding="utf-8") != render(known):
        found.append(f"{DOC} does not match the settings classes: run `make docs` and commit it")
    return found


def _all(code: Mapping[str, CodeEnv]) -> Iterable[Variable]:
    return (variable for workload in WORKLOADS for variable in code[workload].variables)


def _who(workloads: set[str]) -> str:
    names = set(workloads)
    parts = []
    if set(WORKLOADS) <= names:
        return "every service process"
    if names >= _PROVIDERS:
        parts.append("every adapter")
        names -= _PROVIDERS
    parts += [f"the {w.removeprefix('provider:')} adapter" if w in _PROVIDERS else w for w in sorted(names)]
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="settings_doc", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help=f"write {DOC} (default: print it)")
    args = parser.parse_args(argv)
    code = derive(WORKLOADS)
    undescribed = sorted(name for name in direct_reads(code) if name not in DIRECT_READS)
    if undescribed:
        print(f"settings_doc: describe these in DIRECT_READS first: {', '.join(undescribed)}", file=sys.stderr)
        return 1
    text = render(code)
    if args.write:
        (REPO / DOC).parent.mkdir(exist_ok=True)
        (REPO / DOC).write_text(text, encoding="utf-8")
        print(f"wrote {DOC}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

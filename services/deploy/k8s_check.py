"""`make k8s-check`: render every kustomize build and check it.

    python -m services.deploy.k8s_check [--root deploy/k8s]

For the base and each overlay: kustomize renders, every object validates
against the Kubernetes JSON schemas (offline, strict), llmmesh's invariants
hold (services.deploy.invariants), and each Deployment's environment matches
what its code reads (services.deploy.env_check), processes reach Consul on
their node, every Secret referenced is listed in README.md and created by
deploy/k8s/create-secrets.sh, and the prod overlay keeps its promises (auth,
TLS, no mock: services.deploy.production). deploy/k8s/monitoring renders and
its PodMonitors scrape the prod pods on a port they declare; adapter and
agent HPAs scale on a Pods metric its prometheus-adapter values serve. Also: the routing ConfigMap's
copy equals the embedded default, the Dockerfile's sources and entrypoint
exist, and docs/settings.md is what the settings classes generate. Exit 1
with every problem listed, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.deploy import settings_doc
from services.deploy.code_env import CodeEnv, derive
from services.deploy.dockerfile import dockerfile_problems
from services.deploy.env_check import check_env, llmmesh_containers, workload_of
from services.deploy.invariants import Obj, check_objects
from services.deploy.monitoring import (
    ADAPTER_VALUES,
    custom_metric_problems,
    podmonitor_problems,
    promtool_rule_problems,
    served_custom_metrics,
)
from services.deploy.production import production_problems, read_text
from services.deploy.render import RenderError, render, schema_problems

REPO = Path(__file__).resolve().parents[2]
ROUTING_DEFAULT = Path("services/router/defaults/routing.yaml")
ROUTING_COPY = Path("base/config/routing.yaml")
SECRETS_SCRIPT = Path("create-secrets.sh")
MONITORING = Path("monitoring")
# Builds held to the production rules (auth on, TLS on every hop, no mock).
PRODUCTION_BUILDS = frozenset({"overlays/prod"})
# The label of the deploy/k8s/monitoring checks (its PodMonitors against the prod build, promtool on its rules).
MONITORING_LABEL = "monitoring"


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)
    objects: int = 0
    # What each workload's code reads, as derived (docs/settings.md is checked against it too).
    code: dict[str, CodeEnv] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def builds(root: Path) -> list[Path]:
    """The base and every overlay."""
    overlays = root / "overlays"
    return [root / "base", *sorted(p for p in overlays.iterdir() if (p / "kustomization.yaml").exists())]


def check_tree(
    root: Path,
    repo: Path = REPO,
    code: Mapping[str, CodeEnv] | None = None,
    only: Collection[str] | None = None,
) -> Report:
    """Checks every build of `root`, or with `only` just those labels (`base`, `overlays/<name>`, `monitoring`).

    `only` is for tests that break one build: rendering the others (a kustomize run each) cannot change
    what they assert. `monitoring` needs `overlays/prod` beside it (its PodMonitors are checked against it).
    """
    labels = [build.relative_to(root).as_posix() for build in builds(root)]
    if only is not None:
        unknown = sorted(set(only) - {*labels, MONITORING_LABEL})
        if unknown:
            raise ValueError(f"no such build in {root}: {', '.join(unknown)} (builds: {', '.join(labels)})")
        if MONITORING_LABEL in only and "overlays/prod" not in only:
            raise ValueError("the monitoring checks need overlays/prod: add it to only")
    report = Report()
    report.problems += _routing_copy_problems(root, repo)
    rendered: dict[str, list[Obj]] = {}
    for build, label in zip(builds(root), labels, strict=True):
        if only is not None and label not in only:
            continue
        report.builds.append(label)
        try:
            rendered[label] = render(build)
        except RenderError as error:
            report.problems.append(f"[{label}] {error}")
    workloads = {workload_of(c) for objects in rendered.values() for _, c in llmmesh_containers(objects)} - {None}
    ahead_read: dict[str, list[bool]] = {}
    known = dict(code or {})
    missing = sorted(w for w in workloads if w is not None and w not in known)
    if missing:
        known.update(derive(missing))
    report.code = known
    readme, script = read_text(repo / "README.md"), read_text(root / SECRETS_SCRIPT)
    for label, objects in rendered.items():
        report.objects += len(objects)
        findings = check_env(objects, known)
        problems = schema_problems(objects) + check_objects(objects) + findings.problems
        problems += production_problems(objects, readme, script, production=label in PRODUCTION_BUILDS)
        problems += _command_problems(objects, known, report.notes)
        problems += custom_metric_problems(objects, served_custom_metrics(root / MONITORING / ADAPTER_VALUES.name))
        report.problems += [f"[{label}] {p}" for p in problems]
        report.notes += findings.notes
        for name, reads in findings.ahead_read.items():
            ahead_read.setdefault(name, []).extend(reads)
    report.notes += [
        f"{name} is read wherever it is set now: drop it from AHEAD_OF_CODE"
        for name, reads in ahead_read.items()
        if all(reads)
    ]
    report.notes = list(dict.fromkeys(report.notes))
    if only is not None and MONITORING_LABEL not in only:
        return report
    report.problems += _monitoring_problems(root, rendered.get("overlays/prod"))
    rule_problems = promtool_rule_problems(root / MONITORING / "prometheus-rules.yaml")
    if rule_problems is None:
        report.notes.append("promtool not installed: the alert rules were not checked (make monitoring-tools)")
    else:
        report.problems += [f"[monitoring] {p}" for p in rule_problems]
    return report


def _monitoring_problems(root: Path, prod: list[Obj] | None) -> list[str]:
    """deploy/k8s/monitoring renders and its PodMonitors scrape the prod pods (no CRD schemas offline)."""
    folder = root / MONITORING
    if prod is None or not (folder / "kustomization.yaml").exists():
        return []
    try:
        monitors = render(folder)
    except RenderError as error:
        return [f"[monitoring] {error}"]
    return [f"[monitoring] {p}" for p in podmonitor_problems(monitors, prod)]


def _routing_copy_problems(root: Path, repo: Path) -> list[str]:
    copy, default = root / ROUTING_COPY, repo / ROUTING_DEFAULT
    if not copy.exists() or copy.read_bytes() != default.read_bytes():
        return [
            f"{copy}: must equal {ROUTING_DEFAULT} (kustomize cannot read it in place): cp {ROUTING_DEFAULT} {copy}"
        ]
    return []


def _command_problems(objects: list[Obj], code: Mapping[str, CodeEnv], notes: list[str]) -> list[str]:
    """Each container's args must be an `llmmesh` command the CLI accepts."""
    from services.cli.main import main as cli

    problems = []
    for deployment, container in llmmesh_containers(objects):
        args = list(container.get("args") or [])
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                cli([*args, "--help"])
                accepted = True
            except SystemExit as exit_:
                accepted = exit_.code == 0
        workload = workload_of(container)
        if accepted:
            continue
        where = f"Deployment/{deployment['metadata']['name']}"
        if workload is not None and workload in code and not code[workload].built:
            notes.append(f"{where}: `llmmesh {' '.join(args)}` is not in this tree's CLI yet ({workload} not built)")
        else:
            problems.append(f"{where}: `llmmesh {' '.join(args)}` is not a command the llmmesh CLI accepts")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s-check", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=REPO / "deploy" / "k8s", help="folder with base/ and overlays/")
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root (Dockerfile, routing default)")
    args = parser.parse_args(argv)
    report = check_tree(args.root, args.repo)
    report.problems += dockerfile_problems(args.repo)
    report.problems += settings_doc.problems(args.repo, report.code)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"FAIL: {problem}")
    summary = f"{len(report.builds)} builds ({', '.join(report.builds)}), {report.objects} objects"
    if report.ok:
        print(f"k8s-check: OK: {summary}; Dockerfile checked")
        return 0
    print(f"k8s-check: {len(report.problems)} problem(s) in {summary}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())

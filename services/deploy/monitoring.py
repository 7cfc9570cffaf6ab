"""llmmesh's alerts and dashboard as files: deploy/k8s/monitoring is their one source.

    python -m services.deploy.monitoring rules > llmmesh-rules.yaml

prints the PrometheusRule's spec as a plain Prometheus rules file (for a
Prometheus without the Operator, and for promtool). `alert_signals` and
`dashboard_queries` are what the real-Prometheus test evaluates.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "dashboards" / "llmmesh.json"
# An alert's trailing `<op> <number>`: what is left is the signal it compares.
_THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+(e-?[0-9]+)?\s*$")


def rules_spec(path: Path = RULES) -> dict[str, Any]:
    """The PrometheusRule's spec: `{"groups": [...]}`, the plain rules file format."""
    rule = yaml.safe_load(path.read_text())
    if rule.get("kind") != "PrometheusRule":
        raise ValueError(f"{path}: expected a PrometheusRule, found {rule.get('kind')}")
    return dict(rule["spec"])


def promtool_rule_problems(path: Path = RULES) -> list[str] | None:
    """`promtool check rules` on the PrometheusRule's spec; None when promtool is not installed."""
    promtool = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if promtool is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rules:
        rules.write(rules_file_text(path))
        rules.flush()
        result = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return []
    return [
        f"{path.name}: promtool check rules: {line}"
        for line in result.stdout.splitlines() + result.stderr.splitlines()
        if line.strip()
    ]


def rules_file_text(path: Path = RULES) -> str:
    return "# Generated from deploy/k8s/monitoring/prometheus-rules.yaml: edit that file.\n" + yaml.safe_dump(
        rules_spec(path), sort_keys=False, width=200
    )


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for group in rules_spec(path)["groups"] for rule in group["rules"] if "alert" in rule]


def alert_signals(path: Path = RULES) -> dict[str, str]:
    """Each alert's expr without its threshold: a healthy mesh returns series for it, the alert none."""
    signals = {}
    for rule in alerts(path):
        expr = str(rule["expr"]).strip()
        signal = _THRESHOLD.sub("", expr)
        if signal == expr:
            raise ValueError(f"alert {rule['alert']}: expr does not end in a comparison with a number")
        signals[rule["alert"]] = signal
    return signals


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def dashboard_queries(path: Path = DASHBOARD) -> dict[str, str]:
    """`panel title / refId` → expr, for every Prometheus target of every panel (rows' panels included)."""
    queries = {}
    for panel in _panels(dashboard(path)["panels"]):
        for target in panel.get("targets", []):
            queries[f"{panel['title']} / {target['refId']}"] = str(target["expr"])
    return queries


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for panel in panels:
        flat.append(panel)
        flat += _panels(panel.get("panels", []))
    return flat


# The job names the alerts and the dashboard select on, by component.
JOBS = {
    "router": re.compile(r"llmmesh-router"),
    "provider": re.compile(r"llmmesh-provider-[a-z0-9-]+"),
    "agent": re.compile(r"llmmesh-agent"),
}


def podmonitor_problems(monitors: list[dict[str, Any]], workloads: list[dict[str, Any]]) -> list[str]:
    """Each llmmesh component has one PodMonitor; each selects Deployments' pods in `workloads`,
    scrapes a port they declare and names `job` (jobLabel) as the alerts expect."""
    from services.deploy.invariants import COMPONENT, containers, deployments, pod_labels, selector_matches

    problems: list[str] = []
    covered: set[str] = set()
    for monitor in (m for m in monitors if m.get("kind") == "PodMonitor"):
        where, spec = f"PodMonitor/{monitor['metadata']['name']}", monitor.get("spec", {})
        pods = [d for d in deployments(workloads) if selector_matches(spec.get("selector"), pod_labels(d))]
        if not pods:
            problems.append(f"{where}: selector {spec.get('selector')} matches no Deployment's pods")
        for deployment in pods:
            labels, at = pod_labels(deployment), f"{where} → Deployment/{deployment['metadata']['name']}"
            covered.add(deployment["metadata"]["name"])
            ports = {p.get("name") for c in containers(deployment) for p in c.get("ports") or []}
            for endpoint in spec.get("podMetricsEndpoints") or []:
                if endpoint.get("port") not in ports:
                    problems.append(f"{at}: port {endpoint.get('port')!r} is no container port ({sorted(ports)})")
            job, pattern = labels.get(spec.get("jobLabel", "")), JOBS.get(labels.get(COMPONENT, ""))
            if pattern is not None and (job is None or not pattern.fullmatch(job)):
                # Without jobLabel (or a pod lacking it) the Operator names the job <namespace>/<monitor>.
                default = f"{monitor['metadata'].get('namespace', '')}/{monitor['metadata']['name']}"
                problems.append(
                    f"{at}: job would be {job or default!r};"
                    f" the alerts select {pattern.pattern!r} (set jobLabel: app.kubernetes.io/name)"
                )
    for deployment in deployments(workloads):
        name, component = deployment["metadata"]["name"], pod_labels(deployment).get(COMPONENT, "")
        if component in JOBS and name not in covered:
            problems.append(f"Deployment/{name}: no PodMonitor in deploy/k8s/monitoring scrapes it")
    return problems


ADAPTER_VALUES = MONITORING / "prometheus-adapter-values.yaml"
# Components that scale on in-flight work (a Pods metric) with CPU beside it.
SCALED_ON_LOAD = ("provider", "agent")


def served_custom_metrics(path: Path = ADAPTER_VALUES) -> set[str]:
    """The Pods metric names prometheus-adapter serves with these values (rules.custom[].name.as)."""
    values = yaml.safe_load(path.read_text()) if path.exists() else {}
    return {rule.get("name", {}).get("as", "") for rule in (values.get("rules") or {}).get("custom") or []}


def exported_metrics() -> set[str]:
    """Every llmmesh metric as Prometheus names it (dots become underscores)."""
    from services.common import telemetry_names as names

    return {
        value.replace(".", "_")
        for key, value in vars(names).items()
        if key.startswith("METRIC_") and isinstance(value, str)
    }


def custom_metric_problems(objects: list[dict[str, Any]], served: set[str]) -> list[str]:
    """Adapter and agent HPAs scale on a Pods metric that prometheus-adapter serves and the code
    exports, with CPU as the second metric."""
    from services.deploy.invariants import COMPONENT, deployments, pod_labels

    component = {d["metadata"]["name"]: pod_labels(d).get(COMPONENT, "") for d in deployments(objects)}
    exported, problems = exported_metrics(), []
    for hpa in (o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"):
        where, metrics = f"HorizontalPodAutoscaler/{hpa['metadata']['name']}", hpa["spec"].get("metrics") or []
        pods = [m["pods"]["metric"]["name"] for m in metrics if m.get("type") == "Pods"]
        for name in pods:
            if name not in served:
                problems.append(f"{where}: Pods metric {name!r} has no rule in {ADAPTER_VALUES.name} (rules.custom)")
            if name not in exported:
                problems.append(f"{where}: Pods metric {name!r} is no metric llmmesh exports")
        if component.get(hpa["spec"].get("scaleTargetRef", {}).get("name", "")) in SCALED_ON_LOAD:
            if not pods:
                problems.append(f"{where}: no Pods metric: adapters and the agent scale on in-flight work")
            if not any(m.get("type") == "Resource" and m["resource"].get("name") == "cpu" for m in metrics):
                problems.append(f"{where}: no cpu Resource metric beside the in-flight one (the fallback)")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["rules"]:
        print("usage: python -m services.deploy.monitoring rules", file=sys.stderr)
        return 2
    sys.stdout.write(rules_file_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

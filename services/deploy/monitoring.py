"""llmmesh's alerts and dashboard as files: deploy/k8s/monitoring is their one source.

    python -m services.deploy.monitoring rules > llmmesh-rules.yaml

prints the PrometheusRule's spec as a plain Prometheus rules file (for a
Prometheus without the Operator, and for promtool). `alert_signals` and
`dashboard_queries` are what the real-Prometheus test evaluates.
"""

from __future__ import annotations

import json
import re
import sys
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["rules"]:
        print("usage: python -m services.deploy.monitoring rules", file=sys.stderr)
        return 2
    sys.stdout.write(rules_file_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

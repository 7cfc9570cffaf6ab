"""The alert rules, their promtool unit tests, the runbooks they link and the monitoring kustomization."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.deploy import monitoring
from services.deploy.render import render
from tests.deploy import tools
from tests.deploy.tools import require

REPO = Path(__file__).resolve().parents[2]
UNIT_TESTS = sorted((Path(__file__).parent / "alerts").glob("*.test.yaml"))
OPERATIONS = REPO / "docs" / "operations.md"


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The plain rules file, extracted from the PrometheusRule, beside copies of the unit tests."""
    (tmp_path / "llmmesh-rules.yaml").write_text(monitoring.rules_file_text())
    for test in UNIT_TESTS:
        shutil.copy(test, tmp_path / test.name)
    return tmp_path


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


class TestRules:
    def test_promtool_accepts_the_rules(self, rules_dir: Path) -> None:
        """`promtool check rules` passes on the rules extracted from the PrometheusRule."""
        done = _promtool("check", "rules", "llmmesh-rules.yaml", cwd=rules_dir)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(monitoring.alerts())} rules found" in done.stdout

    def test_promtool_unit_tests_pass(self, rules_dir: Path) -> None:
        """Every alert fires on its input series, and not before its `for` or on the look-alikes."""
        done = _promtool("test", "rules", *(t.name for t in UNIT_TESTS), cwd=rules_dir)
        assert done.returncode == 0, done.stdout + done.stderr

    def test_k8s_check_refuses_a_broken_rule(self, tmp_path: Path) -> None:
        """make k8s-check runs promtool on the PrometheusRule: an expression Prometheus cannot parse is a problem."""
        require("promtool")
        assert monitoring.promtool_rule_problems() == []
        broken = tmp_path / "prometheus-rules.yaml"
        broken.write_text(monitoring.RULES.read_text().replace("> 0.05", "> > 0.05", 1))
        problems = monitoring.promtool_rule_problems(broken)
        assert problems
        assert all("promtool check rules" in p for p in problems)

    def test_unit_tests_fail_when_a_threshold_moves(self, rules_dir: Path) -> None:
        """The unit tests can fail: the error ratio's threshold raised tenfold, its firing case fails."""
        rules = rules_dir / "llmmesh-rules.yaml"
        rules.write_text(rules.read_text().replace("> 0.05", "> 0.5"))
        done = _promtool("test", "rules", "requests.test.yaml", cwd=rules_dir)
        assert done.returncode != 0
        assert "LlmmeshModelErrorRatioHigh" in done.stdout + done.stderr

    def test_every_alert_has_a_firing_and_a_quiet_case(self) -> None:
        """Each alert appears in the unit tests both with expected alerts and with none."""
        cases: dict[str, set[bool]] = {}
        for path in UNIT_TESTS:
            for test in yaml.safe_load(path.read_text())["tests"]:
                for case in test.get("alert_rule_test", []):
                    cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
        for rule in monitoring.alerts():
            assert cases.get(rule["alert"]) == {True, False}, f"{rule['alert']}: needs a firing and a quiet case"

    def test_every_alert_links_its_runbook(self) -> None:
        """Each runbook_url points at a heading of docs/operations.md; each alert has a severity and a summary."""
        anchors = {_anchor(line.lstrip("#")) for line in OPERATIONS.read_text().splitlines() if line.startswith("#")}
        for rule in monitoring.alerts():
            url = rule["annotations"]["runbook_url"]
            assert url == f"docs/operations.md#{rule['alert'].lower()}", url
            assert url.split("#")[1] in anchors, f"{rule['alert']}: no section {url} in docs/operations.md"
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["annotations"]["summary"]

    def test_every_alert_compares_a_signal_with_a_threshold(self) -> None:
        """The real-Prometheus test evaluates each expr without its threshold: every expr must end in one."""
        signals = monitoring.alert_signals()
        assert set(signals) == {rule["alert"] for rule in monitoring.alerts()}
        assert signals["LlmmeshQuotaStoreDown"] == "llmmesh_router_quota_store_up"

    def test_the_rules_command_prints_the_spec(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`python -m services.deploy.monitoring rules` prints exactly the PrometheusRule's spec."""
        assert monitoring.main(["rules"]) == 0
        assert yaml.safe_load(capsys.readouterr().out) == monitoring.rules_spec()
        assert monitoring.main([]) == 2


class TestKustomization:
    def test_renders_the_rule_and_the_dashboard_configmap(self) -> None:
        """kubectl kustomize deploy/k8s/monitoring: the PrometheusRule, PodMonitors and a grafana_dashboard ConfigMap."""
        objects = {obj["kind"]: obj for obj in render(monitoring.MONITORING)}
        assert set(objects) == {"PrometheusRule", "ConfigMap", "PodMonitor"}
        assert objects["PrometheusRule"]["spec"] == monitoring.rules_spec()
        config_map = objects["ConfigMap"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "llmmesh"
        assert config_map["data"]["llmmesh.json"] == monitoring.DASHBOARD.read_text()


class TestDashboard:
    def test_every_query_uses_the_datasource_variable_and_known_variables(self) -> None:
        """Panels read ${datasource}; queries use only the dashboard's variables and Grafana's own."""
        board = monitoring.dashboard()
        declared = {var["name"] for var in board["templating"]["list"]} | {"__rate_interval", "__range"}
        for name, expr in monitoring.dashboard_queries().items():
            used = set(re.findall(r"\$\{?(\w+)", expr))
            assert used <= declared, f"{name}: undeclared variables {used - declared}"
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]

    def test_panels_cover_the_operators_questions(self) -> None:
        """Traffic, errors, latency and TTFT, tokens and cost per tenant, fallbacks, hedges, breakers, health."""
        exprs = " ".join(monitoring.dashboard_queries().values())
        for metric in (
            "llmmesh_router_requests_total",
            "gen_ai_server_request_duration_seconds_bucket",
            "gen_ai_server_time_to_first_token_seconds_bucket",
            "llmmesh_router_tokens_total",
            "llmmesh_router_estimated_cost_usd_total",
            "llmmesh_router_fallbacks_total",
            "llmmesh_router_hedges_total",
            "llmmesh_router_breaker_state",
            "llmmesh_router_in_flight",
            "llmmesh_adapter_in_flight_limit",
            "llmmesh_router_quota_store_up",
            "llmmesh_router_discovery_fresh",
        ):
            assert metric in exprs, metric
        assert "llmmesh_tenant" in exprs


class TestMissingBinaries:
    def test_skipped_outside_ci(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without promtool and without CI, the test skips naming the package to install."""
        monkeypatch.setattr(tools.prometheus_server, "binary", lambda _name: None)
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="apt-get install prometheus"):
            tools.require("promtool")

    def test_failed_in_ci(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """In CI a missing binary fails: a skipped monitoring suite must not pass unnoticed."""
        monkeypatch.setattr(tools.prometheus_server, "binary", lambda _name: None)
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="CI must have it"):
            tools.require("prometheus")

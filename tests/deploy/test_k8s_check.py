"""`make k8s-check`: the real manifests pass; broken copies fail naming the problem."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from services.deploy.code_env import CodeEnv, Variable, derive
from services.deploy.dockerfile import dockerfile_problems
from services.deploy.k8s_check import REPO, check_tree

K8S = REPO / "deploy" / "k8s"
WORKLOADS = ("router", "agent", "provider:mock", "provider:openai", "provider:anthropic", "provider:google")
# The builds a mutation test checks: those its edit reaches and its assertions name, in or out (`check_tree`'s
# `only`). Each kustomize render costs a second of CPU, so checking all of them in every test was most of this file.
BASE = ("base",)
PROD = ("overlays/prod",)
DEV_PROD = ("overlays/dev", "overlays/prod")
BASE_DEV = ("base", "overlays/dev")
MONITORING = ("overlays/prod", "monitoring")


@pytest.fixture(scope="module")
def code() -> Mapping[str, CodeEnv]:
    """What each workload's code reads, derived once per module (a subprocess each)."""
    return derive(WORKLOADS)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of deploy/k8s to break."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def problems_of(tree: Path, code: Mapping[str, CodeEnv], only: tuple[str, ...] | None = None) -> str:
    """The problems `check_tree` finds in the broken copy: in every build, or in `only` those."""
    report = check_tree(tree, REPO, code, only)
    assert not report.ok, "the broken copy passed the check"
    assert report.builds == [b for b in (only or report.builds) if b != "monitoring"]
    return "\n".join(report.problems)


class TestRealManifests:
    def test_every_build_is_rendered_and_checked(self, code: Mapping[str, CodeEnv]) -> None:
        """The base and both overlays render, validate and keep every invariant."""
        report = check_tree(K8S, REPO, code)
        assert report.problems == []
        assert report.builds == ["base", "overlays/dev", "overlays/prod"]
        assert report.objects > 100

    def test_broken_copy_fails_the_command(self, tree: Path) -> None:
        """The command behind `make k8s-check` exits 1 naming the problem (its exit 0 is make test's first step)."""
        edit(tree / "base/router/deployment.yaml", "          readinessProbe:\n", "          readinessProbeX:\n")
        done = subprocess.run(
            [sys.executable, "-m", "services.deploy.k8s_check", "--root", str(tree)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 1
        assert "FAIL: [base] Deployment/llmmesh-router container llmmesh: no readinessProbe" in done.stdout


class TestProbesAndPods:
    def test_missing_probe(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A container without a liveness probe is named, in every build that has it."""
        edit(
            tree / "base/providers/adapter/deployment.yaml", "          livenessProbe:\n", "          livenessProbeX:\n"
        )
        found = problems_of(tree, code)
        for build in ("base", "overlays/dev", "overlays/prod"):
            assert f"[{build}] Deployment/llmmesh-provider-openai container llmmesh: no livenessProbe" in found

    def test_probe_must_be_grpc(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """An llmmesh probe that is not a native grpc probe is refused."""
        edit(
            tree / "base/router/deployment.yaml",
            "          readinessProbe:\n            grpc: {port: 50051}",
            "          readinessProbe:\n            tcpSocket: {port: 50051}",
        )
        assert "llmmesh-router container llmmesh: readinessProbe must be a native grpc probe" in problems_of(
            tree, code, BASE
        )

    def test_probe_port_must_be_the_grpc_port(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A grpc probe on another port than the container's grpc port is named."""
        edit(
            tree / "base/agent/deployment.yaml",
            "          livenessProbe:\n            grpc: {port: 50051}",
            "          livenessProbe:\n            grpc: {port: 50052}",
        )
        assert "livenessProbe.grpc.port 50052 is not the grpc container port [50051]" in problems_of(tree, code, BASE)

    def test_security_context(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A writable root filesystem and a kept capability set are refused."""
        path = tree / "base/router/deployment.yaml"
        edit(path, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
        edit(path, 'capabilities: {drop: ["ALL"]}', 'capabilities: {drop: ["NET_RAW"]}')
        found = problems_of(tree, code, BASE)
        assert "llmmesh-router container llmmesh: securityContext.readOnlyRootFilesystem must be true" in found
        assert "llmmesh-router container llmmesh: securityContext.capabilities.drop must include ALL" in found

    def test_resource_limits(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A container without a memory limit is named."""
        edit(tree / "base/router/deployment.yaml", 'limits: {cpu: "1", memory: 512Mi}', 'limits: {cpu: "1"}')
        assert "[base] Deployment/llmmesh-router container llmmesh: resources.limits.memory is missing" in problems_of(
            tree, code, BASE
        )

    def test_grace_period_shorter_than_the_drain(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """terminationGracePeriodSeconds below preStop + drain + grace + cleanup is refused, with the sum."""
        edit(
            tree / "base/router/deployment.yaml",
            "terminationGracePeriodSeconds: 135",
            "terminationGracePeriodSeconds: 30",
        )
        assert (
            "terminationGracePeriodSeconds 30 < preStop 5 + LLMMESH_DRAIN_SECONDS 5 + LLMMESH_GRACE_SECONDS 120"
            " + cleanup 5 = 135" in problems_of(tree, code, BASE)
        )

    def test_agent_grace_shorter_than_its_deadline(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """An agent whose grace is below its 300 s default deadline is refused, even with a pod grace that fits."""
        edit(
            tree / "base/agent/deployment.yaml",
            'LLMMESH_GRACE_SECONDS, value: "300"',
            'LLMMESH_GRACE_SECONDS, value: "60"',
        )
        assert (
            "[base] Deployment/llmmesh-agent container llmmesh: LLMMESH_GRACE_SECONDS 60 < the agent's"
            " LLMMESH_AGENT_DEFAULT_DEADLINE_SECONDS 300" in problems_of(tree, code, BASE)
        )

    def test_adapter_grace_follows_the_router_deadline(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Raising the router's default deadline past the adapters' grace names every adapter."""
        edit(
            tree / "base/router/deployment.yaml",
            'LLMMESH_DEFAULT_DEADLINE_SECONDS, value: "120"',
            'LLMMESH_DEFAULT_DEADLINE_SECONDS, value: "600"',
        )
        found = problems_of(tree, code, PROD)
        assert (
            "[overlays/prod] Deployment/llmmesh-provider-openai container llmmesh: LLMMESH_GRACE_SECONDS 120"
            " < the router's LLMMESH_DEFAULT_DEADLINE_SECONDS 600" in found
        )
        assert "Deployment/llmmesh-router container llmmesh: LLMMESH_GRACE_SECONDS 120 < the router's" in found

    def test_unknown_field_fails_the_schema(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A misspelt field is caught by the offline Kubernetes schema, strictly."""
        edit(tree / "base/router/deployment.yaml", "  revisionHistoryLimit: 5", "  revisionHistoryLimits: 5")
        assert "Deployment/llmmesh-router: schema (Kubernetes 1.30.0) at spec:" in problems_of(tree, code, BASE)


class TestSelectorsAndPorts:
    def test_deployment_selector_must_match_its_pods(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A Deployment whose selector is not among its pod labels is named."""
        edit(
            tree / "base/router/deployment.yaml",
            "  selector:\n    matchLabels:\n      app.kubernetes.io/name: llmmesh-router",
            "  selector:\n    matchLabels:\n      app.kubernetes.io/name: llmmesh-routr",
        )
        assert "Deployment/llmmesh-router: spec.selector" in problems_of(tree, code, BASE)

    def test_service_selector_must_match_a_deployment(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A Service whose selector matches no pods is named."""
        edit(
            tree / "base/agent/service.yaml",
            "app.kubernetes.io/name: llmmesh-agent\n  ports",
            "app.kubernetes.io/name: agent\n  ports",
        )
        assert (
            "Service/llmmesh-agent: selector {'app.kubernetes.io/name': 'agent'} matches no Deployment"
            in problems_of(tree, code, BASE)
        )

    def test_target_port_must_exist(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A Service targetPort that no container port has is named."""
        edit(tree / "base/router/service.yaml", "targetPort: grpc", "targetPort: grpc-api")
        assert "Service/llmmesh-router: port grpc targetPort 'grpc-api' is no container port" in problems_of(
            tree, code, BASE
        )

    def test_one_hpa_per_adapter(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """An HPA aimed at a missing Deployment is named, and the adapter left without one too."""
        edit(
            tree / "base/providers/google/kustomization.yaml",
            "  - path: deployment-patch.yaml",
            "  - path: deployment-patch.yaml\n  - path: hpa-patch.yaml",
        )
        (tree / "base/providers/google/hpa-patch.yaml").write_text(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: llmmesh-provider}\n"
            "spec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llmmesh-provider-gemini}\n"
        )
        found = problems_of(tree, code, BASE)
        assert (
            "HorizontalPodAutoscaler/llmmesh-provider-google: scaleTargetRef Deployment/llmmesh-provider-gemini names no Deployment"
            in found
        )
        assert "Deployment/llmmesh-provider-google: needs exactly one HorizontalPodAutoscaler, has []" in found


class TestReplicasAndHpas:
    def test_agent_needs_an_hpa(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Dropping the agent's HPA is named in every build."""
        edit(tree / "base/agent/kustomization.yaml", "  - hpa.yaml\n", "")
        edit(
            tree / "overlays/prod/patch-scale.yaml",
            "metadata: {name: llmmesh-agent}\nspec: {minReplicas: 2",
            "metadata: {name: llmmesh-agentX}\nspec: {minReplicas: 2",
        )
        found = problems_of(tree, code, BASE)
        assert "[base] Deployment/llmmesh-agent: needs exactly one HorizontalPodAutoscaler, has []" in found

    def test_replicas_beside_an_hpa_in_prod(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """spec.replicas on a Deployment an HPA owns fails the prod overlay only (dev pins counts on purpose)."""
        edit(
            tree / "overlays/prod/patch-scale.yaml",
            "metadata: {name: llmmesh-router}\nspec:\n",
            "metadata: {name: llmmesh-router}\nspec:\n  replicas: 3\n",
        )
        found = problems_of(tree, code, DEV_PROD)
        assert "[overlays/prod] Deployment/llmmesh-router: spec.replicas 3 beside its HorizontalPodAutoscaler" in found
        assert "[overlays/dev] Deployment/llmmesh-router: spec.replicas" not in found


class TestScraping:
    def test_podmonitor_port_must_exist(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A PodMonitor scraping a port its pods do not declare is named, per Deployment."""
        text = (tree / "monitoring/podmonitors.yaml").read_text()
        (tree / "monitoring/podmonitors.yaml").write_text(text.replace("{port: metrics,", "{port: metric,"))
        found = problems_of(tree, code, MONITORING)
        assert (
            "[monitoring] PodMonitor/llmmesh-agent → Deployment/llmmesh-agent: port 'metric' is no container port"
            in found
        )
        assert "PodMonitor/llmmesh-provider → Deployment/llmmesh-provider-google: port 'metric'" in found

    def test_podmonitor_job_must_match_the_alerts(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Without jobLabel the Operator names the job namespace/monitor, which the alerts do not select."""
        edit(tree / "monitoring/podmonitors.yaml", "  jobLabel: app.kubernetes.io/name\n", "")
        found = problems_of(tree, code, MONITORING)
        assert (
            "[monitoring] PodMonitor/llmmesh-router → Deployment/llmmesh-router: job would be 'llmmesh/llmmesh-router'"
            in found
        )

    def test_every_component_is_scraped(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A provider PodMonitor selecting no pods leaves every prod adapter unscraped."""
        edit(
            tree / "monitoring/podmonitors.yaml",
            "app.kubernetes.io/component: provider,",
            "app.kubernetes.io/component: adapter,",
        )
        found = problems_of(tree, code, MONITORING)
        assert "[monitoring] PodMonitor/llmmesh-provider: selector" in found
        assert (
            "[monitoring] Deployment/llmmesh-provider-openai: no PodMonitor in deploy/k8s/monitoring scrapes it"
            in found
        )

    def test_metrics_port_declared(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """An llmmesh container without the `metrics` port is named."""
        edit(
            tree / "base/agent/deployment.yaml",
            "{name: metrics, containerPort: 9464",
            "{name: prom, containerPort: 9464",
        )
        found = problems_of(tree, code, BASE)
        assert "[base] Deployment/llmmesh-agent: no container port named 'metrics'" in found

    def test_network_policy_admits_the_scraper_only(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Opening the metrics rule to every namespace, or dropping it, is named."""
        policies = tree / "base/network-policies.yaml"
        text = policies.read_text()
        label = '        - namespaceSelector:\n            matchLabels: {llmmesh.dev/monitoring: "true"}\n'
        assert text.count(label) == 3
        policies.write_text(text.replace(label, "        - namespaceSelector: {}\n", 1))
        found = problems_of(tree, code, BASE)
        assert "[base] Deployment/llmmesh-router: NetworkPolicies let any namespace reach the metrics port" in found
        policies.write_text(
            text.replace("        - {port: metrics, protocol: TCP}\n", "        - {port: grpc, protocol: TCP}\n", 1)
        )
        found = problems_of(tree, code, BASE)
        assert "[base] Deployment/llmmesh-router: NetworkPolicies block Prometheus (namespace labelled" in found
        assert (
            "[base] Deployment/llmmesh-router: NetworkPolicies let the monitoring namespace reach the grpc port"
            in found
        )


class TestScalingOnLoad:
    def test_real_hpas_scale_adapters_and_agent_on_in_flight(self) -> None:
        """The prod adapter and agent HPAs name a Pods metric and CPU; prometheus-adapter serves the metric."""
        from services.deploy.monitoring import served_custom_metrics
        from services.deploy.render import render

        hpas = {
            o["metadata"]["name"]: o for o in render(K8S / "overlays/prod") if o["kind"] == "HorizontalPodAutoscaler"
        }
        for name, metric in (
            ("llmmesh-provider-openai", "llmmesh_adapter_in_flight"),
            ("llmmesh-agent", "llmmesh_agent_in_flight"),
        ):
            metrics = hpas[name]["spec"]["metrics"]
            assert [m["type"] for m in metrics] == ["Pods", "Resource"]
            assert metrics[0]["pods"]["metric"]["name"] == metric
            assert metrics[1]["resource"]["name"] == "cpu"
        assert served_custom_metrics() >= {"llmmesh_adapter_in_flight", "llmmesh_agent_in_flight"}

    def test_metric_without_an_adapter_rule(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """An HPA metric prometheus-adapter does not serve (or llmmesh does not export) is named."""
        edit(tree / "base/agent/hpa.yaml", "name: llmmesh_agent_in_flight", "name: llmmesh_agent_runs_active")
        found = problems_of(tree, code, BASE)
        assert (
            "[base] HorizontalPodAutoscaler/llmmesh-agent: Pods metric 'llmmesh_agent_runs_active' has no rule in"
            " prometheus-adapter-values.yaml" in found
        )
        assert "Pods metric 'llmmesh_agent_runs_active' is no metric llmmesh exports" in found

    def test_adapter_hpa_on_cpu_only(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Back to CPU alone, every adapter HPA is named."""
        hpa = tree / "base/providers/adapter/hpa.yaml"
        text = hpa.read_text()
        start, end = text.index("    - type: Pods\n"), text.index("    - type: Resource\n")
        hpa.write_text(text[:start] + text[end:])
        found = problems_of(tree, code, PROD)
        assert "[overlays/prod] HorizontalPodAutoscaler/llmmesh-provider-anthropic: no Pods metric" in found


class TestImageDigests:
    def test_prod_image_by_tag_is_refused(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A prod overlay pulling by tag names every Deployment; dev (by tag on purpose) is not held to it."""
        edit(
            tree / "overlays/prod/kustomization.yaml",
            "    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
            '    newTag: "0.1.0"\n',
        )
        found = problems_of(tree, code, DEV_PROD)
        assert (
            "[overlays/prod] Deployment/llmmesh-router container llmmesh: image 'registry.example.com/llmmesh:0.1.0'"
            " is not pinned by digest" in found
        )
        assert "[overlays/dev] Deployment/llmmesh-router container llmmesh: image" not in found


class TestNetworkPolicies:
    def test_only_the_router_reaches_adapters(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Opening the adapters to the agent is caught by evaluating the policies."""
        edit(
            tree / "base/network-policies.yaml",
            "        - podSelector:\n            matchLabels: {app.kubernetes.io/name: llmmesh-router}\n        # Consul",
            "        - podSelector:\n            matchLabels: {app.kubernetes.io/component: agent}\n"
            "        - podSelector:\n            matchLabels: {app.kubernetes.io/name: llmmesh-router}\n        # Consul",
        )
        assert (
            "Deployment/llmmesh-provider-mock: NetworkPolicies let Deployment/llmmesh-agent reach it; only ['router'] may"
            in problems_of(tree, code, BASE)
        )

    def test_callers_must_reach_the_router(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A router policy that forgets the caller label blocks callers, and says so."""
        edit(
            tree / "base/network-policies.yaml",
            'matchLabels: {llmmesh.dev/caller: "true"}',
            'matchLabels: {llmmesh.dev/caller: "yes"}',
        )
        assert "Deployment/llmmesh-router: NetworkPolicies block a caller pod (llmmesh.dev/caller=true)" in problems_of(
            tree, code, BASE
        )

    def test_without_default_deny_strangers_get_in(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Dropping the agent's policy leaves it open to any pod, which is named."""
        path = tree / "base/network-policies.yaml"
        text = path.read_text()
        start = text.index(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: llmmesh-agent-ingress"
        )
        end = text.index("---", start + 3)
        path.write_text(text[:start] + text[end:])
        edit(path, "  podSelector: {}\n", "  podSelector:\n    matchLabels: {app.kubernetes.io/component: provider}\n")
        assert (
            "Deployment/llmmesh-agent: NetworkPolicies let an unlabelled pod in another namespace reach it"
            in problems_of(tree, code, BASE)
        )


class TestEnvironment:
    def test_missing_variable_is_listed_with_its_source(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A setting the code reads but the manifest lacks is named per Deployment, with the field it comes from."""
        edit(
            tree / "base/providers/adapter/deployment.yaml",
            '            - {name: LLMMESH_MAX_IN_FLIGHT, value: "256"}\n',
            "",
        )
        found = problems_of(tree, code, BASE)
        for name in ("mock", "openai", "anthropic", "google"):
            assert (
                f"[base] Deployment/llmmesh-provider-{name} container llmmesh: the code reads these, add them to env:"
                " LLMMESH_MAX_IN_FLIGHT (ProviderSettings.max_in_flight)" in found
            )

    def test_misspelt_variable_is_named_both_ways(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A typo shows up as the variable missing and as one no code reads."""
        edit(tree / "base/router/deployment.yaml", "name: LLMMESH_GRACE_SECONDS,", "name: LLMMESH_GRACE_SECOND,")
        found = problems_of(tree, code, BASE)
        assert "llmmesh-router container llmmesh: the code reads these, add them to env: LLMMESH_GRACE_SECONDS" in found
        assert (
            "llmmesh-router container llmmesh: no code of router reads these, remove or fix them: LLMMESH_GRACE_SECOND"
            in found
        )

    def test_a_setting_added_to_the_code_is_required(self, code: Mapping[str, CodeEnv]) -> None:
        """A new settings field (as another change would add) fails the check until the manifests set it."""
        router = code["router"]
        grown = dataclasses.replace(
            router, variables=(*router.variables, Variable(("LLMMESH_HEDGE_BUDGET",), "RouterSettings.hedge_budget"))
        )
        report = check_tree(K8S, REPO, {**code, "router": grown}, BASE)
        assert any(
            "Deployment/llmmesh-router container llmmesh: the code reads these, add them to env:"
            " LLMMESH_HEDGE_BUDGET (RouterSettings.hedge_budget)" in p
            for p in report.problems
        )

    def test_value_the_settings_reject(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A value the process would refuse at start is refused here, naming the variable."""
        edit(
            tree / "base/router/deployment.yaml",
            "{name: LLMMESH_LOG_LEVEL, value: info}",
            "{name: LLMMESH_LOG_LEVEL, value: verbose}",
        )
        assert "LLMMESH_LOG_LEVEL='verbose' is rejected by" in problems_of(tree, code, BASE)

    def test_service_name_must_match_the_deployment(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """OTEL_SERVICE_NAME differing from the Deployment name breaks the one-name rule, and is named."""
        edit(
            tree / "base/providers/anthropic/deployment-patch.yaml",
            "value: llmmesh-provider-anthropic}",
            "value: anthropic}",
        )
        assert (
            "OTEL_SERVICE_NAME must equal the Deployment name 'llmmesh-provider-anthropic' (got 'anthropic')"
            in problems_of(tree, code, BASE)
        )

    def test_routing_copy_must_equal_the_default(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """The ConfigMap's routing file drifting from the embedded default is named with the fix."""
        with (tree / "base/config/routing.yaml").open("a") as handle:
            handle.write("# drift\n")
        assert "must equal services/router/defaults/routing.yaml" in problems_of(tree, code, BASE)

    def test_committed_secret_values(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A Secret with values in the manifests is refused."""
        (tree / "base/keys.yaml").write_text(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: llmmesh-provider-openai}\nstringData: {api-key: sk-test}\n"
        )
        edit(tree / "base/kustomization.yaml", "  - namespace.yaml\n", "  - namespace.yaml\n  - keys.yaml\n")
        assert "Secret/llmmesh-provider-openai: Secret values must not be committed" in problems_of(tree, code, BASE)


class TestCodeEnv:
    def test_each_workload_sees_only_its_own_settings(self, code: Mapping[str, CodeEnv]) -> None:
        """The router's variables come from RouterSettings and not the mock's, and vice versa."""
        router, mock = code["router"].names(), code["provider:mock"].names()
        assert {"LLMMESH_ROUTING_FILE", "LLMMESH_GRACE_SECONDS"} <= router
        assert "LLMMESH_MOCK_CONFIG" not in router
        assert {"LLMMESH_MOCK_CONFIG", "LLMMESH_MAX_IN_FLIGHT", "LLMMESH_GRACE_SECONDS"} <= mock
        assert "LLMMESH_ROUTING_FILE" not in mock
        assert code["provider:mock"].built


class TestDockerfile:
    @pytest.fixture
    def repo(self, tmp_path: Path) -> Path:
        """The files the Dockerfile copies, in a scratch repository."""
        for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "requirements.lock", "README.md"):
            shutil.copy(REPO / name, tmp_path / name)
        (tmp_path / "gen").mkdir()
        (tmp_path / "services").mkdir()
        return tmp_path

    def test_real_dockerfile_passes(self) -> None:
        """The committed Dockerfile copies what exists, runs the llmmesh command and passes hadolint."""
        assert dockerfile_problems(REPO) == []

    def test_copy_of_a_missing_path(self, repo: Path) -> None:
        """COPY of a path that does not exist is named."""
        edit(repo / "Dockerfile", "COPY gen ./gen", "COPY generated ./gen")
        assert "Dockerfile: COPY generated: no such file in the repository" in dockerfile_problems(repo)

    def test_copy_of_an_ignored_path(self, repo: Path) -> None:
        """COPY of a path .dockerignore leaves out of the context is named."""
        edit(repo / ".dockerignore", "!services/\n", "")
        assert "Dockerfile: COPY services: excluded by .dockerignore" in dockerfile_problems(repo)

    def test_entrypoint_must_be_a_project_command(self, repo: Path) -> None:
        """An ENTRYPOINT that is not a [project.scripts] command is named."""
        edit(repo / "Dockerfile", 'ENTRYPOINT ["llmmesh"]', 'ENTRYPOINT ["llm-mesh"]')
        assert any("ENTRYPOINT 'llm-mesh' is not a [project.scripts] command" in p for p in dockerfile_problems(repo))


class TestSecretsListed:
    def test_a_secret_the_readme_does_not_list_is_named(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """A manifest referencing a Secret missing from README's table and from create-secrets.sh fails, naming it."""
        edit(
            tree / "base/router/deployment.yaml",
            '            - {name: LLMMESH_ROUTER_REPLICAS, value: "10"}\n',
            '            - {name: LLMMESH_ROUTER_REPLICAS, value: "10"}\n'
            "            - name: LLMMESH_QUOTA_REDIS_URL\n"
            "              valueFrom:\n"
            "                secretKeyRef: {name: llmmesh-redis-url, key: url, optional: false}\n",
        )
        edit(tree / "base/router/deployment.yaml", '            - {name: LLMMESH_QUOTA_REDIS_URL, value: ""}\n', "")
        found = problems_of(tree, code, BASE_DEV)
        for build in ("base", "overlays/dev"):
            assert (
                f"[{build}] Deployment/llmmesh-router: references Secret 'llmmesh-redis-url', which README.md's"
                " Secrets table does not list" in found
            )
            assert (
                f"[{build}] Deployment/llmmesh-router: references Secret 'llmmesh-redis-url', which"
                " deploy/k8s/create-secrets.sh does not create" in found
            )

    def test_the_script_creates_what_each_overlay_references(self, tmp_path: Path) -> None:
        """create-secrets.sh prod (and dev) creates exactly the Secrets the rendered overlay references."""
        from services.deploy.production import secret_references
        from services.deploy.render import render

        for overlay, inputs in (("prod", _PROD_INPUTS), ("dev", {})):
            created = _run_create_secrets(tmp_path / overlay, overlay, inputs)
            referenced = set(secret_references(render(K8S / "overlays" / overlay)))
            if overlay == "dev":  # the real adapters start at 0 replicas: their keys come when set
                referenced -= {"llmmesh-provider-openai", "llmmesh-provider-anthropic", "llmmesh-provider-google"}
            assert created == referenced


_PROD_INPUTS = {
    "OPENAI_API_KEY": "sk-test",
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "GEMINI_API_KEY": "g-test",
    "LLMMESH_TENANTS_FILE": "/dev/null",
    "LLMMESH_TLS_DIR": "/tls",
    "CONSUL_CA_FILE": "/dev/null",
    **{
        f"LLMMESH_CONSUL_TOKEN_{name}": "t"
        for name in ("ROUTER", "AGENT", "PROVIDER_OPENAI", "PROVIDER_ANTHROPIC", "PROVIDER_GOOGLE")
    },
}

# Stands in for kubectl (there is no cluster here): logs `create secret` calls, has no Secret yet.
_FAKE_KUBECTL = """#!/usr/bin/env bash
case "$*" in
  *"create secret"*) echo "$*" >> "$KUBECTL_LOG"; echo "kind: Secret" ;;
  *"get secret"*) exit 1 ;;
  *apply*) cat > /dev/null ;;
esac
"""


def _run_create_secrets(workdir: Path, overlay: str, inputs: Mapping[str, str]) -> set[str]:
    import os
    import re

    bin_dir = workdir / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "kubectl").write_text(_FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    log = workdir / "kubectl.log"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECTL_LOG": str(log), **inputs}
    done = subprocess.run(
        ["bash", str(K8S / "create-secrets.sh"), overlay], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # `-n llmmesh create secret <type> [flags] <name> --dry-run=client ...`: the name precedes --dry-run.
    return {re.search(r" (\S+) --dry-run=client", line).group(1) for line in log.read_text().splitlines()}  # type: ignore[union-attr]


class TestConsulNodeLocal:
    def test_consul_through_a_server_or_an_undefined_variable_is_refused(
        self, tree: Path, code: Mapping[str, CodeEnv]
    ) -> None:
        """dev: CONSUL_HTTP_ADDR at a server Service; prod: $(HOST_IP) defined after its use. Both named."""
        edit(
            tree / "overlays/dev/patch-consul.yaml",
            '"http://$(HOST_IP):8500"',
            '"http://consul-server.llmmesh-consul.svc:8500"',
        )
        path = tree / "overlays/prod/patch-consul.yaml"
        host_ip = "            - name: HOST_IP\n              valueFrom:\n                fieldRef: {fieldPath: status.hostIP}\n"
        edit(path, host_ip, "")
        with path.open("a") as handle:
            handle.write(host_ip)  # now after CONSUL_HTTP_ADDR, which uses it
        found = problems_of(tree, code, DEV_PROD)
        for name in ("llmmesh-router", "llmmesh-agent", "llmmesh-provider-mock"):
            assert (
                f"[overlays/dev] Deployment/{name} container llmmesh: CONSUL_HTTP_ADDR="
                "'http://consul-server.llmmesh-consul.svc:8500' is not the node-local Consul agent" in found
            )
        assert (
            "[overlays/prod] Deployment/llmmesh-router container llmmesh: CONSUL_HTTP_ADDR uses $(HOST_IP),"
            " which no env entry before it defines" in found
        )


class TestProductionPromises:
    def test_auth_off_and_plaintext_adapters_are_refused(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """Prod without caller keys, without client-certificate checks or without TLS files fails, saying which."""
        edit(
            tree / "overlays/prod/patch-router.yaml",
            "{name: LLMMESH_AUTH_FILE, value: /etc/llmmesh-auth/tenants.yaml}",
            '{name: LLMMESH_AUTH_FILE, value: ""}',
        )
        path = tree / "overlays/prod/patch-adapters.yaml"
        edit(path, "{name: LLMMESH_TLS_CLIENT_AUTH, value: require}", "{name: LLMMESH_TLS_CLIENT_AUTH, value: none}")
        edit(
            path,
            "{name: LLMMESH_TLS_CERT_FILE, value: /etc/llmmesh-tls/tls.crt}",
            "{name: LLMMESH_TLS_CERT_FILE, value: /tmp/tls.crt}",
        )
        found = problems_of(tree, code, PROD)
        router, adapter = (
            "[overlays/prod] Deployment/llmmesh-router",
            "[overlays/prod] Deployment/llmmesh-provider-openai",
        )
        assert f"{router} container llmmesh: LLMMESH_AUTH_FILE is empty: production requires caller keys" in found
        assert f"{adapter} container llmmesh: LLMMESH_TLS_CLIENT_AUTH must be require" in found
        assert (
            f"{adapter} container llmmesh: LLMMESH_TLS_CERT_FILE=/tmp/tls.crt is not in a volume mounted from a Secret"
            in found
        )

    def test_the_mock_is_refused_anywhere_in_prod(self, tree: Path, code: Mapping[str, CodeEnv]) -> None:
        """The mock Deployment kept, or a mock model in an auto tier, fails the prod build (and only it)."""
        edit(tree / "overlays/prod/kustomization.yaml", "  - path: delete-mock.yaml\n", "")
        edit(
            tree / "overlays/prod/routing.yaml",
            "cheap: {models: [gpt-4o-mini, gemini-2.5-flash, claude-haiku-4-5]}",
            "cheap: {models: [gpt-4o-mini, gemini-2.5-flash, claude-haiku-4-5, mock-small]}",
        )
        found = problems_of(tree, code, DEV_PROD)
        assert "[overlays/prod] Deployment/llmmesh-provider-mock: production deploys no mock" in found
        assert "routing.yaml line" in found
        assert (
            "'cheap: {models: [gpt-4o-mini, gemini-2.5-flash, claude-haiku-4-5, mock-small]}' names the mock" in found
        )
        assert "[overlays/dev] Deployment/llmmesh-provider-mock: production" not in found


class TestConfigMapReferences:
    def test_a_generator_without_namespace_leaves_the_pod_without_its_configmap(
        self, tree: Path, code: Mapping[str, CodeEnv]
    ) -> None:
        """The prod agent's profiles ConfigMap outside the namespace: its volume keeps a name nothing makes."""
        edit(tree / "overlays/prod/kustomization.yaml", "    namespace: llmmesh\n", "")
        problems = problems_of(tree, code, PROD)
        assert (
            "[overlays/prod] Deployment/llmmesh-agent: volume profiles mounts ConfigMap 'llmmesh-agent-profiles', "
            "which this build does not make in namespace 'llmmesh'" in problems
        )

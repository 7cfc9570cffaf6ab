"""llmmesh's own rules for rendered Kubernetes objects (beyond the JSON schemas).

Every function takes the rendered objects of one kustomize build and returns
problems as readable strings that name the object, the field and the fix.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

Obj = dict[str, Any]

PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
NAME = "app.kubernetes.io/name"
CALLER_LABEL = "llmmesh.dev/caller"
GRPC_PORT_NAME = "grpc"
METRICS_PORT_NAME = "metrics"
# The namespace label that lets a Prometheus scrape the metrics port (network-policies.yaml).
MONITORING_NAMESPACE_LABEL = "llmmesh.dev/monitoring"
# after_stop hooks (close channels and SDK clients, flush telemetry) get this
# much of terminationGracePeriodSeconds on top of preStop + drain + grace.
CLEANUP_MARGIN_SECONDS = 5
# $(NAME) in an env value: Kubernetes substitutes variables defined earlier in the same container.
DEPENDENT_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def ref(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def deployments(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o.get("kind") == "Deployment"]


def is_llmmesh(deployment: Obj) -> bool:
    """Our own services (not the dev overlay's Consul, collector or Jaeger)."""
    return pod_labels(deployment).get(PART_OF) == "llmmesh"


def pod_labels(deployment: Obj) -> dict[str, str]:
    return deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}


def containers(deployment: Obj) -> list[Obj]:
    spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def literal_env(container: Obj) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; an empty selector matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and key in labels and labels[key] in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _matching(objects: list[Obj], selector: Mapping[str, Any] | None, namespace: str | None) -> list[Obj]:
    return [
        d
        for d in deployments(objects)
        if d["metadata"].get("namespace") == namespace and selector_matches(selector, pod_labels(d))
    ]


def check_pods(objects: list[Obj]) -> Iterator[str]:
    """Selectors, resources, probes and securityContext of every Deployment."""
    for deployment in deployments(objects):
        where = ref(deployment)
        selector = deployment.get("spec", {}).get("selector")
        if not selector_matches(selector, pod_labels(deployment)):
            yield f"{where}: spec.selector {selector} does not match its pod labels {pod_labels(deployment)}"
        pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
        pod_security = pod.get("securityContext") or {}
        for container in containers(deployment):
            at = f"{where} container {container.get('name')}"
            yield from _check_resources(at, container)
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    yield f"{at}: no {probe} (add one; llmmesh services use grpc: {{port: 50051}})"
            yield from _check_security(at, container.get("securityContext") or {}, pod_security)


def _check_resources(at: str, container: Obj) -> Iterator[str]:
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(kind) or {}):
                yield f"{at}: resources.{kind}.{resource} is missing"


def _check_security(at: str, container: Obj, pod: Obj) -> Iterator[str]:
    def effective(key: str) -> Any:
        return container.get(key, pod.get(key))

    if effective("runAsNonRoot") is not True:
        yield f"{at}: securityContext.runAsNonRoot must be true"
    user = effective("runAsUser")
    if not isinstance(user, int) or user == 0:
        yield f"{at}: securityContext.runAsUser must be a numeric non-root UID (got {user!r})"
    if container.get("readOnlyRootFilesystem") is not True:
        yield f"{at}: securityContext.readOnlyRootFilesystem must be true (mount an emptyDir on /tmp)"
    if container.get("allowPrivilegeEscalation") is not False:
        yield f"{at}: securityContext.allowPrivilegeEscalation must be false"
    if "ALL" not in ((container.get("capabilities") or {}).get("drop") or []):
        yield f"{at}: securityContext.capabilities.drop must include ALL"
    if (effective("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        yield f"{at}: securityContext.seccompProfile.type must be RuntimeDefault"


def check_llmmesh_pods(objects: list[Obj]) -> Iterator[str]:
    """gRPC probes, bind address, shutdown arithmetic, spread, naming, one image."""
    accounts = {o["metadata"]["name"] for o in objects if o.get("kind") == "ServiceAccount"}
    images: dict[str, list[str]] = {}
    for deployment in filter(is_llmmesh, deployments(objects)):
        where = ref(deployment)
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        if pod.get("serviceAccountName") not in accounts:
            yield f"{where}: serviceAccountName {pod.get('serviceAccountName')!r} names no ServiceAccount here"
        yield from _check_spread(where, pod, pod_labels(deployment))
        for container in pod.get("containers") or []:
            at = f"{where} container {container.get('name')}"
            images.setdefault(container.get("image", ""), []).append(name)
            env = literal_env(container)
            yield from _check_grpc_probes(at, container, env)
            if env.get("LLMMESH_HOST") not in ("0.0.0.0", "::"):
                yield f"{at}: LLMMESH_HOST must be 0.0.0.0 so probes and peers reach the pod (got {env.get('LLMMESH_HOST')!r})"
            if env.get("OTEL_SERVICE_NAME") != name:
                yield f"{at}: OTEL_SERVICE_NAME must equal the Deployment name {name!r} (got {env.get('OTEL_SERVICE_NAME')!r})"
            yield from _check_shutdown(at, pod, container, env)
    if len(images) > 1:
        yield f"llmmesh Deployments must share one image, found {', '.join(f'{i} ({sorted(n)})' for i, n in images.items())}"


def _check_grpc_probes(at: str, container: Obj, env: Mapping[str, str]) -> Iterator[str]:
    grpc_ports = {p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == GRPC_PORT_NAME}
    if not grpc_ports:
        yield f"{at}: no container port named {GRPC_PORT_NAME!r}"
    if (
        env.get("LLMMESH_PORT") is not None
        and env["LLMMESH_PORT"].isdigit()
        and int(env["LLMMESH_PORT"]) not in grpc_ports
    ):
        yield f"{at}: LLMMESH_PORT={env['LLMMESH_PORT']} is not the container port named grpc {sorted(grpc_ports)}"
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if probe is None:
            continue
        if "grpc" not in probe:
            yield f"{at}: {probe_name} must be a native grpc probe (grpc.health.v1), got {sorted(probe)}"
        elif probe["grpc"].get("port") not in grpc_ports:
            yield f"{at}: {probe_name}.grpc.port {probe['grpc'].get('port')} is not the grpc container port {sorted(grpc_ports)}"


def _check_shutdown(at: str, pod: Obj, container: Obj, env: Mapping[str, str]) -> Iterator[str]:
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    sleep = int((pre_stop.get("sleep") or {}).get("seconds", 0))
    try:
        drain = float(env.get("LLMMESH_DRAIN_SECONDS", "0"))
        grace = float(env.get("LLMMESH_GRACE_SECONDS", "10"))
    except ValueError:
        return  # the settings check names the bad value
    needed = sleep + drain + grace + CLEANUP_MARGIN_SECONDS
    period = pod.get("terminationGracePeriodSeconds", 30)
    if period < needed:
        yield (
            f"{at}: terminationGracePeriodSeconds {period} < preStop {sleep} + LLMMESH_DRAIN_SECONDS {drain:g}"
            f" + LLMMESH_GRACE_SECONDS {grace:g} + cleanup {CLEANUP_MARGIN_SECONDS} = {needed:g}: in-flight calls would be killed"
        )


# The default deadline each workload's calls run under; adapters serve the router's calls.
DEADLINE_VARIABLES = {"router": "LLMMESH_DEFAULT_DEADLINE_SECONDS", "agent": "LLMMESH_AGENT_DEFAULT_DEADLINE_SECONDS"}
DEADLINE_SOURCE = {"router": "router", "agent": "agent", "provider": "router"}


def _default_deadlines(objects: list[Obj]) -> dict[str, float]:
    """Component → its default deadline, read from the rendered env (router and agent)."""
    found: dict[str, float] = {}
    for deployment in filter(is_llmmesh, deployments(objects)):
        component = pod_labels(deployment).get(COMPONENT, "")
        variable = DEADLINE_VARIABLES.get(component)
        for container in containers(deployment):
            value = literal_env(container).get(variable or "")
            with contextlib.suppress(ValueError):
                found[component] = max(found.get(component, 0.0), float(value or "nan"))
    return {k: v for k, v in found.items() if v == v}  # drop NaN (unset)


def check_grace_covers_deadlines(objects: list[Obj]) -> Iterator[str]:
    """LLMMESH_GRACE_SECONDS ≥ the default deadline, so a rollout cuts no call still within it.

    With the shutdown check above (terminationGracePeriodSeconds ≥ preStop + drain + grace +
    cleanup) the pod's grace then covers the deadline plus the drain margin.
    """
    deadlines = _default_deadlines(objects)
    for deployment in filter(is_llmmesh, deployments(objects)):
        source = DEADLINE_SOURCE.get(pod_labels(deployment).get(COMPONENT, ""))
        if source is None or source not in deadlines:
            continue
        deadline = deadlines[source]
        for container in containers(deployment):
            try:
                grace = float(literal_env(container).get("LLMMESH_GRACE_SECONDS", "10"))
            except ValueError:
                continue  # the settings check names the bad value
            if grace < deadline:
                yield (
                    f"{ref(deployment)} container {container.get('name')}: LLMMESH_GRACE_SECONDS {grace:g} < the {source}'s"
                    f" {DEADLINE_VARIABLES[source]} {deadline:g}: a rollout would cut calls still within their deadline"
                    " (raise the grace and terminationGracePeriodSeconds, or cap the deadline)"
                )


def _check_spread(where: str, pod: Obj, labels: Mapping[str, str]) -> Iterator[str]:
    constraints = pod.get("topologySpreadConstraints") or []
    if not constraints:
        yield f"{where}: no topologySpreadConstraints (spread replicas across zones and nodes)"
    for constraint in constraints:
        if not selector_matches(constraint.get("labelSelector"), labels):
            yield f"{where}: topologySpreadConstraints labelSelector {constraint.get('labelSelector')} does not match its own pods"


def check_services(objects: list[Obj]) -> Iterator[str]:
    """Each Service selects a Deployment and its targetPorts exist on those pods."""
    for service in (o for o in objects if o.get("kind") == "Service"):
        where = ref(service)
        selector = service.get("spec", {}).get("selector")
        if not selector:
            continue  # endpoints managed elsewhere
        targets = _matching(objects, {"matchLabels": selector}, service["metadata"].get("namespace"))
        if not targets:
            yield f"{where}: selector {selector} matches no Deployment's pod labels"
            continue
        ports = [p for d in targets for c in containers(d) for p in c.get("ports") or []]
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            key = "name" if isinstance(target, str) else "containerPort"
            if not any(p.get(key) == target for p in ports):
                yield f"{where}: port {port.get('name')} targetPort {target!r} is no container port of {[ref(d) for d in targets]}"
        if is_llmmesh(targets[0]) and not any(
            p.get("name") == GRPC_PORT_NAME for p in service["spec"].get("ports") or []
        ):
            yield f"{where}: an llmmesh Service needs a port named {GRPC_PORT_NAME!r}"


def check_disruption_and_scaling(objects: list[Obj]) -> Iterator[str]:
    """PDBs select one Deployment; one HPA per router, adapter and agent Deployment, aimed at it."""
    for pdb in (o for o in objects if o.get("kind") == "PodDisruptionBudget"):
        matched = _matching(objects, pdb.get("spec", {}).get("selector"), pdb["metadata"].get("namespace"))
        if len(matched) != 1:
            yield f"{ref(pdb)}: selector must match exactly one Deployment, matches {[ref(d) for d in matched]}"
    names = {d["metadata"]["name"] for d in deployments(objects)}
    hpas_by_target: dict[str, list[str]] = {}
    for hpa in (o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"):
        spec = hpa.get("spec", {})
        target = spec.get("scaleTargetRef", {})
        if target.get("kind") != "Deployment" or target.get("name") not in names:
            yield f"{ref(hpa)}: scaleTargetRef {target.get('kind')}/{target.get('name')} names no Deployment here"
        hpas_by_target.setdefault(target.get("name", ""), []).append(hpa["metadata"]["name"])
        if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
            yield f"{ref(hpa)}: minReplicas {spec.get('minReplicas')} > maxReplicas {spec.get('maxReplicas')}"
    for deployment in filter(is_llmmesh, deployments(objects)):
        if pod_labels(deployment).get(COMPONENT) not in ("router", "provider", "agent"):
            continue
        found = hpas_by_target.get(deployment["metadata"]["name"], [])
        if len(found) != 1:
            yield f"{ref(deployment)}: needs exactly one HorizontalPodAutoscaler, has {found}"


def check_network_policies(objects: list[Obj]) -> Iterator[str]:
    """Selectors point at real pods, and who may reach whom is what the design says."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    for policy in policies:
        namespace = policy["metadata"].get("namespace")
        selector = policy.get("spec", {}).get("podSelector")
        if selector and not _matching(objects, selector, namespace):
            yield f"{ref(policy)}: podSelector {selector} matches no Deployment's pods"
        for rule in policy.get("spec", {}).get("ingress") or []:
            for peer in rule.get("from") or []:
                in_namespace = "namespaceSelector" not in peer and peer.get("podSelector")
                if in_namespace and not _matching(objects, peer["podSelector"], namespace):
                    yield f"{ref(policy)}: ingress from podSelector {peer['podSelector']} matches no Deployment's pods"
    yield from _check_reachability(objects, policies)


def _check_reachability(objects: list[Obj], policies: list[Obj]) -> Iterator[str]:
    ours = [d for d in deployments(objects) if is_llmmesh(d)]
    by_component: dict[str, list[Obj]] = {}
    for deployment in ours:
        by_component.setdefault(pod_labels(deployment).get(COMPONENT, ""), []).append(deployment)
    # Sources: every llmmesh Deployment, plus pods in another namespace with and
    # without the caller label.
    sources: list[tuple[str, str | None, dict[str, str], str]] = [
        (ref(d), d["metadata"].get("namespace"), pod_labels(d), pod_labels(d).get(COMPONENT, "")) for d in ours
    ]
    sources += [
        ("a caller pod (llmmesh.dev/caller=true) in another namespace", "elsewhere", {CALLER_LABEL: "true"}, "caller"),
        ("an unlabelled pod in another namespace", "elsewhere", {}, "stranger"),
    ]
    allowed_from = {"provider": {"router"}, "router": {"caller", "agent"}, "agent": {"caller"}}
    for component, allowed in allowed_from.items():
        for target in by_component.get(component, []):
            namespace = target["metadata"].get("namespace")
            for source_name, source_namespace, source_labels, source_component in sources:
                if source_name == ref(target):
                    continue
                reachable = _ingress_allowed(
                    policies, namespace, pod_labels(target), source_namespace, source_labels, GRPC_PORT_NAME
                )
                if reachable and source_component not in allowed:
                    yield f"{ref(target)}: NetworkPolicies let {source_name} reach it; only {sorted(allowed)} may"
                if not reachable and source_component in allowed:
                    yield f"{ref(target)}: NetworkPolicies block {source_name}, which must reach it"


def check_metrics_reachability(objects: list[Obj]) -> Iterator[str]:
    """Each llmmesh pod declares its `metrics` port; only a namespace labelled for monitoring reaches
    it, and only it (a scraper gets no way into the gRPC port)."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    scraper = ("monitoring", {MONITORING_NAMESPACE_LABEL: "true"}, {"app.kubernetes.io/name": "prometheus"})
    for deployment in filter(is_llmmesh, deployments(objects)):
        if pod_labels(deployment).get(COMPONENT) not in ("router", "provider", "agent"):
            continue
        ports = {p.get("name") for c in containers(deployment) for p in c.get("ports") or []}
        if METRICS_PORT_NAME not in ports:
            yield f"{ref(deployment)}: no container port named {METRICS_PORT_NAME!r} (LLMMESH_PROMETHEUS_PORT) to scrape"
            continue
        namespace, labels = deployment["metadata"].get("namespace"), pod_labels(deployment)
        source_ns, ns_labels, source_labels = scraper
        if not _ingress_allowed(policies, namespace, labels, source_ns, source_labels, METRICS_PORT_NAME, ns_labels):
            yield (
                f"{ref(deployment)}: NetworkPolicies block Prometheus (namespace labelled"
                f" {MONITORING_NAMESPACE_LABEL}=true) from the {METRICS_PORT_NAME} port"
            )
        if _ingress_allowed(policies, namespace, labels, source_ns, source_labels, GRPC_PORT_NAME, ns_labels):
            yield f"{ref(deployment)}: NetworkPolicies let the monitoring namespace reach the grpc port; only metrics"
        if _ingress_allowed(policies, namespace, labels, "elsewhere", {}, METRICS_PORT_NAME):
            yield f"{ref(deployment)}: NetworkPolicies let any namespace reach the {METRICS_PORT_NAME} port"


def _ingress_allowed(
    policies: list[Obj],
    namespace: str | None,
    labels: Mapping[str, str],
    source_namespace: str | None,
    source_labels: Mapping[str, str],
    port: str | None = None,
    source_namespace_labels: Mapping[str, str] | None = None,
) -> bool:
    """Whether a policy admits the source; with `port`, only rules open to that named port count."""
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == namespace
        and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
        and selector_matches(p["spec"].get("podSelector", {}), labels)
    ]
    if not selecting:
        return True
    namespace_labels = {"kubernetes.io/metadata.name": source_namespace or "", **(source_namespace_labels or {})}
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            if port is not None and rule.get("ports") and not any(p.get("port") == port for p in rule["ports"]):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                if "namespaceSelector" in peer:
                    namespace_ok = selector_matches(peer["namespaceSelector"], namespace_labels)
                else:
                    namespace_ok = source_namespace == namespace
                pod_ok = "podSelector" not in peer or selector_matches(peer["podSelector"], source_labels)
                if namespace_ok and pod_ok:
                    return True
    return False


def check_secrets(objects: list[Obj]) -> Iterator[str]:
    """Keys come only from Secrets created out of band, and are required."""
    for obj in objects:
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            yield f"{ref(obj)}: Secret values must not be committed; reference a Secret created out of band"
    for deployment in deployments(objects):
        for container in containers(deployment):
            if container.get("envFrom"):
                yield f"{ref(deployment)} container {container.get('name')}: envFrom hides which variables are set; list env entries"
            for entry in container.get("env") or []:
                secret = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if secret is not None and secret.get("optional") is not False:
                    yield f"{ref(deployment)}: {entry['name']} secretKeyRef must say optional: false (fail fast without the key)"


def check_configmap_references(objects: list[Obj]) -> Iterator[str]:
    """A ConfigMap volume must name a ConfigMap of the build in the pod's namespace (kustomize's hashed name).

    A generator in an overlay without `namespace` makes the ConfigMap in no
    namespace, and kustomize then leaves the pod's reference unhashed: the pod
    waits in ContainerCreating for a ConfigMap that does not exist.
    """
    made = {
        (obj.get("metadata", {}).get("namespace"), obj["metadata"]["name"])
        for obj in objects
        if obj.get("kind") == "ConfigMap"
    }
    for deployment in deployments(objects):
        namespace = deployment.get("metadata", {}).get("namespace")
        for volume in deployment["spec"]["template"]["spec"].get("volumes") or []:
            name = (volume.get("configMap") or {}).get("name")
            if name and (namespace, name) not in made:
                yield (
                    f"{ref(deployment)}: volume {volume.get('name')} mounts ConfigMap {name!r}, which this build "
                    f"does not make in namespace {namespace!r} (a generator without `namespace`?)"
                )


ALL_CHECKS = (
    check_pods,
    check_llmmesh_pods,
    check_grace_covers_deadlines,
    check_services,
    check_disruption_and_scaling,
    check_network_policies,
    check_metrics_reachability,
    check_secrets,
    check_configmap_references,
)


def check_objects(objects: list[Obj]) -> list[str]:
    """Every invariant above, over one rendered build."""
    return [problem for check in ALL_CHECKS for problem in check(objects)]

"""Rules for how the mesh meets its environment: Consul, Secrets, and the prod overlay's promises.

- Consul: a process with LLMMESH_DISCOVERY=consul talks to the agent on its
  own node (CONSUL_HTTP_ADDR built from the downward API's status.hostIP),
  never to a server Service (every build).
- Env values: a $(NAME) reference must name a variable defined earlier in
  the same container, or Kubernetes leaves it as literal text (every build).
- Secrets: every Secret a build references is listed in README.md's
  "Secrets" table and created by deploy/k8s/create-secrets.sh (every build).
- Production (overlays/prod): caller auth on, TLS on every hop with mTLS into
  the adapters, every certificate and key from a Secret, no mock anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from services.deploy.invariants import (
    COMPONENT,
    DEPENDENT_VARIABLE,
    Obj,
    containers,
    deployments,
    is_llmmesh,
    literal_env,
    pod_labels,
    ref,
)

HOST_IP_FIELD = "status.hostIP"
TLS_FILES = ("LLMMESH_TLS_CERT_FILE", "LLMMESH_TLS_KEY_FILE", "LLMMESH_TLS_CA_FILE")
# "mock" as a word or a model-name prefix: mock, mock-small, provider mock.
_MOCK = re.compile(r"\bmock\b", re.IGNORECASE)
_SECRETS_HEADING = "### Secrets"
_TABLE_NAME = re.compile(r"^\|\s*`([a-z0-9][a-z0-9.-]*)`\s*\|")
_SCRIPT_CREATES = re.compile(r"\bcreate_secret\s+[a-z,]+\s+([a-z0-9][a-z0-9.-]*)")


def _llmmesh_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for deployment in filter(is_llmmesh, deployments(objects)):
        for container in deployment["spec"]["template"]["spec"].get("containers") or []:
            yield deployment, container


def check_dependent_variables(objects: list[Obj]) -> Iterator[str]:
    """$(NAME) in an env value must name a variable listed before it in the same container."""
    for deployment in deployments(objects):
        for container in containers(deployment):
            defined: set[str] = set()
            for entry in container.get("env") or []:
                for name in DEPENDENT_VARIABLE.findall(str(entry.get("value", ""))):
                    if name not in defined:
                        yield (
                            f"{ref(deployment)} container {container.get('name')}: {entry['name']} uses $({name}), "
                            f"which no env entry before it defines (Kubernetes would pass the text as it is)"
                        )
                defined.add(entry["name"])


def check_consul_node_local(objects: list[Obj]) -> Iterator[str]:
    """With Consul discovery, CONSUL_HTTP_ADDR must point at the node's own agent via status.hostIP."""
    for deployment, container in _llmmesh_containers(objects):
        env = container.get("env") or []
        values = literal_env(container)
        if values.get("LLMMESH_DISCOVERY") != "consul":
            continue
        host_ip = {
            entry["name"]
            for entry in env
            if ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == HOST_IP_FIELD
        }
        address = values.get("CONSUL_HTTP_ADDR", "")
        referenced = set(DEPENDENT_VARIABLE.findall(address))
        if not referenced & host_ip:
            yield (
                f"{ref(deployment)} container {container.get('name')}: CONSUL_HTTP_ADDR={address!r} is not the "
                "node-local Consul agent: set HOST_IP from fieldRef status.hostIP and "
                "CONSUL_HTTP_ADDR=http://$(HOST_IP):8500 (a server Service splits registrations across servers)"
            )


def secret_references(objects: list[Obj]) -> dict[str, list[str]]:
    """Secret name → the objects that reference it (env secretKeyRef, secret and projected volumes)."""
    found: dict[str, list[str]] = {}
    for deployment in deployments(objects):
        spec = deployment["spec"]["template"]["spec"]
        names = [
            ((entry.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            for container in containers(deployment)
            for entry in container.get("env") or []
        ]
        for volume in spec.get("volumes") or []:
            names.append((volume.get("secret") or {}).get("secretName"))
            names += [
                (source.get("secret") or {}).get("name")
                for source in (volume.get("projected") or {}).get("sources") or []
            ]
        for name in filter(None, names):
            found.setdefault(name, []).append(ref(deployment))
    return found


def documented_secrets(readme: str) -> set[str]:
    """The names in the first column of the table under README.md's `### Secrets` heading."""
    if _SECRETS_HEADING not in readme:
        return set()
    section = readme.split(_SECRETS_HEADING, 1)[1].split("\n#", 1)[0]
    return {match.group(1) for line in section.splitlines() if (match := _TABLE_NAME.match(line))}


def created_secrets(script: str) -> set[str]:
    """The Secrets deploy/k8s/create-secrets.sh creates (its `create_secret <overlay> <name>` lines)."""
    return set(_SCRIPT_CREATES.findall(script))


def check_secrets_listed(objects: list[Obj], documented: set[str], created: set[str]) -> Iterator[str]:
    """Every referenced Secret is in the README's Secrets table and made by the one command."""
    for name, users in sorted(secret_references(objects).items()):
        where = ", ".join(sorted(set(users)))
        if name not in documented:
            yield (
                f"{where}: references Secret {name!r}, which README.md's Secrets table does not list: "
                "add a row (keys, who reads it) under '### Secrets'"
            )
        if name not in created:
            yield f"{where}: references Secret {name!r}, which deploy/k8s/create-secrets.sh does not create"


def check_production(objects: list[Obj]) -> Iterator[str]:
    """The prod overlay's promises: auth on, TLS on every hop (mTLS into adapters), no mock anywhere."""
    yield from _check_no_mock(objects)
    yield from check_hpa_owns_replicas(objects)
    yield from check_images_by_digest(objects)
    for deployment, container in _llmmesh_containers(objects):
        at = f"{ref(deployment)} container {container.get('name')}"
        env = literal_env(container)
        component = pod_labels(deployment).get(COMPONENT)
        secret_dirs = _secret_mount_dirs(deployment, container)
        for name in TLS_FILES:
            if not env.get(name):
                yield f"{at}: {name} is empty: production serves and dials TLS on every hop"
            elif not _under(env[name], secret_dirs):
                yield f"{at}: {name}={env[name]} is not in a volume mounted from a Secret"
        if component in ("router", "agent"):
            auth = env.get("LLMMESH_AUTH_FILE", "")
            if not auth:
                yield f"{at}: LLMMESH_AUTH_FILE is empty: production requires caller keys (tenants file from a Secret)"
            elif not _under(auth, secret_dirs):
                yield f"{at}: LLMMESH_AUTH_FILE={auth} is not in a volume mounted from a Secret"
        if component == "provider":
            if env.get("LLMMESH_TLS_CLIENT_AUTH") != "require":
                yield f"{at}: LLMMESH_TLS_CLIENT_AUTH must be require: adapters accept only the router (mTLS)"
            if not env.get("LLMMESH_INTERNAL_ALLOWED_CLIENTS"):
                yield f"{at}: LLMMESH_INTERNAL_ALLOWED_CLIENTS is empty: name the router's certificate (llmmesh-router)"
        if component == "router" and not env.get("LLMMESH_TLS_SERVER_NAME"):
            yield f"{at}: LLMMESH_TLS_SERVER_NAME is empty: the router dials adapter pod IPs; name their certificate"


DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def check_images_by_digest(objects: list[Obj]) -> Iterator[str]:
    """Production pulls every container image by digest: a tag can move under running pods."""
    for deployment in (o for o in objects if o.get("kind") == "Deployment"):
        spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            image = str(container.get("image", ""))
            if not DIGEST.search(image):
                yield (
                    f"{ref(deployment)} container {container.get('name')}: image {image!r} is not pinned by digest:"
                    " set images[].digest in the overlay (kustomize edit set image name=repo@sha256:...)"
                )


def check_hpa_owns_replicas(objects: list[Obj]) -> Iterator[str]:
    """A Deployment an HPA scales sets no spec.replicas: each apply would reset the HPA's count."""
    scaled = {
        o.get("spec", {}).get("scaleTargetRef", {}).get("name")
        for o in objects
        if o.get("kind") == "HorizontalPodAutoscaler"
    }
    for deployment in (o for o in objects if o.get("kind") == "Deployment"):
        if deployment["metadata"].get("name") in scaled and "replicas" in deployment.get("spec", {}):
            yield (
                f"{ref(deployment)}: spec.replicas {deployment['spec']['replicas']} beside its HorizontalPodAutoscaler:"
                " every kubectl apply resets the count the HPA chose; drop replicas and set the HPA's minReplicas"
            )


def _check_no_mock(objects: list[Obj]) -> Iterator[str]:
    """No mock Deployment, env value, argument or ConfigMap line (routing, tiers, agent profiles)."""
    for obj in objects:
        if _MOCK.search(obj.get("metadata", {}).get("name", "")):
            yield f"{ref(obj)}: production deploys no mock"
        if obj.get("kind") == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                for number, line in enumerate(str(value).splitlines(), 1):
                    if _MOCK.search(line.split("#", 1)[0]):
                        yield f"{ref(obj)} {key} line {number}: {line.strip()!r} names the mock; production routes none"
    for deployment, container in _llmmesh_containers(objects):
        texts = [*(str(a) for a in container.get("args") or []), *literal_env(container).values()]
        texts += [e["name"] for e in container.get("env") or []]
        for text in texts:
            if _MOCK.search(text.replace("_", " ")):
                yield f"{ref(deployment)} container {container.get('name')}: {text!r} names the mock"


def _secret_mount_dirs(deployment: Obj, container: Obj) -> list[str]:
    spec = deployment["spec"]["template"]["spec"]
    secret_volumes = {v["name"] for v in spec.get("volumes") or [] if "secret" in v}
    return [m["mountPath"] for m in container.get("volumeMounts") or [] if m.get("name") in secret_volumes]


def _under(path: str, directories: list[str]) -> bool:
    return any(Path(path).is_relative_to(directory) for directory in directories)


def production_problems(objects: list[Obj], readme: str, script: str, *, production: bool) -> list[str]:
    """Every rule of this module for one rendered build."""
    problems = [*check_dependent_variables(objects), *check_consul_node_local(objects)]
    problems += check_secrets_listed(objects, documented_secrets(readme), created_secrets(script))
    if production:
        problems += check_production(objects)
    return problems


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""

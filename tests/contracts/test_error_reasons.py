"""Every ErrorInfo reason the code sets is a value of llmmesh.v1.ErrorReason, and the enum holds no other.

The reasons are string constants (`REASON_* = "..."`) next to the code that
raises them; the enum in protos/llmmesh/v1/errors.proto is the documented
list callers branch on, and docs/errors.md explains each.
"""

from __future__ import annotations

import ast
from pathlib import Path

from llmmesh.v1 import errors_pb2

ROOT = Path(__file__).resolve().parents[2]


def _reason_constants() -> dict[str, str]:
    """{value: where} for every module-level `REASON_* = "..."` in services/."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)):
                continue
            names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            if any(name.startswith("REASON_") for name in names) and isinstance(node.value.value, str):
                found[node.value.value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


def _enum_names() -> set[str]:
    return {value.name for value in errors_pb2.ErrorReason.DESCRIPTOR.values if value.number != 0}


def test_every_reason_in_the_code_is_in_the_enum() -> None:
    missing = {value: where for value, where in _reason_constants().items() if value not in _enum_names()}
    assert missing == {}, "add these to ErrorReason in protos/llmmesh/v1/errors.proto (then make proto)"


def test_the_enum_lists_only_reasons_the_code_sets() -> None:
    assert _enum_names() - set(_reason_constants()) == set()


def test_every_reason_is_explained_in_docs() -> None:
    text = (ROOT / "docs" / "errors.md").read_text()
    assert sorted(name for name in _enum_names() if f"`{name}`" not in text) == []

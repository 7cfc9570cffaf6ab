"""README.md cannot drift: its code blocks run against a live local mesh, its settings exist.

The live run happens once per session, inside a private network namespace
(`unshare --net --map-root-user`) so the README's fixed ports are free and
no other test or service on the machine can collide with them; see
tests/docs/readme.py for the block markers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.docs.readme import CODE_LANGUAGES, MODES, REPO, Block, Result, parse

README = REPO / "README.md"
SETTINGS_DOC = REPO / "docs" / "settings.md"
BLOCKS = parse(README.read_text(encoding="utf-8"))
LIVE = [block for block in BLOCKS if block.mode in ("run", "background", "output", "stop")]
_VARIABLE = re.compile(r"\b(LLMMESH_[A-Z0-9_]*[A-Z0-9])\b")
_LIVE_TIMEOUT_SECONDS = 600


def _id(block: Block) -> str:
    return f"line{block.line}-{block.mode}"


class TestMarkers:
    def test_every_shell_and_python_block_is_marked(self) -> None:
        """A new ```sh or ```python block must say whether the README test runs it (and if not, why)."""
        unmarked = [f"README.md:{b.line}" for b in BLOCKS if b.lang in CODE_LANGUAGES and not b.mode]
        assert not unmarked, f"add a <!-- readme-test: ... --> marker before: {unmarked}"

    def test_markers_are_complete(self) -> None:
        """Skips say why, background blocks say which ports answer, output blocks follow a run block."""
        for index, block in enumerate(BLOCKS):
            where = f"README.md:{block.line}"
            assert block.mode in MODES | {""}, f"{where}: unknown mode {block.mode!r}"
            if block.mode == "skip":
                assert block.reason, f"{where}: a skip needs a reason"
            if block.mode == "background":
                assert block.ports, f"{where}: background needs ready=grpc:<port>[,http:<port>]"
            if block.mode == "output":
                before = [b.mode for b in BLOCKS[:index] if b.mode in ("run", "background") and b.is_code]
                assert before[-1:] == ["run"], f"{where}: an output block must follow a run block"


class TestSettingsNamedInTheReadme:
    def test_every_variable_is_one_the_code_reads(self) -> None:
        """Each LLMMESH_* name in README.md is in docs/settings.md (generated from the settings classes),
        or an input of a deploy/k8s script."""
        documented = set(_VARIABLE.findall(SETTINGS_DOC.read_text(encoding="utf-8")))
        scripts = set()
        for script in (REPO / "deploy" / "k8s").rglob("*.sh"):
            scripts |= set(re.findall(r"LLMMESH_[A-Z0-9_]+", script.read_text(encoding="utf-8")))
        named = set(_VARIABLE.findall(README.read_text(encoding="utf-8")))
        unknown = sorted(
            name
            for name in named - documented - scripts
            # A family written with its shared part, e.g. `LLMMESH_CONSUL_CHECK_INTERVAL_SECONDS` / `_TIMEOUT_SECONDS`,
            # or a name a script composes (`LLMMESH_CONSUL_TOKEN_$1`).
            if not any(d.startswith(name) for d in documented)
            and not any(s.endswith("_") and name.startswith(s) for s in scripts)
        )
        assert not unknown, f"README.md names variables no code reads: {unknown}"

    def test_defaults_in_readme_tables_match_the_code(self) -> None:
        """A README table row for one variable with a `default` column states the code's default."""
        defaults = _doc_defaults()
        wrong = []
        for header, row in _table_rows(README.read_text(encoding="utf-8")):
            if "default" not in header:
                continue
            names = _VARIABLE.findall(row[0])
            value = re.fullmatch(r"`([^`]*)`", row[header.index("default")].strip())
            if len(names) == 1 and value and names[0] in defaults and defaults[names[0]] != value[1]:
                wrong.append(f"{names[0]}: README says {value[1]!r}, the code {defaults[names[0]]!r}")
        assert not wrong, wrong


def _doc_defaults() -> dict[str, str]:
    """Variable → default from docs/settings.md (the first row wins: per-service rows come later)."""
    defaults: dict[str, str] = {}
    for header, row in _table_rows(SETTINGS_DOC.read_text(encoding="utf-8")):
        if header[:2] == ["variable", "default"]:
            for name in _VARIABLE.findall(row[0]):
                defaults.setdefault(name, row[1].strip().strip("`"))
    return defaults


def _table_rows(text: str) -> list[tuple[list[str], list[str]]]:
    rows: list[tuple[list[str], list[str]]] = []
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = [cell.lower() for cell in cells]
        elif not set(line) <= set("|-: "):
            rows.append((header, cells))
    return rows


@pytest.fixture(scope="module")
def live_results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Result]:
    """Runs every live block once, in order, in a private network namespace."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False).returncode:
        pytest.skip("needs `unshare --net --map-root-user` (util-linux; user namespaces allowed)")
    done = subprocess.run(
        [unshare, "-rn", sys.executable, "-m", "tests.docs.readme", "--loopback-up", str(README)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=_LIVE_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = [Result(**json.loads(line)) for line in done.stdout.splitlines() if line.startswith("{")]
    by_line: dict[int, Result] = {}
    for result in results:
        # A background block reports twice: started, then stopped with Ctrl-C; both must be ok.
        earlier = by_line.get(result.line)
        if earlier is None or earlier.ok:
            by_line[result.line] = result
    return by_line


@pytest.mark.readme
@pytest.mark.timeout(_LIVE_TIMEOUT_SECONDS)
@pytest.mark.parametrize("block", LIVE, ids=_id)
def test_readme_block_works_as_written(block: Block, live_results: dict[int, Result]) -> None:
    """Each runnable README block does what the README says, against the live local mesh."""
    result = live_results.get(block.line)
    assert result is not None, f"README.md:{block.line} was never reached"
    assert result.ok, f"README.md:{block.line} ({block.mode}): {result.detail}\n--- output ---\n{result.output[-3000:]}"

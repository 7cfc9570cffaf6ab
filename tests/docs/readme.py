"""The README's code blocks as a script: parse the markers, run the blocks, report each one.

Every ```sh / ```python block in README.md carries a marker comment on the
line before its fence, so a new block cannot slip in untested by accident:

    <!-- readme-test: run -->                 run it; it must exit 0 (`run exit=3` for another status)
    <!-- readme-test: background ready=grpc:50061,http:8080 -->
                                              start it like a command left running in its own terminal;
                                              wait until each port answers (gRPC health SERVING, or
                                              HTTP GET /health); an earlier background block listening
                                              on one of those ports is stopped first, with Ctrl-C
    <!-- readme-test: skip: <why> -->         never run (needs API keys, a cluster, or is the suite itself)
    <!-- readme-test: output -->              on a plain ``` block after a `run` block: each of its lines
                                              must appear in that block's output, in order; digits match
                                              any digits and `...` matches anything
    <!-- readme-test: stop -->                (no block) Ctrl-C every background process still running

`python -m tests.docs.readme README.md` runs the blocks in order from the
repository root with .venv/bin first on PATH (as after `source
.venv/bin/activate`), no provider keys and no LLMMESH_* variables, and
prints one JSON result per block. tests/docs/test_readme.py runs it inside
a private network namespace, so the README's fixed ports (50051, ...) are
free and nothing else on the machine is touched.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<mode>[a-z]+)(?P<rest>.*?)\s*-->\s*$")
# Fences may be indented (inside list items); the closing fence is the next line that starts with ```.
_FENCE = re.compile(r"^\s*```(?P<lang>[A-Za-z0-9_-]*)\s*$")
CODE_LANGUAGES = frozenset({"sh", "bash", "shell", "console", "python", "py"})
MODES = frozenset({"run", "background", "skip", "output", "stop"})
RUN_SECONDS = 120.0
READY_SECONDS = 60.0
STOP_SECONDS = 30.0


@dataclass
class Block:
    """One fenced block (or a bare `stop` marker), with the marker before it."""

    line: int  # 1-based line of the fence (or of the stop marker)
    mode: str  # a MODES member, or "" when unmarked
    lang: str = ""
    code: str = ""
    options: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def is_code(self) -> bool:
        return self.lang in CODE_LANGUAGES

    @property
    def ports(self) -> list[tuple[str, int]]:
        """`ready=grpc:50051,http:8080` as [("grpc", 50051), ("http", 8080)]."""
        ready = self.options.get("ready", "")
        return [(kind, int(port)) for kind, _, port in (item.partition(":") for item in ready.split(",") if item)]


def parse(text: str) -> list[Block]:
    """The blocks of a Markdown text, in order, each with its marker (if any)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    marker: tuple[str, str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        found = _MARKER.match(line.strip())
        fence = _FENCE.match(line)
        if found:
            marker = (found["mode"], found["rest"].strip())
            if found["mode"] == "stop":
                blocks.append(Block(index + 1, "stop"))
                marker = None
        elif fence:
            end = next((i for i in range(index + 1, len(lines)) if lines[i].lstrip().startswith("```")), len(lines))
            mode, rest = marker or ("", "")
            blocks.append(_block(index + 1, mode, rest, fence["lang"], "\n".join(lines[index + 1 : end])))
            marker = None
            index = end
        elif line.strip():
            marker = None  # a marker belongs to the block right after it
        index += 1
    return blocks


def _block(line: int, mode: str, rest: str, lang: str, code: str) -> Block:
    if mode == "skip":
        return Block(line, mode, lang, code, reason=rest.lstrip(":").strip())
    options = dict(item.partition("=")[::2] for item in shlex.split(rest))
    return Block(line, mode, lang, code, options)


def matches(expected: str, actual: str) -> str | None:
    """None when every expected line appears in `actual` in order; else the first line that does not."""
    remaining = [line.rstrip() for line in actual.splitlines()]
    position = 0
    for wanted in (line.rstrip() for line in expected.splitlines()):
        if not wanted.strip() or wanted.strip() == "...":
            continue
        pattern = re.compile(_pattern(wanted))
        while position < len(remaining) and not pattern.fullmatch(remaining[position]):
            position += 1
        if position == len(remaining):
            return wanted
        position += 1
    return None


def _pattern(line: str) -> str:
    # Digits stand for any digits (ports, timings, token counts); `...` for anything; spacing is free.
    escaped = ".*".join(re.sub(r"\d+", r"\\d+", re.escape(piece)) for piece in line.split("..."))
    return re.sub(r"(?:\\ )+", r"\\s+", escaped)


@dataclass
class Result:
    line: int
    mode: str
    ok: bool
    detail: str = ""
    output: str = ""
    seconds: float = 0.0


@dataclass
class _Background:
    block: Block
    process: subprocess.Popen[bytes]
    log: Path


class Runner:
    """Runs the blocks in order; background processes live until stopped or replaced."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = _newcomer_env()
        self.background: list[_Background] = []
        self.last_output = ""

    def run(self, blocks: list[Block]) -> list[Result]:
        steps = {"run": self._run, "background": self._background, "output": self._output, "stop": self._stop_block}
        results = []
        try:
            for block in blocks:
                step = steps.get(block.mode)
                if step is not None and (block.is_code or block.mode in ("output", "stop")):
                    started = time.monotonic()
                    result = step(block)
                    result.seconds = round(time.monotonic() - started, 2)
                    results.append(result)
        finally:
            results += self._stop_all()
        return results

    def _run(self, block: Block) -> Result:
        argv = (
            [sys.executable, "-c", block.code]
            if block.lang in ("python", "py")
            else ["bash", "-euo", "pipefail", "-c", block.code]
        )
        try:
            done = subprocess.run(
                argv,
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=RUN_SECONDS,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as expired:
            return Result(block.line, "run", False, f"still running after {RUN_SECONDS:.0f}s", _text(expired.stdout))
        self.last_output = done.stdout + done.stderr
        wanted = int(block.options.get("exit", "0"))
        ok = done.returncode == wanted
        return Result(
            block.line, "run", ok, "" if ok else f"exit {done.returncode}, expected {wanted}", self.last_output
        )

    def _output(self, block: Block) -> Result:
        missing = matches(block.code, self.last_output)
        detail = "" if missing is None else f"this line is not in the output of the block before: {missing!r}"
        return Result(block.line, "output", missing is None, detail, self.last_output)

    def _background(self, block: Block) -> Result:
        ports = {port for _, port in block.ports}
        replaced = [b for b in self.background if ports & {port for _, port in b.block.ports}]
        results = [self._stop(b) for b in replaced]
        if not all(r.ok for r in results):
            return Result(block.line, "background", False, "; ".join(r.detail for r in results if not r.ok))
        log = self.workdir / f"background-{block.line}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", block.code],
                cwd=REPO,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, like a terminal's foreground job
            )
        started = _Background(block, process, log)
        self.background.append(started)
        problem = _wait_ready(started)
        return Result(block.line, "background", problem is None, problem or "", log.read_text(errors="replace"))

    def _stop(self, started: _Background) -> Result:
        """Ctrl-C: SIGINT to the process group; it must exit 0 (or 130) and leave nothing behind."""
        self.background.remove(started)
        process = started.process
        with _suppress_lookup():
            os.killpg(process.pid, signal.SIGINT)
        try:
            code = process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
            return Result(started.block.line, "stop", False, f"did not stop within {STOP_SECONDS:.0f}s of Ctrl-C")
        left = _group_members(process.pid)
        with _suppress_lookup():
            os.killpg(process.pid, signal.SIGKILL)
        ok = code in (0, -signal.SIGINT, 130) and not left
        detail = "" if ok else f"exit {code} after Ctrl-C; still running: {left}"
        return Result(started.block.line, "stop", ok, detail, started.log.read_text(errors="replace"))

    def _stop_all(self) -> list[Result]:
        return [self._stop(started) for started in list(reversed(self.background))]

    def _stop_block(self, block: Block) -> Result:
        results = self._stop_all()
        failed = [r for r in results if not r.ok]
        return Result(block.line, "stop", not failed, "; ".join(f"line {r.line}: {r.detail}" for r in failed))


def _wait_ready(started: _Background) -> str | None:
    deadline = time.monotonic() + READY_SECONDS
    for kind, port in started.block.ports:
        while not _answers(kind, port):
            if started.process.poll() is not None:
                return f"exited with {started.process.returncode} before {kind}:{port} answered"
            if time.monotonic() > deadline:
                return f"{kind}:{port} did not answer within {READY_SECONDS:.0f}s"
            time.sleep(0.1)
    return None


def _answers(kind: str, port: int) -> bool:
    if kind == "http":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


class _suppress_lookup:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError)


def _newcomer_env() -> dict[str, str]:
    """A fresh shell after `source .venv/bin/activate`: no provider keys, no llmmesh or OTel settings."""
    venv = Path(sys.executable).parent
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_API_KEY") and not key.startswith(("LLMMESH_", "OTEL_", "CONSUL_", "PYTEST_"))
    }
    env["PATH"] = f"{venv}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv.parent)
    return env


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def loopback_up() -> None:
    """Brings `lo` up: a new network namespace starts with it down."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--loopback-up"]:
        loopback_up()
        argv = argv[1:]
    blocks = parse(Path(argv[0]).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="readme-") as workdir:
        results = Runner(Path(workdir)).run(blocks)
    for result in results:
        print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

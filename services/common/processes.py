"""Start llmmesh services as real processes on loopback (llmmesh up, tests, benchmarks).

Each process binds 127.0.0.1 on a free port (LLMMESH_PORT=0) and reports the
port through LLMMESH_READY_FILE once it is SERVING, so nothing races for
ports and nothing sleeps on a guess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServiceExitedError(RuntimeError):
    """A service exited before it was serving; the message has its whole log, `reason` its last line."""

    def __init__(self, name: str, returncode: int, log_path: Path) -> None:
        log = log_path.read_text(errors="replace")
        super().__init__(f"{name} exited with {returncode} before serving:\n{log}")
        lines = [line for line in log.splitlines() if line.strip()]
        self.name = name
        self.returncode = returncode
        self.log_path = log_path
        self.reason = lines[-1] if lines else "(its log is empty)"


@dataclass
class ServiceProcess:
    """A running service and where to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)
    # Everything the ready file said (port, pid, and e.g. the router's http_port).
    ready: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def last_log_line(self) -> str:
        """The last line of the log: where a process that refused to start says why."""
        lines = [line for line in self.log().splitlines() if line.strip()]
        return lines[-1] if lines else "(its log is empty)"

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def start_service(
    argv: Sequence[str],
    *,
    name: str,
    env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    timeout: float = 30.0,
) -> ServiceProcess:
    """Starts `python <argv>` and waits until it reports its port; raises with its log if it dies."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{name}-"))
    ready_file = workdir / f"{name}.ready.json"
    log_path = workdir / f"{name}.log"
    ready_file.unlink(missing_ok=True)
    full_env = {
        **os.environ,
        "LLMMESH_HOST": "127.0.0.1",
        "LLMMESH_PORT": "0",
        "LLMMESH_LOG_FORMAT": "json",
        "LLMMESH_GRACE_SECONDS": "5",
        **(env or {}),
        "LLMMESH_READY_FILE": str(ready_file),
    }
    with open(log_path, "wb") as log_handle:
        process = subprocess.Popen(
            [sys.executable, *argv], env=full_env, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready_file.exists():
            ready = json.loads(ready_file.read_text())
            return ServiceProcess(name, process, int(ready["port"]), log_path, dict(full_env), ready)
        if process.poll() is not None:
            raise ServiceExitedError(name, process.returncode, log_path)
        time.sleep(0.02)
    process.kill()
    raise TimeoutError(f"{name} did not serve within {timeout}s:\n{log_path.read_text()}")


def run_to_exit(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Runs a process that should exit on its own (e.g. refuse bad config)."""
    return subprocess.run(
        [sys.executable, *argv],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )

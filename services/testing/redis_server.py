"""A real redis-server on 127.0.0.1 and a free port, no persistence, for quota tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = (
    "redis-server is not installed (.ci/run installs it with apt-get; run it, or apt-get install redis-server)"
)


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """`RedisServer(workdir).start()`; with `password` it requires AUTH (requirepass), as production does."""

    def __init__(self, workdir: Path, *, password: str = "") -> None:
        binary = redis_binary()
        if binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir)]
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._ping():
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def _ping(self) -> bool:
        """PING (after AUTH when a password is set) answers +PONG."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
            conn.sendall((self._encode("AUTH", self.password) if self.password else b"") + b"PING\r\n")
            answer = b""
            while b"+PONG" not in answer and b"-" not in answer and (data := conn.recv(64)):
                answer += data
            return b"+PONG" in answer

    @staticmethod
    def _encode(*parts: str) -> bytes:
        return (f"*{len(parts)}\r\n" + "".join(f"${len(p.encode())}\r\n{p}\r\n" for p in parts)).encode()

    def command(self, *parts: str) -> bytes:
        """One raw RESP command, for test setup (FLUSHALL, TIME)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            if self.password:
                conn.sendall(self._encode("AUTH", self.password))
                conn.recv(64)
            conn.sendall(self._encode(*parts))
            time.sleep(0.05)
            return conn.recv(4096)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

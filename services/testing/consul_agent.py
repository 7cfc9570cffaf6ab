"""A real `consul agent -dev` on loopback, for the tests that also run against Consul itself.

Same controls as the double (`address`, `start`, `stop`, `restart`): a dev
agent keeps its state in memory, so a restart forgets every service, as the
double's does. Every port is a free loopback port; DNS and gRPC are off.
`check_tls` (the double's AgentCheckTLS) becomes `enable_agent_tls_for_checks`
with those files as the agent's internal-RPC TLS files, which is where Consul
takes the CA and client certificate of its TLS health checks from.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from services.testing.fake_consul import AgentCheckTLS


def consul_binary() -> str | None:
    return shutil.which("consul")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ConsulAgentProcess:
    """`consul agent -dev` bound to 127.0.0.1; its HTTP port stays the same across restarts."""

    def __init__(
        self, binary: str | None = None, workdir: Path | None = None, *, check_tls: AgentCheckTLS | None = None
    ) -> None:
        found = binary or consul_binary()
        if found is None:
            raise FileNotFoundError("no `consul` binary on PATH")
        self.binary = found
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="consul-agent-"))
        self.ports = {name: _free_port() for name in ("http", "serf-lan", "serf-wan", "server")}
        self._process: subprocess.Popen[bytes] | None = None
        self.check_tls = check_tls

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> ConsulAgentProcess:
        argv = [
            self.binary,
            "agent",
            "-dev",
            "-bind=127.0.0.1",
            "-client=127.0.0.1",
            f"-http-port={self.ports['http']}",
            f"-serf-lan-port={self.ports['serf-lan']}",
            f"-serf-wan-port={self.ports['serf-wan']}",
            f"-server-port={self.ports['server']}",
            "-dns-port=-1",
            "-grpc-port=-1",
        ]
        if self.check_tls is not None:
            argv.append(f"-config-file={self._write_check_tls_config(self.check_tls)}")
        log = open(self.workdir / "consul.log", "ab")  # noqa: SIM115 - the child process owns it
        self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"consul exited: {(self.workdir / 'consul.log').read_text()[-2000:]}")
            if self._has_leader():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("consul agent -dev elected no leader in time")

    def _write_check_tls_config(self, tls: AgentCheckTLS) -> Path:
        files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
        config = {"enable_agent_tls_for_checks": True, "tls": {"internal_rpc": {k: v for k, v in files.items() if v}}}
        path = self.workdir / "check-tls.json"
        path.write_text(json.dumps(config))
        return path

    def _has_leader(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/v1/status/leader", timeout=1) as response:
                return bool(json.loads(response.read()))
        except OSError:
            return False

    def stop(self) -> None:
        """Kills the agent (a crash, not a graceful leave): its in-memory state is gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

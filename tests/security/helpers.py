"""Shared pieces for the security tests: tenants files, a real redis-server, status details."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from services.common.errors import MeshError
from services.common.tenants import hash_api_key

# Known keys; each test module writes the tenants file it needs with their hashes.
KEY_ALPHA = "llmk_test-alpha-0123456789abcdefghijklmnopqrstuv"
KEY_BETA = "llmk_test-beta-0123456789abcdefghijklmnopqrstuvw"
KEY_REVOKED = "llmk_test-revoked-0123456789abcdefghijklmnopqrs"
KEY_LISTED_REVOKED = "llmk_test-listed-0123456789abcdefghijklmnopqrs"
KEY_UNKNOWN = "llmk_test-unknown-0123456789abcdefghijklmnopqrs"
INTERNAL_TOKEN = "internal-token-for-tests-0123456789"


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def write_tenants(path: Path, tenants: list[dict[str, Any]], revoked_keys: list[str] = ()) -> Path:
    """Writes a tenants file; each tenant's `keys` may be plain keys (hashed here) or entry dicts."""
    entries = []
    for tenant in tenants:
        keys = [
            {"id": f"{tenant['name']}-{index}", "sha256": hash_api_key(key)} if isinstance(key, str) else key
            for index, key in enumerate(tenant["keys"])
        ]
        entries.append({**tenant, "keys": keys})
    path.write_text(yaml.safe_dump({"tenants": entries, "revoked_keys": [hash_api_key(k) for k in revoked_keys]}))
    return path


def error_of(error: grpc.RpcError) -> MeshError:
    return MeshError.from_rpc_error(error)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A real redis-server on 127.0.0.1 and a free port, no persistence."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if binary is None:
            pytest.skip(
                "redis-server is not installed (.ci/run installs it with apt-get; run it, or apt-get install redis-server)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def command(self, *parts: str) -> bytes:
        """One raw RESP command, for test setup (FLUSHALL, TIME)."""
        payload = f"*{len(parts)}\r\n" + "".join(f"${len(p.encode())}\r\n{p}\r\n" for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            conn.sendall(payload.encode())
            time.sleep(0.05)
            return conn.recv(4096)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

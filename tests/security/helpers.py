"""Shared pieces for the security tests: tenants files, a real redis-server, status details."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from services.common.errors import MeshError
from services.common.tenants import hash_api_key
from services.testing.redis_server import INSTALL_HINT, redis_binary
from services.testing.redis_server import RedisServer as _RedisServer

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


class RedisServer(_RedisServer):
    """services.testing.redis_server.RedisServer, skipping the test when redis-server is absent."""

    def __init__(self, workdir: Path, *, password: str = "") -> None:
        if redis_binary() is None:
            pytest.skip(INSTALL_HINT)
        super().__init__(workdir, password=password)

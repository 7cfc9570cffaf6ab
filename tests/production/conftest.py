"""One production-shaped mesh for the whole production suite (it takes ~30 s to start), checked after every case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.testing.production import ProductionMesh
from services.testing.redis_server import INSTALL_HINT, redis_binary
from tests.production.helpers import reset_upstreams


# Package scope: stopped once the last file here is done. Its dozen processes (metrics exported and Consul
# checks every second) kept burning CPU until the session ended on that worker.
@pytest.fixture(scope="package")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionMesh]:
    if redis_binary() is None:
        pytest.skip(f"the production-shaped mesh keeps quotas in redis: {INSTALL_HINT}")
    workdir: Path = tmp_path_factory.mktemp("production")
    with ProductionMesh(workdir) as started:
        yield started


@pytest.fixture(autouse=True)
def checked(mesh: ProductionMesh) -> Iterator[ProductionMesh]:
    """Each case starts with empty upstream scripts; after it, no process died unplanned, logged an error or a secret."""
    reset_upstreams(mesh)
    yield mesh
    assert mesh.unexpected_exits() == []
    assert mesh.leaked_secrets() == []
    assert mesh.error_lines() == []

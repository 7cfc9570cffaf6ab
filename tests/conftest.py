"""Shared fixtures: real processes on loopback, stopped after the tests that use them."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from xdist.scheduler import LoadGroupScheduling

from llmmesh.v1 import router_service_pb2_grpc
from services.testing.mesh import MockMesh

# The suite starts ~250 interpreters: with PYTHONDONTWRITEBYTECODE=1 (set in some environments) each compiled
# its imports from source, about 4 CPU-s for a router against 1.3 s from .pyc. The Makefile unsets it too.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# The production-shaped suite's files share one mesh (~30 s to start): one work unit for all of them.
PRODUCTION_DIR = "tests/production/"

# The longest work units, longest first (wall time of a whole run, `--durations=0` summed per unit). They
# start first: xdist otherwise orders units by test count, so a long unit with few tests (the README's live
# blocks) started last and one worker finished it alone. Units not listed follow by test count.
LONGEST_UNITS = (
    "tests/deploy/test_k8s_check.py",
    "tests/cli/test_cli.py",
    "tests/docs/test_readme.py",
    "production",
    "tests/router/test_config_errors.py",
    "tests/consul/test_discovery.py",
    "tests/consul/test_cli_up.py",
    "tests/test_bench_smoke.py",
    "tests/router/test_litellm_client.py",
    "tests/telemetry/test_cli_traces.py",
    "tests/deploy/test_monitoring_prometheus.py",
    "tests/security/test_upstream_faults.py",
    "tests/router/test_http_gateway.py",
    "tests/security/test_chaos.py",
)


def work_unit(nodeid: str) -> str:
    """The work unit of a test for `make test` (`--dist loadgroup`): its file, or `production`."""
    path = nodeid.split("::", 1)[0]
    return "production" if path.startswith(PRODUCTION_DIR) else path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scheduler sees only node ids: a `production` test elsewhere would miss the shared mesh's unit."""
    strays = [
        item.nodeid
        for item in items
        if item.get_closest_marker("production") and not item.nodeid.startswith(PRODUCTION_DIR)
    ]
    if strays:
        raise pytest.UsageError(f"production-marked tests must live under {PRODUCTION_DIR}: {', '.join(strays[:5])}")


class FileGroupScheduling(LoadGroupScheduling):
    """`--dist loadgroup` with work units from `work_unit`, decided where the scheduler runs.

    xdist 3.8 tags grouped tests by rewriting `item._nodeid`, which pytest 9 no longer reads
    (a node's id comes from `item._id`): every test became its own unit, so files were split
    across workers, module fixtures (meshes) restarted at each hop, and tests that follow
    another in their file ran without it. An explicit `xdist_group` suffix, if one ever
    arrives, still wins.
    """

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.rfind("@") > nodeid.rfind("]"):
            return super()._split_scope(nodeid)
        return work_unit(nodeid)

    def _assign_work_unit(self, node: Any) -> None:
        """Hands out the longest known unit still waiting first, so no long unit is left for the end."""
        waiting = [unit for unit in LONGEST_UNITS if unit in self.workqueue]
        if waiting:
            self.workqueue.move_to_end(waiting[0], last=False)
        super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadGroupScheduling | None:
    if config.getvalue("dist") != "loadgroup":
        return None
    return FileGroupScheduling(config, log)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    """One mock adapter + router per test module, with the default mock models."""
    with MockMesh(workdir=tmp_path_factory.mktemp("mesh")) as started:
        yield started


@pytest.fixture
async def router_stub(mesh: MockMesh) -> AsyncIterator[router_service_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)

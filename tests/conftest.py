"""Shared fixtures: real processes on loopback, stopped after the tests that use them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from llmmesh.v1 import router_service_pb2_grpc
from services.testing.mesh import MockMesh


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Work units for `make test` (xdist `--dist loadgroup`): one test file each, like `loadfile`, except that
    the production-shaped suite's files are one unit, so the one mesh they share starts once."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "production" if item.get_closest_marker("production") else item.nodeid.split("::", 1)[0]
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockMesh]:
    """One mock adapter + router per test module, with the default mock models."""
    with MockMesh(workdir=tmp_path_factory.mktemp("mesh")) as started:
        yield started


@pytest.fixture
async def router_stub(mesh: MockMesh) -> AsyncIterator[router_service_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        yield router_service_pb2_grpc.RouterServiceStub(channel)

"""The Consul backend every test here runs against: the double, and a real dev agent when `consul` is on PATH."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.testing.consul_agent import ConsulAgentProcess, consul_binary
from tests.consul.helpers import ConsulBackend, fake_consul_for_tests


@pytest.fixture(scope="module", params=["double", "real"])
def consul_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulBackend]:
    """A running Consul agent: the in-process double, or `consul agent -dev` (skipped without the binary)."""
    if request.param == "real":
        if consul_binary() is None:
            pytest.skip("no `consul` binary on PATH: these tests ran against the double only")
        server: object = ConsulAgentProcess(workdir=tmp_path_factory.mktemp("consul")).start()
    else:
        server = fake_consul_for_tests().start()
    backend = ConsulBackend(request.param, server)  # type: ignore[arg-type]
    try:
        yield backend
    finally:
        backend.stop()

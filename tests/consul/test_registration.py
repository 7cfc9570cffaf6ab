"""Adapter registration details: ACL token, advertise address, registering when Consul appears late."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from services.common.processes import start_service
from services.testing.fake_consul import FakeConsul
from tests.consul.helpers import ConsulBackend, consul_env, fake_consul_for_tests, wait_for

pytestmark = pytest.mark.consul

SECRET = "s3cr3t-acl-token"


class TestRegistration:
    def test_acl_token_is_sent_and_never_logged(self, tmp_path: Path) -> None:
        """CONSUL_HTTP_TOKEN goes with every agent call (register and anti-entropy) and never into the log."""
        fake = FakeConsul(min_check_interval=0.1, required_token=SECRET).start()
        backend = ConsulBackend("double", fake)
        adapter = start_service(
            ["-m", "services.providers.mock"],
            name="mock",
            workdir=tmp_path,
            env=consul_env(backend, CONSUL_HTTP_TOKEN=SECRET, LLMMESH_ADVERTISE_ADDRESS="127.0.0.1"),
        )
        try:
            wait_for(lambda: fake.service_ids("llmmesh-provider-mock", passing=True) != [], what="registration")
            wait_for(lambda: any(path.startswith("/v1/agent/service/llmmesh") for _, path, _ in fake.requests))
            agent_calls = [(m, p, token) for m, p, token in fake.requests if p.startswith("/v1/agent/")]
            assert all(token for _, _, token in agent_calls), agent_calls
        finally:
            adapter.terminate()
            fake.stop()
        assert fake.requests[-1][0] == "PUT"
        assert (
            fake.requests[-1][1]
            == f"/v1/agent/service/deregister/llmmesh-provider-mock-{socket.gethostname()}-{adapter.port}"
        )
        assert SECRET not in adapter.log()

    def test_registers_once_consul_appears(self, tmp_path: Path) -> None:
        """An adapter started while Consul is down serves anyway and registers when the agent comes up."""
        fake = fake_consul_for_tests().start()
        fake.stop()
        backend = ConsulBackend("double", fake)
        adapter = start_service(
            ["-m", "services.providers.mock"], name="mock", workdir=tmp_path, env=consul_env(backend)
        )
        try:
            time.sleep(0.5)  # a few anti-entropy rounds against nothing
            fake.start()
            wait_for(lambda: fake.service_ids("llmmesh-provider-mock", passing=True) != [], what="late registration")
            assert "consul registration failed; will retry" in adapter.log()
        finally:
            adapter.terminate()
            fake.stop()

    def test_bad_consul_address_stops_the_adapter_with_a_clear_error(self, tmp_path: Path) -> None:
        """A malformed CONSUL_HTTP_ADDR is a configuration error naming the variable (exit 2)."""
        from services.common.processes import run_to_exit

        result = run_to_exit(
            ["-m", "services.providers.mock"],
            env={"LLMMESH_DISCOVERY": "consul", "CONSUL_HTTP_ADDR": "http://consul:notaport"},
        )
        assert result.returncode == 2
        assert "CONSUL_HTTP_ADDR" in result.stderr


class TestToolRegistration:
    async def test_tool_service_registers_with_its_tool_names(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A tool service registers tagged llmmesh-tool with Meta tools, and deregisters on stop."""
        from services.common.consul_discovery.registration import ConsulRegistration, RegistrationSettings

        fake = fake_consul_for_tests().start()
        monkeypatch.setenv("CONSUL_HTTP_ADDR", fake.address)
        try:
            registration = ConsulRegistration.for_tools(
                "llmmesh-tool-calc",
                tools=["calculator", "unit_convert"],
                health_service="llmmesh.v1.ToolService",
                settings=RegistrationSettings(consul_check_interval_seconds=0.2),
            )
            await registration.start("127.0.0.1", 4242)  # the check's outcome is not what this test pins
            backend = ConsulBackend("double", fake)
            [instance] = backend.instances("llmmesh-tool-calc")
            assert instance["Tags"] == ["llmmesh-tool"]
            assert instance["Meta"] == {"tools": "calculator,unit_convert"}
            assert instance["ID"] == registration.instance_id
            await registration.stop()
            assert backend.instances("llmmesh-tool-calc") == []
        finally:
            fake.stop()

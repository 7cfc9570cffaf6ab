"""Consul in production shape, through real processes: TLS health checks, stable IDs, ACL-filtered answers.

The TLS and ID tests run against the double and, when a `consul` binary is on
PATH, against `consul agent -dev` (with `enable_agent_tls_for_checks` and the
agent's own certificate, as the README tells operators to configure it). The
ACL test needs the double: a dev agent runs without ACLs.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, run_to_exit, start_service
from services.router.main import DISCOVERY_HEALTH
from services.testing.consul_agent import ConsulAgentProcess, consul_binary
from services.testing.fake_consul import AclRules, AgentCheckTLS, FakeConsul
from services.testing.pki import CertificateAuthority, Pair
from tests.consul.helpers import ConsulBackend, consul_env, fake_consul_for_tests, start_router, wait_for

pytestmark = pytest.mark.consul

ADAPTER_NAME = "llmmesh-provider"  # the DNS name every adapter certificate carries


@dataclass(frozen=True)
class Pki:
    """The mesh CA (adapters, the router) and the Consul agents' own CA, as in a real cluster."""

    mesh: CertificateAuthority
    adapter: Pair
    router: Pair
    consul_ca: CertificateAuthority
    consul_agent: Pair
    agent_ca_bundle: Path  # what the agent verifies checked servers against: its CA and the mesh CA

    def check_tls(self) -> AgentCheckTLS:
        return AgentCheckTLS(str(self.agent_ca_bundle), str(self.consul_agent.cert), str(self.consul_agent.key))

    def adapter_tls(self, *, mtls: bool = False) -> dict[str, str]:
        env = {"LLMMESH_TLS_CERT_FILE": str(self.adapter.cert), "LLMMESH_TLS_KEY_FILE": str(self.adapter.key)}
        if mtls:
            env |= {
                "LLMMESH_TLS_CA_FILE": str(self.mesh.ca_file),
                "LLMMESH_TLS_CLIENT_AUTH": "require",
                "LLMMESH_INTERNAL_ALLOWED_CLIENTS": "llmmesh-router",
            }
        return env


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    mesh = CertificateAuthority(directory, "mesh-ca")
    consul_ca = CertificateAuthority(directory, "consul-agent-ca")
    bundle = directory / "agent-ca-bundle.pem"
    bundle.write_bytes(consul_ca.ca_file.read_bytes() + mesh.ca_file.read_bytes())
    return Pki(
        mesh,
        mesh.issue(ADAPTER_NAME),
        mesh.issue("llmmesh-router"),
        consul_ca,
        consul_ca.issue("client.dc1.consul"),
        bundle,
    )


@pytest.fixture(scope="module", params=["double", "real"])
def tls_consul(
    request: pytest.FixtureRequest, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsulBackend]:
    """An agent that runs TLS checks with its own certificate (enable_agent_tls_for_checks)."""
    if request.param == "real":
        if consul_binary() is None:
            pytest.skip("no `consul` binary on PATH: these tests ran against the double only")
        server: Any = ConsulAgentProcess(workdir=tmp_path_factory.mktemp("consul"), check_tls=pki.check_tls()).start()
    else:
        server = FakeConsul(
            min_check_interval=0.1, min_deregister_after=0.5, reap_interval=0.2, check_tls=pki.check_tls()
        )
        server.start()
    backend = ConsulBackend(request.param, server)
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("consul-prod")


def _adapter(backend: ConsulBackend, workdir: Path, name: str, *, register: bool = True, **env: str) -> ServiceProcess:
    settings = consul_env(backend, LLMMESH_PROVIDER_INSTANCE=name, **env)
    if not register:
        settings["LLMMESH_DISCOVERY"] = "static"
    return start_service(["-m", "services.providers.mock"], name=name, workdir=workdir, env=settings)


def _register_check(backend: ConsulBackend, service_id: str, target: ServiceProcess, **tls: Any) -> None:
    """A registration with one gRPC check on `target`, as an operator's tooling might write it."""
    check = {"GRPC": f"127.0.0.1:{target.port}", "Interval": "200ms", "Timeout": "1s", **tls}
    body = {"Name": "svc-tls-probe", "ID": service_id, "Address": "127.0.0.1", "Port": target.port, "Check": check}
    status, _, answer = backend.request("PUT", "/v1/agent/service/register", body)
    assert status == 200, answer


def _checks(backend: ConsulBackend, service: str) -> dict[str, dict[str, Any]]:
    """Service ID → its own (non-serf) check, as the health endpoint reports it."""
    _, _, entries = backend.request("GET", f"/v1/health/service/{service}")
    return {e["Service"]["ID"]: next(c for c in e["Checks"] if c["ServiceID"]) for e in entries}


@dataclass
class TlsTargets:
    """The adapters the TLS tests check, started together (in parallel: process start-up dominates)."""

    tls: ServiceProcess  # serves TLS, registers itself with its TLSServerName
    mtls: ServiceProcess  # requires client certificates, trusts the agents' CA, registers itself
    plain: ServiceProcess  # plaintext, not registered
    mtls_without_agent_ca: ServiceProcess  # requires mesh client certificates only, not registered


@pytest.fixture(scope="module")
def targets(tls_consul: ConsulBackend, pki: Pki, workdir: Path) -> Iterator[TlsTargets]:
    specs: list[tuple[str, bool, dict[str, str]]] = [
        ("tls", True, {"LLMMESH_CONSUL_CHECK_TLS_SERVER_NAME": ADAPTER_NAME, **pki.adapter_tls()}),
        ("mtls", True, {"LLMMESH_CONSUL_AGENT_CA_FILE": str(pki.consul_ca.ca_file), **pki.adapter_tls(mtls=True)}),
        ("plain", False, {}),
        ("mtls-target", False, pki.adapter_tls(mtls=True)),
    ]
    with concurrent.futures.ThreadPoolExecutor(len(specs)) as pool:
        started = list(
            pool.map(lambda spec: _adapter(tls_consul, workdir, spec[0], register=spec[1], **spec[2]), specs)
        )
    try:
        yield TlsTargets(*started)
    finally:
        for process in started:
            process.terminate()


class TestTlsHealthChecks:
    def test_tls_adapter_registers_a_tls_check_and_turns_passing(
        self, tls_consul: ConsulBackend, targets: TlsTargets
    ) -> None:
        """An adapter serving TLS registers GRPCUseTLS with its TLSServerName; Consul's check passes."""
        wait_for(lambda: tls_consul.ports("llmmesh-provider-tls", passing=True) == {targets.tls.port}, what="passing")
        assert '"check_tls": true' in targets.tls.log()

    def test_mtls_adapter_lets_the_agent_check_health_and_nothing_else(
        self, tls_consul: ConsulBackend, pki: Pki, targets: TlsTargets
    ) -> None:
        """Under mTLS the agent's certificate (LLMMESH_CONSUL_AGENT_CA_FILE) passes the check but not ProviderService."""
        adapter = targets.mtls
        wait_for(lambda: tls_consul.ports("llmmesh-provider-mtls", passing=True) == {adapter.port}, what="passing")
        credentials = grpc.ssl_channel_credentials(
            pki.mesh.ca_file.read_bytes(), pki.consul_agent.key.read_bytes(), pki.consul_agent.cert.read_bytes()
        )
        with grpc.secure_channel(adapter.address, credentials) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as refused:
                provider_service_pb2_grpc.ProviderServiceStub(channel).ListModels(
                    ppb.ProviderServiceListModelsRequest(), timeout=10
                )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]

    def test_a_check_that_does_not_match_the_transport_stays_critical(
        self, tls_consul: ConsulBackend, targets: TlsTargets
    ) -> None:
        """Plaintext check on TLS, TLS check on plaintext, a wrong TLSServerName, mTLS without the agent's CA: critical.

        TLSSkipVerify passes despite the wrong name: Go's InsecureSkipVerify checks neither chain nor name.
        """
        _register_check(tls_consul, "control", targets.tls, GRPCUseTLS=True, TLSServerName=ADAPTER_NAME)
        _register_check(
            tls_consul, "skip-verify", targets.tls, GRPCUseTLS=True, TLSServerName="not-the-adapter", TLSSkipVerify=True
        )
        _register_check(tls_consul, "plain-on-tls", targets.tls)
        _register_check(tls_consul, "tls-on-plain", targets.plain, GRPCUseTLS=True)
        _register_check(tls_consul, "wrong-name", targets.tls, GRPCUseTLS=True, TLSServerName="not-the-adapter")
        _register_check(tls_consul, "mtls-no-agent-ca", targets.mtls_without_agent_ca, GRPCUseTLS=True)
        mismatched = {"plain-on-tls", "tls-on-plain", "wrong-name", "mtls-no-agent-ca"}
        try:

            def settled() -> bool:
                checks = _checks(tls_consul, "svc-tls-probe")
                passing = checks["control"]["Status"] == checks["skip-verify"]["Status"] == "passing"
                return passing and all(checks[i]["Output"] for i in mismatched)

            wait_for(settled, what="the control check passing and every other check run")
            checks = _checks(tls_consul, "svc-tls-probe")
            assert {i: checks[i]["Status"] for i in mismatched} == dict.fromkeys(mismatched, "critical")
        finally:
            for service_id in ("control", "skip-verify", *mismatched):
                tls_consul.request("PUT", f"/v1/agent/service/deregister/{service_id}")

    def test_agent_ca_without_allowed_clients_is_refused(self, pki: Pki) -> None:
        """Trusting the agents' CA with no client-name check would open ProviderService to them: exit 2 naming both."""
        result = run_to_exit(
            ["-m", "services.providers.mock"],
            env={
                **pki.adapter_tls(mtls=True),
                "LLMMESH_INTERNAL_ALLOWED_CLIENTS": "",
                "LLMMESH_CONSUL_AGENT_CA_FILE": str(pki.consul_ca.ca_file),
            },
        )
        assert result.returncode == 2
        assert "LLMMESH_CONSUL_AGENT_CA_FILE" in result.stderr
        assert "LLMMESH_INTERNAL_ALLOWED_CLIENTS" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestStableRegistration:
    def test_restart_in_place_leaves_one_registration(self, consul_backend: ConsulBackend, workdir: Path) -> None:
        """kill -9 and a restart on the same address and port: one entry, same ID; a stale one there is removed."""
        service, port, other_port = "llmmesh-provider-inplace", _free_port(), _free_port()
        for stale_id, stale_port in (("legacy-random-id", port), ("other-port", other_port)):
            body = {"Name": service, "ID": stale_id, "Address": "127.0.0.1", "Port": stale_port}
            assert consul_backend.request("PUT", "/v1/agent/service/register", body)[0] == 200
        env = {"LLMMESH_PORT": str(port), "LLMMESH_POD_NAME": "pod-a", "LLMMESH_ADVERTISE_ADDRESS": "127.0.0.1"}
        own_id = f"{service}-pod-a-{port}"
        first = _adapter(consul_backend, workdir, "inplace", **env)
        try:
            wait_for(lambda: own_id in {i["ID"] for i in consul_backend.instances(service, passing=True)})
            first.kill()
            second = _adapter(consul_backend, workdir, "inplace", **env)
            try:
                wait_for(lambda: "consul registered" in second.log(), what="the restarted adapter registering")
                wait_for(lambda: port in consul_backend.ports(service, passing=True), what="passing again")
                at_port = [i["ID"] for i in consul_backend.instances(service) if i["Port"] == port]
                assert at_port == [own_id]
                assert {i["ID"] for i in consul_backend.instances(service)} == {own_id, "other-port"}
            finally:
                second.terminate()
        finally:
            first.kill()
            consul_backend.request("PUT", "/v1/agent/service/deregister/other-port")


ROUTER_TOKEN, ADAPTER_TOKEN = "router-watch-token", "adapter-register-token"


@pytest.fixture
def acl_consul() -> Iterator[FakeConsul]:
    """The double with ACLs: the adapter may register its own name, the router may read it and the nodes."""
    base = fake_consul_for_tests()
    fake = FakeConsul(
        min_check_interval=base.min_check_interval,
        min_deregister_after=base.min_deregister_after,
        reap_interval=base.reap_interval,
        acl_tokens={
            ADAPTER_TOKEN: AclRules(service_write=("llmmesh-provider-acl",)),
            ROUTER_TOKEN: AclRules(service_read=("llmmesh-provider-",), node_read=True),
        },
    ).start()
    try:
        yield fake
    finally:
        fake.stop()


def _chat(stub: router_service_pb2_grpc.RouterServiceStub) -> rpb.ChatResponse:
    message = chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])
    return stub.Chat(rpb.ChatRequest(model="m-acl", messages=[message]), timeout=10)  # type: ignore[no-any-return]


def _discovery_status(channel: grpc.Channel) -> int:
    health = health_pb2_grpc.HealthStub(channel)
    return int(health.Check(health_pb2.HealthCheckRequest(service=DISCOVERY_HEALTH), timeout=10).status)


class TestAclFilteredAnswers:
    def test_router_keeps_its_table_when_acls_hide_every_instance(self, acl_consul: FakeConsul, tmp_path: Path) -> None:
        """A token that loses node:read gets 200 []: the router logs an ERROR naming it and keeps routing."""
        backend = ConsulBackend("double", acl_consul)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            adapter_starting = pool.submit(_adapter, backend, tmp_path, "acl", CONSUL_HTTP_TOKEN=ADAPTER_TOKEN)
            router = start_router(
                backend, tmp_path, ["acl"], CONSUL_HTTP_TOKEN=ROUTER_TOKEN, LLMMESH_CONSUL_WAIT_SECONDS="0.5"
            )
            adapter = adapter_starting.result()
        try:
            with grpc.insecure_channel(router.address) as channel:
                stub = router_service_pb2_grpc.RouterServiceStub(channel)
                wait_for(lambda: _routable(stub), what="the router routing to the adapter")
                acl_consul.acl_tokens = {
                    **(acl_consul.acl_tokens or {}),
                    ROUTER_TOKEN: AclRules(("llmmesh-provider-",)),
                }
                wait_for(lambda: "filtered by ACLs to nothing" in router.log(), what="the router noticing")
                assert _chat(stub).model == "m-acl"  # the last good table still routes
                assert _discovery_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
                acl_consul.acl_tokens = {
                    **acl_consul.acl_tokens,
                    ROUTER_TOKEN: AclRules(("llmmesh-provider-",), (), True),
                }
                wait_for(lambda: _discovery_status(channel) == health_pb2.HealthCheckResponse.SERVING)
                assert _chat(stub).model == "m-acl"
        finally:
            router.terminate()
            adapter.terminate()
        [line] = [yaml.safe_load(x) for x in router.log().splitlines() if "filtered by ACLs to nothing" in x]
        assert line["level"] == "error"
        assert "node:read" in line["fix"]
        assert "service:read" in line["fix"]
        assert ROUTER_TOKEN not in router.log()


def _routable(stub: router_service_pb2_grpc.RouterServiceStub) -> bool:
    models = stub.ListModels(rpb.ListModelsRequest(), timeout=10).models
    return any(m.name == "m-acl" and m.available for m in models)

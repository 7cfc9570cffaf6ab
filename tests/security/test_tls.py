"""TLS and mTLS on every hop: caller → router (mTLS) → adapter (mTLS + client identity check)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc, router_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.client import MeshClient, text_of
from services.common.errors import MeshError
from services.common.processes import ServiceProcess, run_to_exit, start_service
from services.common.tls import TLSSettings, channel_security
from services.testing.mesh import default_routing
from services.testing.pki import CertificateAuthority, Pair
from tests.security.helpers import error_of


@dataclass
class TlsMesh:
    ca: CertificateAuthority
    caller: Pair
    intruder: Pair
    router: ServiceProcess
    adapter: ServiceProcess

    def client_security(self, pair: Pair | None) -> TLSSettings:
        return TLSSettings(
            tls_ca_file=str(self.ca.ca_file),
            tls_cert_file=str(pair.cert) if pair else "",
            tls_key_file=str(pair.key) if pair else "",
        )


def _tls_env(ca: CertificateAuthority, pair: Pair) -> dict[str, str]:
    return {
        "LLMMESH_TLS_CERT_FILE": str(pair.cert),
        "LLMMESH_TLS_KEY_FILE": str(pair.key),
        "LLMMESH_TLS_CA_FILE": str(ca.ca_file),
        "LLMMESH_TLS_CLIENT_AUTH": "require",
    }


@pytest.fixture(scope="module")
def tls_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMesh]:
    """Router and mock adapter, both requiring client certificates; the adapter allows only the router's name."""
    workdir = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority(workdir)
    adapter = start_service(
        ["-m", "services.providers.mock"],
        name="mock-tls",
        workdir=workdir,
        env={**_tls_env(ca, ca.issue("llmmesh-provider-mock")), "LLMMESH_INTERNAL_ALLOWED_CLIENTS": "llmmesh-router"},
    )
    routing = workdir / "routing.yaml"
    routing.write_text(yaml.safe_dump(default_routing()))
    static = workdir / "static.yaml"
    static.write_text(yaml.safe_dump({"services": {"llmmesh-provider-mock": [adapter.address]}}))
    try:
        router = start_service(
            ["-m", "services.router"],
            name="router-tls",
            workdir=workdir,
            env={
                **_tls_env(ca, ca.issue("llmmesh-router")),
                "LLMMESH_ROUTING_FILE": str(routing),
                "LLMMESH_STATIC_DISCOVERY_FILE": str(static),
            },
        )
    except BaseException:
        adapter.terminate()
        raise
    yield TlsMesh(ca, ca.issue("caller"), ca.issue("intruder"), router, adapter)
    router.terminate()
    adapter.terminate()


def _request() -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model="mock-small",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="over tls")])],
    )


class TestTransport:
    async def test_full_chat_over_mtls(self, tls_mesh: TlsMesh) -> None:
        """Caller → router → adapter, each hop mutually authenticated, answers."""
        security = channel_security(tls_mesh.client_security(tls_mesh.caller))
        async with MeshClient(tls_mesh.router.address, security=security, timeout=10) as client:
            answer = await client.chat("mock-small", "over tls")
        assert text_of(answer.message) == "[mock mock-small] over tls"
        assert '"transport": "tls"' in tls_mesh.router.log()

    async def test_plaintext_client_refused(self, tls_mesh: TlsMesh) -> None:
        """A plaintext client cannot talk to a TLS server (and the server stays up)."""
        async with grpc.aio.insecure_channel(tls_mesh.router.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await router_service_pb2_grpc.RouterServiceStub(channel).Chat(_request(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert tls_mesh.router.process.poll() is None

    async def test_tls_without_client_certificate_refused(self, tls_mesh: TlsMesh) -> None:
        """With LLMMESH_TLS_CLIENT_AUTH=require, a TLS client without a certificate fails the handshake."""
        security = channel_security(tls_mesh.client_security(None))
        async with MeshClient(tls_mesh.router.address, security=security, timeout=5) as client:
            with pytest.raises(MeshError) as caught:
                await client.chat("mock-small", "no cert")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE

    async def test_certificate_from_another_ca_refused(self, tls_mesh: TlsMesh, tmp_path: Path) -> None:
        """A client certificate not signed by the mesh CA is refused."""
        rogue = CertificateAuthority(tmp_path, "rogue-ca").issue("llmmesh-router")
        settings = TLSSettings(
            tls_ca_file=str(tls_mesh.ca.ca_file), tls_cert_file=str(rogue.cert), tls_key_file=str(rogue.key)
        )
        async with MeshClient(tls_mesh.router.address, security=channel_security(settings), timeout=5) as client:
            with pytest.raises(MeshError) as caught:
                await client.chat("mock-small", "rogue")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE


class TestAdapterIdentity:
    async def test_adapter_refuses_other_client_identity(self, tls_mesh: TlsMesh) -> None:
        """A valid mesh certificate that is not the router's is PERMISSION_DENIED by the adapter."""
        security = channel_security(tls_mesh.client_security(tls_mesh.intruder))
        request = ppb.ProviderServiceChatRequest(model="mock-small", messages=_request().messages)
        async with grpc.aio.secure_channel(tls_mesh.adapter.address, security.credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await provider_service_pb2_grpc.ProviderServiceStub(channel).Chat(request, timeout=5)
        error = error_of(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ROUTER")


class TestConfiguration:
    def test_client_auth_without_ca_refuses_to_start(self, tls_mesh: TlsMesh) -> None:
        """require without a CA file stops the process (exit 2) naming the setting."""
        pair = tls_mesh.caller
        result = run_to_exit(
            ["-m", "services.providers.mock"],
            env={
                "LLMMESH_TLS_CERT_FILE": str(pair.cert),
                "LLMMESH_TLS_KEY_FILE": str(pair.key),
                "LLMMESH_TLS_CLIENT_AUTH": "require",
                "LLMMESH_PORT": "0",
            },
        )
        assert result.returncode == 2
        assert "LLMMESH_TLS_CA_FILE" in result.stderr

    def test_unreadable_certificate_refuses_to_start(self, tmp_path: Path) -> None:
        """A certificate path that is not a PEM certificate stops the router naming the variable."""
        bogus = tmp_path / "cert.pem"
        bogus.write_text("not a certificate")
        result = run_to_exit(
            ["-m", "services.router"],
            env={"LLMMESH_TLS_CERT_FILE": str(bogus), "LLMMESH_TLS_KEY_FILE": str(bogus), "LLMMESH_PORT": "0"},
        )
        assert result.returncode == 2
        assert "LLMMESH_TLS_CERT_FILE" in result.stderr

    def test_security_off_is_said_loudly(self, tmp_path: Path) -> None:
        """A local adapter without the internal token or client identity check warns at start."""
        process = start_service(["-m", "services.providers.mock"], name="mock-open", workdir=tmp_path)
        try:
            log = process.log()
        finally:
            process.terminate()
        assert '"level": "warning"' in log
        assert "INTERNAL AUTH OFF" in log

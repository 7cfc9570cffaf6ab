"""Process entrypoint shared by every adapter kind."""

from __future__ import annotations

import sys
from collections.abc import Callable

import structlog
from pydantic import Field, SecretStr

from llmmesh.v1 import provider_service_pb2_grpc
from services.common.auth import internal_interceptors
from services.common.consul_discovery.registration_settings import RegistrationSettings
from services.common.logs import configure_logging
from services.common.server import MeshServer, check_can_listen, run_service
from services.common.settings import ConfigError, ServiceSettings, load_settings
from services.common.tls import TLSSettings, server_credentials
from services.common.validation import InputLimits
from services.providers.base import ProviderAdapter
from services.providers.servicer import ProviderServicer

PROVIDER_SERVICE = "llmmesh.v1.ProviderService"
# Each kind's port when LLMMESH_PORT is unset: where the router's embedded static
# discovery (services/router/defaults/static.yaml) expects it on one machine.
DEFAULT_PORTS = {"mock": 50061, "openai": 50062, "anthropic": 50063, "google": 50064}


class ProviderSettings(ServiceSettings, TLSSettings, InputLimits):
    """Settings every adapter process reads."""

    port: int = Field(
        0,
        ge=0,
        le=65535,
        description="gRPC port; 0 picks a free one. Unset: the kind's port in the embedded static discovery.",
        json_schema_extra={"default_shown": "mock 50061, openai 50062, anthropic 50063, google 50064"},
    )
    max_in_flight: int = Field(256, ge=1, le=100_000, description="Calls past this get RESOURCE_EXHAUSTED.")
    provider_instance: str = Field(
        "", pattern=r"^[a-z0-9-]*$", description="Instance name (e.g. vllm-local); defaults to the kind."
    )
    models: str = Field("", description="Comma-separated models this instance serves; empty: the adapter's defaults.")
    internal_token: SecretStr = Field(
        SecretStr(""),
        description="Calls must carry it (llmmesh-internal-token); the router's value. Empty: not checked.",
    )
    internal_allowed_clients: str = Field(
        "", description="Comma-separated client certificate CN/SAN names allowed to call (mTLS); empty: not checked."
    )

    @property
    def model_names(self) -> list[str]:
        return [name.strip() for name in self.models.split(",") if name.strip()]


def service_name(settings: ProviderSettings, kind: str) -> str:
    """One name everywhere: process, Deployment, Consul service, OTEL_SERVICE_NAME."""
    return f"llmmesh-provider-{settings.provider_instance or kind}"


def consul_agent_ca(settings: ProviderSettings, discovery: RegistrationSettings) -> tuple[str, str]:
    """The Consul agents' CA, trusted for client certificates so their TLS health checks pass under mTLS.

    Their certificates must reach health only: the router's name in
    LLMMESH_INTERNAL_ALLOWED_CLIENTS is what keeps them off ProviderService.
    """
    if discovery.consul_agent_ca_file and not settings.internal_allowed_clients:
        raise ConfigError(
            "LLMMESH_CONSUL_AGENT_CA_FILE lets Consul agents' certificates through TLS: set "
            "LLMMESH_INTERNAL_ALLOWED_CLIENTS (e.g. llmmesh-router) so they reach the health service only"
        )
    return "LLMMESH_CONSUL_AGENT_CA_FILE", discovery.consul_agent_ca_file


def run_provider(kind: str, build_adapter: Callable[[ProviderSettings], ProviderAdapter]) -> None:
    """Runs one adapter process until SIGTERM/SIGINT; exits 2 on bad configuration."""
    try:
        settings = load_settings(ProviderSettings)
        if "port" not in settings.model_fields_set:
            settings = settings.model_copy(update={"port": DEFAULT_PORTS.get(kind, 0)})
        configure_logging(service_name(settings, kind), settings.log_level, settings.log_format)
        if settings.internal_allowed_clients and settings.tls_client_auth != "require":
            raise ConfigError(
                "LLMMESH_INTERNAL_ALLOWED_CLIENTS checks client certificates: set LLMMESH_TLS_CLIENT_AUTH=require"
            )
        discovery = load_settings(RegistrationSettings)
        credentials = server_credentials(settings, extra_client_ca=consul_agent_ca(settings, discovery))
        adapter = build_adapter(settings)
        registration = None
        if discovery.discovery == "consul":
            # Imported here: the Consul client (py-consul, requests) costs every other adapter's start-up.
            from services.common.consul_discovery.registration import ConsulRegistration

            registration = ConsulRegistration.for_provider(
                service_name(settings, kind),
                kind=kind,
                models=[model.name for model in adapter.list_models()],
                health_service=PROVIDER_SERVICE,
                settings=discovery,
            )
        check_can_listen(settings.host, settings.port)
    except ConfigError as error:
        print(f"llmmesh-provider-{kind}: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def main() -> None:
        name = service_name(settings, kind)
        interceptors = internal_interceptors(
            settings.internal_token.get_secret_value(), settings.internal_allowed_clients, service=name
        )
        server = MeshServer(name, settings, interceptors=interceptors, credentials=credentials)
        servicer = ProviderServicer(adapter, max_in_flight=settings.max_in_flight, limits=settings)
        servicer.register_metrics(server.telemetry.meter)
        server.add_service(provider_service_pb2_grpc.add_ProviderServiceServicer_to_server, servicer, PROVIDER_SERVICE)
        server.after_stop(adapter.aclose)
        if registration is not None:
            registration.attach(server)
        await server.serve_until_signal()

    structlog.get_logger(__name__).debug("starting", kind=kind)
    run_service(main, name=service_name(settings, kind))

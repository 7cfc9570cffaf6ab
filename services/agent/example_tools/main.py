"""Builds the example ToolService process from LLMMESH_* settings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field

from llmmesh.v1 import tool_service_pb2_grpc
from services.agent.example_tools.servicer import TOOLS, ExampleToolServicer
from services.common.auth import AllowedClientsInterceptor
from services.common.logs import configure_logging
from services.common.server import MeshServer, check_can_listen, run_service
from services.common.settings import ConfigError, ServiceSettings, load_settings, settings_help
from services.common.tls import TLSSettings, server_credentials

if TYPE_CHECKING:
    from services.common.consul_discovery.registration import RegistrationSettings

SERVICE_NAME = "llmmesh-tool"
TOOL_SERVICE = "llmmesh.v1.ToolService"
DEFAULT_PORT = 50070


class ExampleToolSettings(ServiceSettings, TLSSettings):
    """Example tool process settings."""

    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    tool_events_file: str = Field("", description="Append a JSON line per call event here (tests).")
    tool_require_caller: bool = Field(
        False, description="Refuse calls without llmmesh-tenant and llmmesh-agent-run-id metadata."
    )
    tool_allowed_tenants: str = Field(
        "", description="Comma-separated tenants that may call; empty: any (a set list implies require_caller)."
    )

    tool_allowed_clients: str = Field(
        "",
        description="Comma-separated client certificate CN/SAN names allowed to call (mTLS, e.g. llmmesh-agent); "
        "empty: not checked.",
    )

    @property
    def allowed_tenants(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.tool_allowed_tenants.split(",") if name.strip())


def main(argv: Sequence[str] | None = None) -> None:
    _parser().parse_args(argv)  # only --help: everything else is LLMMESH_* settings
    # Imported here: the agent's Deployment (which ships this package) must not be
    # asked for registration settings it never reads.
    from services.common.consul_discovery.registration import ConsulRegistration, RegistrationSettings

    try:
        settings = load_settings(ExampleToolSettings)
        configure_logging(SERVICE_NAME, settings.log_level, settings.log_format)
        check_can_listen(settings.host, settings.port)
        registration_settings = load_settings(RegistrationSettings)
        credentials = server_credentials(settings, extra_client_ca=_consul_agent_ca(settings, registration_settings))
    except ConfigError as error:
        print(f"{SERVICE_NAME}: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def serve() -> None:
        allowed = frozenset(name.strip() for name in settings.tool_allowed_clients.split(",") if name.strip())
        interceptors = (
            [AllowedClientsInterceptor(allowed, setting="LLMMESH_TOOL_ALLOWED_CLIENTS", service=SERVICE_NAME)]
            if allowed
            else []
        )
        server = MeshServer(SERVICE_NAME, settings, interceptors=interceptors, credentials=credentials)
        servicer = ExampleToolServicer(
            events_file=settings.tool_events_file,
            require_caller=settings.tool_require_caller,
            allowed_tenants=settings.allowed_tenants,
        )
        server.add_service(tool_service_pb2_grpc.add_ToolServiceServicer_to_server, servicer, TOOL_SERVICE)
        if registration_settings.discovery == "consul":
            # Agents find tool services they were not configured with: service llmmesh-tool, Meta tools.
            ConsulRegistration.for_tools(
                SERVICE_NAME, tools=sorted(TOOLS), health_service=TOOL_SERVICE, settings=registration_settings
            ).attach(server)
        await server.serve_until_signal()

    run_service(serve, name=SERVICE_NAME)


def _consul_agent_ca(settings: ExampleToolSettings, registration: RegistrationSettings) -> tuple[str, str]:
    """As for adapters: the Consul agents' CA passes their TLS health checks, and only those."""
    if registration.consul_agent_ca_file and not settings.tool_allowed_clients:
        raise ConfigError(
            "LLMMESH_CONSUL_AGENT_CA_FILE lets Consul agents' certificates through TLS: set "
            "LLMMESH_TOOL_ALLOWED_CLIENTS (e.g. llmmesh-agent) so they reach the health service only"
        )
    return "LLMMESH_CONSUL_AGENT_CA_FILE", registration.consul_agent_ca_file


def _parser() -> argparse.ArgumentParser:
    from services.common.consul_discovery.registration import RegistrationSettings

    return argparse.ArgumentParser(
        prog="python -m services.agent.example_tools",
        description=f"An example ToolService ({', '.join(sorted(TOOLS))}) for the agent's remote tools: "
        "give its address to `llmmesh up --tool`, or let it register in Consul (LLMMESH_DISCOVERY=consul).",
        epilog=settings_help([ExampleToolSettings, RegistrationSettings]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

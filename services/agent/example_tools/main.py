"""Builds the example ToolService process from LLMMESH_* settings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import Field

from llmmesh.v1 import tool_service_pb2_grpc
from services.agent.example_tools.servicer import TOOLS, ExampleToolServicer
from services.common.logs import configure_logging
from services.common.server import MeshServer, check_can_listen, run_service
from services.common.settings import ConfigError, ServiceSettings, load_settings, settings_help

SERVICE_NAME = "llmmesh-tool"
TOOL_SERVICE = "llmmesh.v1.ToolService"
DEFAULT_PORT = 50070


class ExampleToolSettings(ServiceSettings):
    """Example tool process settings."""

    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    tool_events_file: str = Field("", description="Append a JSON line per call event here (tests).")
    tool_require_caller: bool = Field(
        False, description="Refuse calls without llmmesh-tenant and llmmesh-agent-run-id metadata."
    )
    tool_allowed_tenants: str = Field(
        "", description="Comma-separated tenants that may call; empty: any (a set list implies require_caller)."
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
    except ConfigError as error:
        print(f"{SERVICE_NAME}: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def serve() -> None:
        server = MeshServer(SERVICE_NAME, settings)
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


def _parser() -> argparse.ArgumentParser:
    from services.common.consul_discovery.registration import RegistrationSettings

    return argparse.ArgumentParser(
        prog="python -m services.agent.example_tools",
        description=f"An example ToolService ({', '.join(sorted(TOOLS))}) for the agent's remote tools: "
        "give its address to `llmmesh up --tool`, or let it register in Consul (LLMMESH_DISCOVERY=consul).",
        epilog=settings_help([ExampleToolSettings, RegistrationSettings]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

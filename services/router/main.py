"""The router process: routing file + discovery + balancer + RouterService."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field, field_validator

from llmmesh.v1 import router_service_pb2_grpc
from services.common.discovery import Discovery, StaticDiscovery, StaticFile
from services.common.logs import configure_logging
from services.common.server import MeshServer, run_service
from services.common.settings import ConfigError, ServiceSettings, load_settings
from services.common.yamlconfig import load_packaged_yaml_model, load_yaml_model
from services.router.balancer import Balancer
from services.router.config import RoutingFile, RoutingTable
from services.router.engine import RouterEngine
from services.router.http_gateway import HttpGateway
from services.router.servicer import RouterServicer

SERVICE_NAME = "llmmesh-router"
ROUTER_SERVICE = "llmmesh.v1.RouterService"
_DEFAULTS = "services.router.defaults"


class RouterSettings(ServiceSettings):
    """Router process settings (LLMMESH_*)."""

    routing_file: str = Field("", description="Routing YAML; empty: the embedded default.")
    discovery: Literal["static", "consul"] = "static"
    static_discovery_file: str = Field("", description="Static endpoints YAML; empty: the embedded default.")
    default_deadline_seconds: float = Field(120.0, gt=0, le=3600, description="For callers that set no deadline.")
    http_port: int | None = Field(
        None, ge=0, le=65535, description="OpenAI-compatible HTTP port; unset or empty: off; 0 picks a free one."
    )
    http_host: str = Field("", description="HTTP bind address; empty: LLMMESH_HOST.")

    @field_validator("http_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        # Manifests list every variable the code reads; an empty value keeps the HTTP door off.
        return None if value == "" else value


def load_routing(settings: RouterSettings) -> RoutingTable:
    routing = (
        load_yaml_model(RoutingFile, settings.routing_file)
        if settings.routing_file
        else load_packaged_yaml_model(RoutingFile, _DEFAULTS, "routing.yaml")
    )
    return RoutingTable(routing)


def build_discovery(settings: RouterSettings) -> Discovery:
    if settings.discovery == "consul":
        raise ConfigError("LLMMESH_DISCOVERY=consul is not available in this build; use static")
    if settings.static_discovery_file:
        return StaticDiscovery.from_file(settings.static_discovery_file)
    return StaticDiscovery(load_packaged_yaml_model(StaticFile, _DEFAULTS, "static.yaml"))


def main() -> None:
    try:
        settings = load_settings(RouterSettings)
        configure_logging(SERVICE_NAME, settings.log_level, settings.log_format)
        table = load_routing(settings)
        discovery = build_discovery(settings)
    except ConfigError as error:
        print(f"{SERVICE_NAME}: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def serve() -> None:
        balancer = Balancer(discovery)
        await discovery.watch(table.services())
        server = MeshServer(SERVICE_NAME, settings)
        engine = RouterEngine(table, balancer)
        servicer = RouterServicer(engine, balancer, default_deadline_seconds=settings.default_deadline_seconds)
        server.add_service(router_service_pb2_grpc.add_RouterServiceServicer_to_server, servicer, ROUTER_SERVICE)
        if settings.http_port is not None:
            gateway = HttpGateway(
                engine,
                balancer,
                default_deadline_seconds=settings.default_deadline_seconds,
                grace_seconds=settings.grace_seconds,
                drain_seconds=settings.drain_seconds,
            )
            await gateway.start(settings.http_host or settings.host, settings.http_port)
            server.before_stop(gateway.begin_shutdown)
            # Before the balancer closes: in-flight HTTP requests still need their adapter channels.
            server.after_stop(gateway.wait_stopped)
        server.before_stop(discovery.close)
        server.after_stop(balancer.close)
        await server.serve_until_signal()

    run_service(serve)

"""The router process: routing file + discovery + balancer + RouterService."""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

import grpc
import structlog
from grpc_health.v1 import health_pb2
from pydantic import Field, SecretStr, field_validator
from starlette.requests import Request

from llmmesh.v1 import router_service_pb2_grpc
from services.common.auth import caller_interceptors, current_tenant, internal_metadata
from services.common.channels import aio_channel
from services.common.discovery import Discovery, StaticDiscovery, StaticFile
from services.common.logs import configure_logging
from services.common.server import MeshServer, check_can_listen, run_service
from services.common.settings import ConfigError, ServiceSettings, load_settings
from services.common.tenants import KeyStore
from services.common.tls import TLSSettings, channel_security, server_credentials
from services.common.validation import InputLimits
from services.common.yamlconfig import load_packaged_yaml_model, load_yaml_model
from services.router.admission import Admission
from services.router.balancer import Balancer, EjectionPolicy
from services.router.config import RoutingFile, RoutingTable
from services.router.cors import CorsSettings
from services.router.engine import RouterEngine
from services.router.http_gateway import Authorize, HttpGateway
from services.router.http_limits import HttpDoorLimits
from services.router.metrics import register as register_metrics
from services.router.metrics import router_metrics
from services.router.quotas import STORE_HEALTH_SERVICE, QuotaGate, QuotaSettings
from services.router.served import RequestTelemetryInterceptor
from services.router.servicer import RouterServicer
from services.router.sse_keepalive import StreamKeepaliveSettings

SERVICE_NAME = "llmmesh-router"
ROUTER_SERVICE = "llmmesh.v1.RouterService"
# A health service name of its own: NOT_SERVING while discovery is stale. The
# router itself stays SERVING then (it routes from its last good table), so a
# Consul blip does not take every router out of its load balancer at once.
DISCOVERY_HEALTH = "llmmesh.discovery"
_DEFAULTS = "services.router.defaults"
# Where `llmmesh chat`, MeshClient and the agent look for the router by default.
DEFAULT_PORT = 50051
_HTTP_SETTINGS = ("LLMMESH_HTTP_PORT", "LLMMESH_HTTP_HOST")

log = structlog.get_logger(__name__)


class RouterSettings(
    ServiceSettings, TLSSettings, QuotaSettings, InputLimits, HttpDoorLimits, CorsSettings, StreamKeepaliveSettings
):
    """Router process settings (LLMMESH_*)."""

    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    routing_file: str = Field("", description="Routing YAML; empty: the embedded default.")
    auth_file: str = Field("", description="Tenants YAML (key hashes, allowed models, limits); empty: auth off.")
    internal_token: SecretStr = Field(
        SecretStr(""), description="Sent to adapters on every call; the same value as theirs. Empty: none sent."
    )
    discovery: Literal["static", "consul"] = "static"
    static_discovery_file: str = Field("", description="Static endpoints YAML; empty: the embedded default.")
    default_deadline_seconds: float = Field(120.0, gt=0, le=3600, description="For callers that set no deadline.")
    eject_after_failures: int = Field(3, ge=1, le=1000, description="Connection failures in a row that eject.")
    eject_base_seconds: float = Field(5.0, gt=0, le=3600, description="First ejection; doubles while it repeats.")
    eject_max_seconds: float = Field(120.0, gt=0, le=86400, description="Longest ejection.")

    http_port: int | None = Field(
        None, ge=0, le=65535, description="OpenAI-compatible HTTP port; unset or empty: off; 0 picks a free one."
    )
    http_host: str = Field("", description="HTTP bind address; empty: LLMMESH_HOST.")
    access_log: bool = Field(
        False,
        description="One structured log line per request at either door (tenant, models, provider, code, latency, tokens; no content).",
    )

    @field_validator("http_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        # Manifests list every variable the code reads; an empty value keeps the HTTP door off.
        return None if value == "" else value

    @property
    def ejection(self) -> EjectionPolicy:
        return EjectionPolicy(self.eject_after_failures, self.eject_base_seconds, self.eject_max_seconds)


def load_routing(settings: RouterSettings) -> RoutingTable:
    routing = (
        load_yaml_model(RoutingFile, settings.routing_file)
        if settings.routing_file
        else load_packaged_yaml_model(RoutingFile, _DEFAULTS, "routing.yaml")
    )
    return RoutingTable(routing)


def build_discovery(settings: RouterSettings) -> Discovery:
    if settings.discovery == "consul":
        from services.common.consul_discovery.watch import ConsulDiscovery, WatchSettings  # only when used

        return ConsulDiscovery(load_settings(WatchSettings))
    if settings.static_discovery_file:
        return StaticDiscovery.from_file(settings.static_discovery_file)
    return StaticDiscovery(load_packaged_yaml_model(StaticFile, _DEFAULTS, "static.yaml"))


def _http_authorizer(keys: KeyStore | None) -> Authorize | None:
    """The HTTP door checks the same tenant keys (Authorization: Bearer); quotas are in the shared Admission."""
    if keys is None:
        return None

    async def authorize(request: Request) -> None:
        current_tenant.set(keys.authenticate(request.headers.get("authorization")))

    return authorize


def main() -> None:
    try:
        settings = load_settings(RouterSettings)
        configure_logging(SERVICE_NAME, settings.log_level, settings.log_format)
        table = load_routing(settings)
        discovery = build_discovery(settings)
        keys = KeyStore.from_file(settings.auth_file) if settings.auth_file else None
        credentials = server_credentials(settings)
        upstream = channel_security(settings)
        # Last of the checks, before anything starts or logs: a busy port is a common first mistake.
        check_can_listen(settings.host, settings.port)
        if settings.http_port:
            check_can_listen(settings.http_host or settings.host, settings.http_port, *_HTTP_SETTINGS)
    except ConfigError as error:
        print(f"{SERVICE_NAME}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    to_adapters = internal_metadata(settings.internal_token.get_secret_value())

    def adapter_channel(address: str) -> grpc.aio.Channel:
        return aio_channel(address, upstream, metadata=to_adapters)

    async def serve() -> None:
        balancer = Balancer(discovery, settings.ejection, channel_factory=adapter_channel)
        server = MeshServer(
            SERVICE_NAME,
            settings,
            # Request telemetry outside caller auth: refused keys are counted (and logged) too.
            interceptors=[RequestTelemetryInterceptor(table), *caller_interceptors(keys, service=SERVICE_NAME)],
            credentials=credentials,
        )
        _report_discovery_health(discovery, server)
        await discovery.watch(table.services())

        def on_store_change(up: bool) -> None:
            router_metrics().quota_store_up = up
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            asyncio.get_running_loop().create_task(server.health.set(STORE_HEALTH_SERVICE, status))

        quotas = QuotaGate.from_settings(settings, on_store_change) if keys is not None else None
        engine = RouterEngine(table, balancer)
        register_metrics(
            breakers=engine.breakers,
            discovery=discovery,
            services=table.services(),
            access_log=settings.access_log,
            quota_store_up=True if quotas is not None and quotas.mode == "shared" else None,
        )
        engine.margin.start()
        server.after_stop(engine.margin.stop)
        # One admission path for both doors: the same limits, quotas and usage records.
        admission = Admission(table, limits=settings, quotas=quotas)
        servicer = RouterServicer(
            engine, balancer, default_deadline_seconds=settings.default_deadline_seconds, admission=admission
        )
        server.add_service(router_service_pb2_grpc.add_RouterServiceServicer_to_server, servicer, ROUTER_SERVICE)
        if settings.http_port is not None:
            gateway = HttpGateway(
                engine,
                balancer,
                default_deadline_seconds=settings.default_deadline_seconds,
                grace_seconds=settings.grace_seconds,
                drain_seconds=settings.drain_seconds,
                authorize=_http_authorizer(keys),
                limits=settings,
                admission=admission,
                cors=settings,
                keepalive=settings,
            )
            await gateway.start(settings.http_host or settings.host, settings.http_port)
            server.ready_details["http_port"] = gateway.port
            server.before_stop(gateway.begin_shutdown)
            # Before the balancer closes: in-flight HTTP requests still need their adapter channels.
            server.after_stop(gateway.wait_stopped)
        server.before_stop(discovery.close)
        server.after_stop(balancer.close)
        if quotas is not None:
            server.after_stop(quotas.close)
            # First heartbeat now (health SERVING or NOT_SERVING), then a timer: no request needed.
            await quotas.start()
        log.info(
            "router security",
            callers="tenant keys" if keys is not None else "open (auth off)",
            adapters=upstream.description,
            internal_token="set" if to_adapters else "none",
            quotas=quotas.mode if quotas is not None else "off (no tenants)",
        )
        await server.serve_until_signal()

    run_service(serve, name=SERVICE_NAME)


def _report_discovery_health(discovery: Discovery, server: MeshServer) -> None:
    """Mirrors discovery freshness on the `llmmesh.discovery` health service and in the log."""
    log = structlog.get_logger(__name__)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_status(fresh: bool, detail: str) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if fresh else health_pb2.HealthCheckResponse.NOT_SERVING
        (log.info if fresh else log.warning)("discovery status", fresh=fresh, detail=detail)
        task = loop.create_task(server.health.set(DISCOVERY_HEALTH, status))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    discovery.on_status(on_status)

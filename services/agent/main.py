"""The agent process: profiles + tools (built-in and discovered) + the loop, served as AgentService."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field, SecretStr

from llmmesh.v1 import agent_service_pb2_grpc, router_service_pb2_grpc
from services.agent.loop import AgentLoop
from services.agent.metrics import register as register_agent_metrics
from services.agent.profiles import load_profiles
from services.agent.servicer import AgentServicer
from services.agent.tool_limits import DEFAULT_CONCURRENT, DEFAULT_PER_RUN, DEFAULT_PER_TURN, ToolLimits
from services.agent.tools import RemoteToolCatalog, ToolRegistry, builtin_tools
from services.common.auth import caller_interceptors
from services.common.channels import aio_channel
from services.common.discovery import Discovery, StaticDiscovery, StaticFile
from services.common.logs import configure_logging
from services.common.redaction import Redactor
from services.common.server import MeshServer, check_can_listen, run_service
from services.common.settings import ConfigError, ServiceSettings, load_settings
from services.common.tenants import KeyStore
from services.common.tls import TLSSettings, channel_security, server_credentials

SERVICE_NAME = "llmmesh-agent"
AGENT_SERVICE = "llmmesh.v1.AgentService"
# Where `llmmesh agent` looks for the agent by default.
DEFAULT_PORT = 50052


class AgentSettings(ServiceSettings, TLSSettings):
    """Agent process settings (LLMMESH_*)."""

    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    auth_file: str = Field("", description="Tenants YAML (key hashes); empty: auth off.")
    agent_router_key: SecretStr = Field(
        SecretStr(""), description="The agent's own router key, used only for callers that sent no credentials."
    )
    router_address: str = Field("127.0.0.1:50051", min_length=1, description="RouterService target.")
    agent_profiles: str = Field("", description="Profiles YAML; empty: the embedded default.")
    discovery: Literal["static", "consul"] = "static"
    static_discovery_file: str = Field(
        "", description="Static endpoints YAML listing `llmmesh-tool` instances; empty: no remote tools."
    )
    agent_tool_timeout_seconds: float = Field(30.0, gt=0, le=3600, description="Upper bound for one tool call.")
    agent_min_step_seconds: float = Field(
        0.5, ge=0, le=600, description="No step starts with less time left before the caller's deadline."
    )
    agent_default_deadline_seconds: float = Field(300.0, gt=0, le=86400, description="For callers without one.")
    agent_tool_refresh_seconds: float = Field(30.0, gt=0, le=86400, description="How often remote tools are listed.")
    agent_max_tool_calls_per_turn: int = Field(
        DEFAULT_PER_TURN, ge=1, le=1000, description="Default and ceiling: tool calls run from one model turn."
    )
    agent_max_tool_calls_per_run: int = Field(
        DEFAULT_PER_RUN, ge=1, le=100_000, description="Default and ceiling: tool calls run over one run."
    )
    agent_max_concurrent_tool_calls: int = Field(
        DEFAULT_CONCURRENT, ge=1, le=256, description="Default and ceiling: a run's tool calls running at once."
    )

    @property
    def tool_limits(self) -> ToolLimits:
        return ToolLimits(
            per_turn=self.agent_max_tool_calls_per_turn,
            per_run=self.agent_max_tool_calls_per_run,
            concurrent=self.agent_max_concurrent_tool_calls,
        )


def build_discovery(settings: AgentSettings) -> Discovery:
    if settings.discovery == "consul":
        from services.common.consul_discovery.watch import ConsulDiscovery, WatchSettings  # only when used

        return ConsulDiscovery(load_settings(WatchSettings))
    if settings.static_discovery_file:
        return StaticDiscovery.from_file(settings.static_discovery_file)
    return StaticDiscovery(StaticFile())


def main() -> None:
    try:
        settings = load_settings(AgentSettings)
        configure_logging(SERVICE_NAME, settings.log_level, settings.log_format)
        profiles = load_profiles(settings.agent_profiles)
        discovery = build_discovery(settings)
        keys = KeyStore.from_file(settings.auth_file) if settings.auth_file else None
        credentials = server_credentials(settings)
        outbound = channel_security(settings)
        check_can_listen(settings.host, settings.port)
    except ConfigError as error:
        print(f"{SERVICE_NAME}: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    async def serve() -> None:
        remote = RemoteToolCatalog(discovery, refresh_seconds=settings.agent_tool_refresh_seconds, security=outbound)
        await remote.start()
        router_channel = aio_channel(settings.router_address, outbound)
        loop = AgentLoop(
            router_service_pb2_grpc.RouterServiceStub(router_channel),
            tool_timeout_seconds=settings.agent_tool_timeout_seconds,
            min_step_seconds=settings.agent_min_step_seconds,
            redactor=Redactor([settings.agent_router_key.get_secret_value()]),
        )
        servicer = AgentServicer(
            loop,
            profiles,
            ToolRegistry(builtin_tools(), remote),
            default_deadline_seconds=settings.agent_default_deadline_seconds,
            router_key=settings.agent_router_key.get_secret_value(),
            tool_limits=settings.tool_limits,
        )
        server = MeshServer(
            SERVICE_NAME,
            settings,
            interceptors=caller_interceptors(keys, service=SERVICE_NAME),
            credentials=credentials,
        )
        register_agent_metrics()
        server.add_service(agent_service_pb2_grpc.add_AgentServiceServicer_to_server, servicer, AGENT_SERVICE)
        server.before_stop(discovery.close)
        server.after_stop(remote.close)
        server.after_stop(router_channel.close)
        await server.serve_until_signal()

    run_service(serve, name=SERVICE_NAME)

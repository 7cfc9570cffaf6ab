"""Register this process in Consul, keep it registered, and leave first on shutdown.

One Consul service per provider instance kind (`llmmesh-provider-<name>`,
tag `llmmesh-provider`, Meta `provider` and `models`) or tool service (tag
`llmmesh-tool`, Meta `tools`), with a gRPC health check on the process's own
grpc.health.v1 endpoint. Consul starts every check critical, so an instance
receives traffic only once Consul has seen it SERVING.

Lifecycle (hooked into MeshServer): register once serving; every
`consul_anti_entropy_seconds` ask the agent whether it still knows this
instance and register again on 404 (an agent restarted without persistent
state forgets its services); on SIGTERM deregister right after NOT_SERVING
and before the drain, so routers stop picking this instance while it still
answers the calls already on their way.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from collections.abc import Mapping, Sequence

import structlog
from consul.callback import CB
from consul.check import Check
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.consul_discovery.client import AsyncConsul, consul_client, go_duration
from services.common.server import MeshServer
from services.common.settings import ENV_PREFIX

log = structlog.get_logger(__name__)

PROVIDER_TAG = "llmmesh-provider"
TOOL_TAG = "llmmesh-tool"
# Consul refuses Meta values longer than this.
META_VALUE_LIMIT = 512


class RegistrationSettings(BaseSettings):
    """LLMMESH_* settings of a process that registers itself (adapters, tool services)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    discovery: str = Field("static", pattern="^(static|consul)$", description="static (YAML file) or consul.")
    advertise_address: str = Field(
        "", description="Address registered in Consul; default: the bind host, or this host's IP when binding 0.0.0.0."
    )
    consul_check_interval_seconds: float = Field(10.0, gt=0, le=3600, description="gRPC health check interval.")
    consul_check_timeout_seconds: float = Field(5.0, gt=0, le=600, description="gRPC health check timeout.")
    consul_deregister_after_seconds: float = Field(
        60.0, ge=0, le=86400, description="DeregisterCriticalServiceAfter; Consul enforces at least 60 s. 0: never."
    )
    consul_anti_entropy_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often an instance checks that the agent still knows it."
    )
    consul_timeout_seconds: float = Field(5.0, gt=0, le=600, description="Timeout of each registration call.")


def advertise_address(settings: RegistrationSettings, bind_host: str) -> str:
    """The address other processes reach us at: the setting, the bind host, or this host's IP on a wildcard bind."""
    if settings.advertise_address:
        return settings.advertise_address
    if bind_host in ("0.0.0.0", "::", ""):
        return socket.gethostbyname(socket.gethostname())
    return bind_host


def instance_id(service: str, address: str, port: int) -> str:
    """Unique per process: `<service>-<address>-<port>-<random>` (a restart on the same port is a new instance)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", f"{service}-{address}-{port}-{secrets.token_hex(3)}")


def meta_list(key: str, names: Sequence[str]) -> str:
    """A comma list that fits Consul's Meta value limit; names that do not fit are dropped with a warning."""
    kept: list[str] = []
    for name in names:
        if len(",".join([*kept, name])) > META_VALUE_LIMIT:
            log.warning("consul meta value too long; list truncated", key=key, kept=len(kept), total=len(names))
            break
        kept.append(name)
    return ",".join(kept)


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class ConsulRegistration:
    """One registered instance: register, keep registered, deregister."""

    def __init__(
        self,
        service: str,
        *,
        tags: Sequence[str],
        meta: Mapping[str, str],
        health_service: str,
        settings: RegistrationSettings,
        consul: AsyncConsul | None = None,
    ) -> None:
        self.service = service
        self.tags = list(tags)
        self.meta = dict(meta)
        self.health_service = health_service
        self.settings = settings
        self.instance_id = ""
        self.address = ""
        self.port = 0
        self._consul = consul or consul_client(settings.consul_timeout_seconds)
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    def for_provider(
        cls, service: str, *, kind: str, models: Sequence[str], health_service: str, settings: RegistrationSettings
    ) -> ConsulRegistration:
        return cls(
            service,
            tags=[PROVIDER_TAG],
            meta={"provider": kind, "models": meta_list("models", models)},
            health_service=health_service,
            settings=settings,
        )

    @classmethod
    def for_tools(
        cls, service: str, *, tools: Sequence[str], health_service: str, settings: RegistrationSettings
    ) -> ConsulRegistration:
        return cls(
            service,
            tags=[TOOL_TAG],
            meta={"tools": meta_list("tools", tools)},
            health_service=health_service,
            settings=settings,
        )

    def attach(self, server: MeshServer) -> None:
        """Registers once `server` serves and deregisters when it starts shutting down."""

        async def register_server() -> None:
            await self.start(advertise_address(self.settings, server.settings.host), server.port)

        server.after_start(register_server)
        server.before_stop(self.stop)

    async def start(self, address: str, port: int) -> None:
        """Registers (a failure is logged and retried by the anti-entropy loop) and starts that loop."""
        self.address, self.port = address, port
        self.instance_id = instance_id(self.service, address, port)
        try:
            await self._register()
        except Exception as error:  # noqa: BLE001 - serving goes on; the anti-entropy loop retries
            log.warning("consul registration failed; will retry", consul=self._consul.address, error=_describe(error))
        self._keeper = asyncio.get_running_loop().create_task(self._keep_registered())

    async def stop(self) -> None:
        """Stops the anti-entropy loop and deregisters; bounded by the Consul call timeout."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        try:
            if self.instance_id:
                known = await self._consul.agent.service.deregister(self.instance_id)
                log.info("consul deregistered", instance_id=self.instance_id, was_registered=known)
        except Exception as error:  # noqa: BLE001 - shutdown goes on; deregister-critical-after cleans up
            log.warning("consul deregistration failed", instance_id=self.instance_id, error=_describe(error))
        finally:
            await self._consul.aclose()

    async def _register(self) -> None:
        settings = self.settings
        check = Check.grpc(
            f"{_host_port(self.address, self.port)}/{self.health_service}",
            go_duration(settings.consul_check_interval_seconds),
            timeout=go_duration(settings.consul_check_timeout_seconds),
            deregister=go_duration(settings.consul_deregister_after_seconds)
            if settings.consul_deregister_after_seconds
            else None,
        )
        check["name"] = f"{self.service} gRPC health"
        await self._consul.agent.service.register(
            self.service,
            service_id=self.instance_id,
            address=self.address,
            port=self.port,
            tags=self.tags,
            meta=self.meta,
            check=check,
            replace_existing_checks=True,
        )
        log.info(
            "consul registered",
            instance_id=self.instance_id,
            address=_host_port(self.address, self.port),
            consul=self._consul.address,
            check_interval=check["interval"],
        )

    async def _known_to_agent(self) -> bool:
        # agent.service_definition() sends no ACL token; this is the same GET with one.
        definition = await self._consul.http.get(
            CB.json(), f"/v1/agent/service/{self.instance_id}", headers=self._consul.prepare_headers()
        )
        return definition is not None

    async def _keep_registered(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.settings.consul_anti_entropy_seconds)
            try:
                if not await self._known_to_agent():
                    log.warning("consul agent does not know this instance (restarted?); registering again")
                    await self._register()
            except Exception as error:  # noqa: BLE001 - Consul may be away for a while; keep trying
                if not failing:
                    log.warning("consul unreachable from anti-entropy loop", error=_describe(error))
                failing = True
                continue
            if failing:
                log.info("consul reachable again", instance_id=self.instance_id)
            failing = False


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]

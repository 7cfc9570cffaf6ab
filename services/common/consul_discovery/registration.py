"""Register this process in Consul, keep it registered, and leave first on shutdown.

One Consul service per provider instance kind (`llmmesh-provider-<name>`,
tag `llmmesh-provider`, Meta `provider` and `models`) or tool service (tag
`llmmesh-tool`, Meta `tools`), with a gRPC health check on the process's own
grpc.health.v1 endpoint. Consul starts every check critical, so an instance
receives traffic only once Consul has seen it SERVING.

Service IDs are stable per pod and port: `<service>-<pod>-<port>`, the pod
from LLMMESH_POD_NAME (Kubernetes downward API, metadata.name), else the
host name. A container restarted in place registers the same ID again and so
replaces its old entry; on start, any other entry of this agent for the same
service, address and port (a dead pod whose IP and port this one reuses, or
an ID from an older scheme) is deregistered first, because Consul's check
would find this process serving there and keep the stale entry passing.

When the process serves TLS, the check does too (GRPCUseTLS), with
TLSServerName from LLMMESH_CONSUL_CHECK_TLS_SERVER_NAME (Consul dials the
registered IP, which certificates rarely carry). Consul verifies the
certificate and presents its own client certificate only with
`enable_agent_tls_for_checks = true` in the agent's configuration: see the
README, "Consul in production".

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
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from consul.callback import CB
from consul.check import Check

from services.common.consul_discovery.client import AsyncConsul, consul_client, go_duration
from services.common.consul_discovery.registration_settings import RegistrationSettings
from services.common.server import MeshServer

log = structlog.get_logger(__name__)

PROVIDER_TAG = "llmmesh-provider"
TOOL_TAG = "llmmesh-tool"
# Consul refuses Meta values longer than this many bytes (Go's len of the UTF-8 string).
META_VALUE_LIMIT = 512


def advertise_address(settings: RegistrationSettings, bind_host: str) -> str:
    """The address other processes reach us at: the setting, the bind host, or this host's IP on a wildcard bind."""
    if settings.advertise_address:
        return settings.advertise_address
    if bind_host in ("0.0.0.0", "::", ""):
        return socket.gethostbyname(socket.gethostname())
    return bind_host


def instance_id(service: str, pod: str, port: int) -> str:
    """Stable per pod and port: `<service>-<pod>-<port>` (a restart in place replaces its own entry)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", f"{service}-{pod or socket.gethostname()}-{port}")


def meta_list(key: str, names: Sequence[str]) -> str:
    """A comma list that fits Consul's Meta value limit in bytes; names that do not fit are dropped with a warning."""
    kept: list[str] = []
    for name in names:
        if len(",".join([*kept, name]).encode()) > META_VALUE_LIMIT:
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
        #: The process serves TLS, so Consul's check must too (GRPCUseTLS).
        self.serves_tls = False
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
            self.serves_tls = server.serves_tls
            await self.start(advertise_address(self.settings, server.settings.host), server.port)

        server.after_start(register_server)
        server.before_stop(self.stop)

    async def start(self, address: str, port: int) -> None:
        """Registers (a failure is logged and retried by the anti-entropy loop) and starts that loop."""
        self.address, self.port = address, port
        self.instance_id = instance_id(self.service, self.settings.pod_name, port)
        try:
            await self._remove_stale_entries()
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

    def _check(self) -> dict[str, Any]:
        """The gRPC health check, over TLS when this process serves TLS."""
        settings = self.settings
        check: dict[str, Any] = Check.grpc(
            f"{_host_port(self.address, self.port)}/{self.health_service}",
            go_duration(settings.consul_check_interval_seconds),
            timeout=go_duration(settings.consul_check_timeout_seconds),
            deregister=go_duration(settings.consul_deregister_after_seconds)
            if settings.consul_deregister_after_seconds
            else None,
        )
        check["name"] = f"{self.service} gRPC health"
        if self.serves_tls:
            # Consul's own field names (py-consul's snake_case spellings rely on Consul translating them).
            check["GRPCUseTLS"] = True
            check["TLSSkipVerify"] = settings.consul_check_tls_skip_verify
            if settings.consul_check_tls_server_name:
                check["TLSServerName"] = settings.consul_check_tls_server_name
        return check

    async def _register(self) -> None:
        check = self._check()
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
            check_tls=self.serves_tls,
        )

    async def _remove_stale_entries(self) -> None:
        """Deregisters this agent's other entries of this service at our address and port."""
        known = await self._consul.agent.services() or {}
        for service_id, entry in known.items():
            if service_id == self.instance_id or not isinstance(entry, Mapping):
                continue
            if (entry.get("Service"), entry.get("Address"), entry.get("Port")) == (
                self.service,
                self.address,
                self.port,
            ):
                await self._consul.agent.service.deregister(service_id)
                log.info("consul stale entry at our address removed", stale_id=service_id, instance_id=self.instance_id)

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
                    await self._remove_stale_entries()
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

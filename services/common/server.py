"""The gRPC server bootstrap every llmmesh service shares.

`MeshServer` wires a grpc.aio server with the library health servicer and
reflection, binds (port 0 picks a free port and `start` returns it), and shuts
down in the order docs/architecture.md describes: NOT_SERVING → shutdown hooks (e.g.
deregister from discovery) → drain delay → stop accepting and let in-flight
calls finish within the grace period → cleanup hooks (close channels, flush
telemetry).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.interceptors import DecodeGuardInterceptor
from services.common.reflection import enable_reflection
from services.common.settings import ConfigError, ServiceSettings, listen_error
from services.common.telemetry import setup_telemetry
from services.common.telemetry_grpc import ServerTracingInterceptor
from services.common.tls import is_loopback

log = structlog.get_logger(__name__)

Hook = Callable[[], Awaitable[None]]

# Large enough for multi-image requests; the router enforces tighter input limits.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

SERVER_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
)


def connection_age_options(settings: ServiceSettings) -> tuple[tuple[str, int], ...]:
    """max_connection_age (+ grace): each client connection gets GOAWAY after the age and reconnects.

    Callers' long-lived channels would otherwise stay on the server they first
    reached forever, so servers the autoscaler adds get no traffic from them;
    on reconnect, DNS and the Service pick again. Calls in flight on the old
    connection get the grace period to finish; 0 turns the age off.
    """
    if not settings.max_connection_age_seconds:
        return ()
    return (
        ("grpc.max_connection_age_ms", round(settings.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_seconds * 1000)),
    )


class MeshServer:
    """A grpc.aio server with health, reflection and graceful shutdown.

    `interceptors` run in order before every handler (auth goes here);
    `credentials` (services.common.tls.server_credentials) switch on TLS.
    """

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.health = health.aio.HealthServicer()
        self._credentials = credentials
        # Telemetry first: the interceptors and the servicers use the process's tracer. Tracing is
        # outermost so refused calls are traced too; the decode guard sits innermost, so an
        # unauthenticated caller learns nothing about decoding.
        self.telemetry = setup_telemetry(name)
        self._server = grpc.aio.server(
            options=(*SERVER_OPTIONS, *connection_age_options(settings)),
            interceptors=(ServerTracingInterceptor(), *interceptors, DecodeGuardInterceptor()),
        )
        self._service_names: list[str] = [health.SERVICE_NAME]
        self._after_start: list[Hook] = []
        self._before_stop: list[Hook] = []
        self._after_stop: list[Hook] = []
        self._stopping: asyncio.Task[None] | None = None
        self.port = 0
        # Extra facts for the ready file (e.g. the router's HTTP port), set before `start`.
        self.ready_details: dict[str, Any] = {}
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)

    @property
    def serves_tls(self) -> bool:
        """Whether the port is served with TLS (discovery registers its health check to match)."""
        return self._credentials is not None

    def add_service(self, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str) -> None:
        """Registers a servicer; `full_name` is its proto name, e.g. llmmesh.v1.RouterService."""
        add_to_server(servicer, self._server)
        self._service_names.append(full_name)

    def after_start(self, hook: Hook) -> None:
        """Runs once SERVING with `port` bound (e.g. register in discovery), before the ready file."""
        self._after_start.append(hook)

    def before_stop(self, hook: Hook) -> None:
        """Runs after NOT_SERVING, before the server stops accepting calls."""
        self._before_stop.append(hook)

    def after_stop(self, hook: Hook) -> None:
        """Runs once in-flight calls have finished or the grace period ran out."""
        self._after_stop.append(hook)

    async def start(self) -> int:
        """Binds, starts and marks every service SERVING; returns the bound port."""
        enable_reflection(self._service_names, self._server)
        address = f"{self.settings.host}:{self.settings.port}"
        check_can_listen(self.settings.host, self.settings.port)
        if self._credentials is None and not is_loopback(self.settings.host):
            log.warning(
                "PLAINTEXT on a non-loopback address: anyone on the network can read and forge calls; "
                "set LLMMESH_TLS_CERT_FILE and LLMMESH_TLS_KEY_FILE",
                address=address,
            )
        try:
            if self._credentials is not None:
                self.port = self._server.add_secure_port(address, self._credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind": the port was taken after the check above
            raise listen_error(address, OSError(errno.EADDRINUSE, "in use")) from None
        await self._server.start()
        for service in ("", *self._service_names[1:]):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            address=f"{self.settings.host}:{self.port}",
            services=self._service_names[1:],
            transport="tls" if self._credentials is not None else "plaintext",
        )
        for hook in self._after_start:
            await _run_hook(hook)
        if self.settings.ready_file:
            ready = {**self.ready_details, "port": self.port, "pid": os.getpid()}
            _write_atomically(Path(self.settings.ready_file), ready)
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown; safe to call more than once."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        log.info("shutting down", grace_seconds=self.settings.grace_seconds)
        await self.health.enter_graceful_shutdown()
        for hook in self._before_stop:
            await _run_hook(hook)
        if self.settings.drain_seconds:
            await asyncio.sleep(self.settings.drain_seconds)
        await self._server.stop(self.settings.grace_seconds)
        for hook in self._after_stop:
            await _run_hook(hook)
        # Last, so spans and metrics of the drain and of the hooks are exported too.
        await _run_hook(self.telemetry.shutdown)
        log.info("stopped")

    async def serve_until_signal(self) -> None:
        """Starts, then serves until SIGTERM or SIGINT, then shuts down gracefully."""
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop_requested.set)
        await self.start()
        await stop_requested.wait()
        await self.stop()


async def _run_hook(hook: Hook) -> None:
    try:
        await hook()
    except Exception as error:  # noqa: BLE001 - one failing hook must not skip the others or stop the server
        log.warning("lifecycle hook failed", hook=getattr(hook, "__qualname__", repr(hook)), error=repr(error))


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload))
    temporary.replace(path)


def check_can_listen(
    host: str, port: int, port_setting: str = "LLMMESH_PORT", host_setting: str = "LLMMESH_HOST"
) -> None:
    """Raises ConfigError naming the settings when host:port cannot be listened on (port 0 always can).

    Checked before grpc binds: grpc's own failure is a C-core log line plus a
    RuntimeError that names neither the cause nor the setting.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as error:
        raise listen_error(f"{host}:{port}", error, port_setting, host_setting) from None


def run_service(main: Callable[[], Coroutine[Any, Any, None]], *, name: str = "") -> None:
    """Runs a service's async main on uvloop when available; a ConfigError exits 2 with one line on stderr."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main())
    except ConfigError as error:
        print(f"{name}: {error}" if name else str(error), file=sys.stderr)
        raise SystemExit(2) from None

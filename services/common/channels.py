"""Client channels with the same limits and keepalive everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from services.common.server import MAX_MESSAGE_BYTES
from services.common.telemetry_grpc import client_interceptors
from services.common.tls import PLAINTEXT, ChannelSecurity

CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Keepalive finds dead peers (SIGKILLed pods, dropped NAT entries) between calls.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after an instance restarts; the router has other instances meanwhile.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.enable_retries", 0),
    # A DNS name with several addresses (a headless Kubernetes Service) spreads
    # calls over all of them instead of pinning the first (pick_first).
    ("grpc.lb_policy_name", "round_robin"),
)


def aio_channel(
    target: str,
    security: ChannelSecurity = PLAINTEXT,
    *,
    metadata: Sequence[tuple[str, str]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel carrying W3C trace context; gRPC's own retries off because the router owns retries.

    `security` (services.common.tls.channel_security) makes it TLS or mTLS;
    `metadata` is sent on every call (the router's internal token to adapters).
    """
    options = (*CHANNEL_OPTIONS, *security.options)
    # Trace context first; then the fixed metadata (the router's internal token).
    interceptors = [*client_interceptors(), *(_metadata_interceptors(tuple(metadata)) if metadata else ())]
    if security.credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, security.credentials, options=options, interceptors=interceptors)


class _AddMetadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds fixed metadata to every call, after the caller's own."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        names = {key for key, _ in self._metadata}
        kept = tuple((key, value) for key, value in (details.metadata or ()) if key not in names)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*kept, *self._metadata),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


def _metadata_interceptors(metadata: tuple[tuple[str, str], ...]) -> list[grpc.aio.ClientInterceptor]:
    return [_AddMetadata(metadata)]

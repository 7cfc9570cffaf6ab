"""Client channels with the same limits, keepalive and outgoing metadata everywhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from services.common.server import MAX_MESSAGE_BYTES
from services.common.telemetry_grpc import trace_metadata
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

MetadataRewrite = Callable[[Any], grpc.aio.Metadata | None]

_CALL_TYPES: tuple[type, ...] = (
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
)


def aio_channel(
    target: str,
    security: ChannelSecurity = PLAINTEXT,
    *,
    metadata: Sequence[tuple[str, str]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel carrying W3C trace context; gRPC's own retries off because the router owns retries.

    `security` (services.common.tls.channel_security) makes it TLS or mTLS;
    `metadata` is sent on every call of every type (the router's internal token to adapters).
    """
    options = (*CHANNEL_OPTIONS, *security.options)
    interceptors = metadata_interceptors(_outgoing_metadata(tuple(metadata)))
    target = dns_target(target)
    if security.credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, security.credentials, options=options, interceptors=interceptors)


def dns_target(target: str) -> str:
    """`host:port` as `dns:///host:port`: resolved again whenever the channel reconnects.

    Servers send GOAWAY after LLMMESH_MAX_CONNECTION_AGE_SECONDS; the channel
    then resolves the name afresh (a headless Service lists the pods ready
    now) and round_robin spreads calls over what it finds. Targets that name
    a scheme (unix:, ipv4:, dns://authority/...) are left as they are.
    """
    if target.startswith(("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")) or "://" in target:
        return target
    return f"dns:///{target}"


def metadata_interceptors(rewrite: MetadataRewrite) -> list[grpc.aio.ClientInterceptor]:
    """`rewrite` applied to the metadata of every call, whatever its type.

    grpc.aio files an interceptor object under the first call type it
    implements and never under the others (an if/elif chain in
    grpc/aio/_channel.py), so one object serving unary and streaming calls
    silently skips streams. Hence one object per call type, always all four.
    """
    interceptors = [_UnaryUnary(rewrite), _UnaryStream(rewrite), _StreamUnary(rewrite), _StreamStream(rewrite)]
    for interceptor in interceptors:
        check_single_call_type(interceptor)
    return interceptors


def check_single_call_type(interceptor: object) -> None:
    """Refuses an interceptor that grpc.aio would register for only one of the call types it implements."""
    kinds = [kind.__name__ for kind in _CALL_TYPES if isinstance(interceptor, kind)]
    if len(kinds) > 1:
        raise TypeError(
            f"{type(interceptor).__name__} implements {', '.join(kinds)}; grpc.aio would use it for "
            f"{kinds[0]} only: make one interceptor object per call type"
        )


def _outgoing_metadata(fixed: tuple[tuple[str, str], ...]) -> MetadataRewrite:
    """Trace context, then the fixed metadata in place of any the caller set under the same keys."""
    if not fixed:
        return trace_metadata
    names = frozenset(key for key, _ in fixed)

    def rewrite(metadata: Any) -> grpc.aio.Metadata:
        traced = trace_metadata(metadata) or ()
        return grpc.aio.Metadata(*((key, value) for key, value in traced if key not in names), *fixed)

    return rewrite


class _Rewriting:
    def __init__(self, rewrite: MetadataRewrite) -> None:
        self._rewrite = rewrite

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            self._rewrite(details.metadata),
            details.credentials,
            details.wait_for_ready,
        )


class _UnaryUnary(_Rewriting, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_Rewriting, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_Rewriting, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_Rewriting, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)

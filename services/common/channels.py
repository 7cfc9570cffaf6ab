"""Client channels with the same limits and keepalive everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from services.common.server import MAX_MESSAGE_BYTES

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


def aio_channel(target: str) -> grpc.aio.Channel:
    """An asyncio channel; gRPC's own retries off because the router owns retries."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)

"""Connections that rebalance: max_connection_age sends a long-lived channel elsewhere, calls in flight finish.

Two real adapter processes behind a TCP balancer that gives each new
connection to the next backend, as a Kubernetes ClusterIP does. One client
channel (services.common.channels, as every llmmesh caller builds it) sends
sequential calls: without max_connection_age its one connection would stay
on the first backend for ever; with it, the server sends GOAWAY, the channel
reconnects through the balancer and reaches the other backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from services.common.channels import aio_channel, dns_target
from services.common.processes import ServiceProcess, start_service
from services.testing.tcp_balancer import TcpBalancer

# Bounds of the load loop: requests and seconds, whichever ends first.
MAX_REQUESTS = 400
MAX_SECONDS = 30.0
SLOW_CALL_MS = 2500  # longer than the connection age: in flight when GOAWAY comes


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """Two mock adapters whose connections age after 1 s, with a 30 s grace for calls in flight."""
    workdir = tmp_path_factory.mktemp("age")
    env = {
        "LLMMESH_MAX_CONNECTION_AGE_SECONDS": "1",
        "LLMMESH_MAX_CONNECTION_AGE_GRACE_SECONDS": "30",
        "LLMMESH_MOCK_EVENTS_FILE": str(workdir / "events.jsonl"),
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = list(
            pool.map(
                lambda n: start_service(["-m", "services.providers.mock"], name=f"age-{n}", workdir=workdir, env=env),
                range(2),
            )
        )
    try:
        yield started
    finally:
        for process in started:
            process.terminate()


def _request(text: str, delay_ms: int = 0) -> ppb.ProviderServiceChatRequest:
    extensions = struct_pb2.Struct()
    if delay_ms:
        extensions.update({"mock": {"delay_ms": delay_ms}})
    return ppb.ProviderServiceChatRequest(
        model="mock-small",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])],
        extensions=extensions,
    )


def _served_by(events: Path) -> set[int]:
    lines = events.read_text().splitlines() if events.exists() else []
    return {json.loads(line)["pid"] for line in lines if json.loads(line)["event"] == "end"}


class TestConnectionAge:
    async def test_a_long_lived_channel_moves_to_the_other_server_and_calls_in_flight_finish(
        self, backends: list[ServiceProcess]
    ) -> None:
        """GOAWAY after the age: the channel reconnects to the second backend; no call fails, slow ones complete."""
        events = Path(backends[0].env["LLMMESH_MOCK_EVENTS_FILE"])
        async with TcpBalancer([b.address for b in backends]) as balancer:
            channel = aio_channel(balancer.address)
            stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
            try:
                await stub.Chat(_request("first"), timeout=10)
                slow_unary = asyncio.ensure_future(stub.Chat(_request("slow", SLOW_CALL_MS), timeout=30))
                slow_stream = stub.StreamChat(
                    ppb.ProviderServiceStreamChatRequest(**_fields(_request("slow stream", SLOW_CALL_MS))), timeout=30
                )
                sent, deadline = 0, time.monotonic() + MAX_SECONDS
                while _served_by(events) != {b.pid for b in backends}:
                    assert sent < MAX_REQUESTS, f"{sent} calls, all on {_served_by(events)}"
                    assert time.monotonic() < deadline, (
                        f"{sent} calls in {MAX_SECONDS:.0f}s, all on {_served_by(events)}"
                    )
                    await stub.Chat(_request(f"call {sent}"), timeout=10)
                    sent += 1
                    await asyncio.sleep(0.02)
                assert (await slow_unary).finish_reason == chat_pb2.FINISH_REASON_STOP
                chunks = [chunk async for chunk in slow_stream]
                assert chunks[-1].HasField("final")
            finally:
                await channel.close()
        assert sum(balancer.connections.values()) >= 2
        assert set(balancer.connections) == {b.address for b in backends}

    def test_targets_resolve_through_dns(self) -> None:
        """Plain host:port targets get the dns:/// scheme (re-resolved on reconnect); explicit schemes stay."""
        assert dns_target("llmmesh-router:50051") == "dns:///llmmesh-router:50051"
        assert dns_target("[::1]:50051") == "dns:///[::1]:50051"
        assert dns_target("unix:///run/llmmesh.sock") == "unix:///run/llmmesh.sock"
        assert dns_target("ipv4:127.0.0.1:1") == "ipv4:127.0.0.1:1"


def _fields(request: ppb.ProviderServiceChatRequest) -> dict[str, object]:
    """The chat request's fields, to build the stream request from (the two messages share their fields)."""
    return {field.name: value for field, value in request.ListFields()}


def test_connection_age_is_off_when_zero() -> None:
    """LLMMESH_MAX_CONNECTION_AGE_SECONDS=0 sets no option; the default sets age and grace in milliseconds."""
    from services.common.server import connection_age_options
    from services.common.settings import ServiceSettings

    assert connection_age_options(ServiceSettings(max_connection_age_seconds=0)) == ()
    assert dict(connection_age_options(ServiceSettings())) == {
        "grpc.max_connection_age_ms": 300_000,
        "grpc.max_connection_age_grace_ms": 300_000,
    }

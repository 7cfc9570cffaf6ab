"""Graceful shutdown of a real service process (the mock adapter, on the shared bootstrap)."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from services.common.processes import ServiceProcess, start_service


@pytest.fixture
def adapter(tmp_path) -> ServiceProcess:
    process = start_service(["-m", "services.providers.mock"], name="mock", workdir=tmp_path)
    yield process
    process.kill()


def _slow_request(delay_ms: int) -> ppb.ProviderServiceChatRequest:
    extensions = struct_pb2.Struct()
    extensions.update({"mock": {"delay_ms": delay_ms}})
    return ppb.ProviderServiceChatRequest(
        model="mock-small",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="slow one")])],
        extensions=extensions,
    )


class TestGracefulShutdown:
    async def test_health_goes_not_serving_on_sigterm(self, adapter: ServiceProcess) -> None:
        """Health Watch sees SERVING, then NOT_SERVING once SIGTERM arrives; the process exits 0."""
        async with grpc.aio.insecure_channel(adapter.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="llmmesh.v1.ProviderService"), timeout=10
            )
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            adapter.signal(signal.SIGTERM)
            second = await watch.read()
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
        assert await asyncio.to_thread(adapter.process.wait, 10) == 0

    async def test_in_flight_call_completes_and_new_calls_are_refused(self, adapter: ServiceProcess) -> None:
        """A call running when SIGTERM arrives still completes OK; a call started after it is refused."""
        async with grpc.aio.insecure_channel(adapter.address) as channel:
            stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
            in_flight = asyncio.ensure_future(stub.Chat(_slow_request(1200), timeout=10))
            await asyncio.sleep(0.4)
            adapter.signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Chat(_slow_request(0), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            response = await in_flight
        assert response.message.content[0].text == "[mock mock-small] slow one"
        assert await asyncio.to_thread(adapter.process.wait, 10) == 0

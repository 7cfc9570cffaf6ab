"""Server reflection v1 and v1alpha on a real service process (the shared bootstrap)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from services.common.processes import ServiceProcess, start_service
from services.common.reflection import V1_SERVICE_NAME, v1_message_classes

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_service(["-m", "services.providers.mock"], name="mock", workdir=tmp_path_factory.mktemp("refl"))
    yield process
    process.kill()


async def _ask(address: str, method: str, request: Any, response_type: type[Any]) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            method, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString
        )(iter([request]), timeout=10)
        async for answer in call:
            return answer
        raise AssertionError(f"{method} answered nothing")


class TestReflection:
    async def test_v1_lists_services(self, adapter: ServiceProcess) -> None:
        """A grpc.reflection.v1 client lists the provider service and both reflection services."""
        request_type, response_type = v1_message_classes()
        answer = await _ask(adapter.address, V1_METHOD, request_type(list_services=""), response_type)
        names = {service.name for service in answer.list_services_response.service}
        assert {"llmmesh.v1.ProviderService", V1_SERVICE_NAME, "grpc.reflection.v1alpha.ServerReflection"} <= names

    async def test_v1_describes_a_symbol(self, adapter: ServiceProcess) -> None:
        """v1 file_containing_symbol returns the file that defines the provider service."""
        request_type, response_type = v1_message_classes()
        request = request_type(file_containing_symbol="llmmesh.v1.ProviderService")
        answer = await _ask(adapter.address, V1_METHOD, request, response_type)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        assert "llmmesh/v1/provider_service.proto" in {file.name for file in files}

    async def test_v1_describes_itself(self, adapter: ServiceProcess) -> None:
        """The v1 reflection service's own descriptor is served (clients that describe it find it)."""
        request_type, response_type = v1_message_classes()
        answer = await _ask(
            adapter.address, V1_METHOD, request_type(file_containing_symbol=V1_SERVICE_NAME), response_type
        )
        proto = descriptor_pb2.FileDescriptorProto.FromString(answer.file_descriptor_response.file_descriptor_proto[0])
        assert proto.package == "grpc.reflection.v1"
        assert proto.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"

    async def test_v1alpha_still_served(self, adapter: ServiceProcess) -> None:
        """The v1alpha protocol keeps answering (older grpcurl and tools)."""
        request = v1alpha_pb2.ServerReflectionRequest(list_services="")
        answer = await _ask(adapter.address, V1ALPHA_METHOD, request, v1alpha_pb2.ServerReflectionResponse)
        assert "llmmesh.v1.ProviderService" in {service.name for service in answer.list_services_response.service}

    async def test_error_detail_types_resolve(self, adapter: ServiceProcess) -> None:
        """google.rpc.ErrorInfo (the errors' detail type) resolves over reflection, so grpcurl can print it."""
        request_type, response_type = v1_message_classes()
        request = request_type(file_containing_symbol="google.rpc.ErrorInfo")
        answer = await _ask(adapter.address, V1_METHOD, request, response_type)
        names = {
            descriptor_pb2.FileDescriptorProto.FromString(raw).name
            for raw in answer.file_descriptor_response.file_descriptor_proto
        }
        assert "google/rpc/error_details.proto" in names

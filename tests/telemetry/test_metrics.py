"""Metric points from the router and the adapter arrive over OTLP with the expected counts."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_names as names
from services.common.otlp_receiver import OtlpReceiver
from tests.telemetry.conftest import ADAPTER, ROUTER, TracedMesh

REQUESTS = 3


def _total(receiver: OtlpReceiver, metric: str, service: str, *, field: str = "value", **match: Any) -> float:
    """Sum over the latest cumulative points whose attributes include `match`."""
    return sum(
        getattr(point, field)
        for point in receiver.latest_points(metric, service)
        if all(point.attributes.get(key.replace("__", ".")) == value for key, value in match.items())
    )


def _request(model: str, **routing: Any) -> rpb.ChatRequest:
    return rpb.ChatRequest(
        model=model,
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="count me")])],
        routing=rpb.RoutingPolicy(**routing),
    )


class TestMetrics:
    async def test_attempts_tokens_durations_and_cost_are_counted(
        self, traced: TracedMesh, receiver: OtlpReceiver
    ) -> None:
        """N successful chats add N attempts, N duration points, N input and N output token points, and their cost."""
        async with grpc.aio.insecure_channel(traced.router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            responses = [await stub.Chat(_request("mock-metrics"), timeout=10) for _ in range(REQUESTS)]
        model = {names.GEN_AI_REQUEST_MODEL: "mock-metrics"}

        def arrived(r: OtlpReceiver) -> bool:
            attempts = _total(
                r,
                names.METRIC_ROUTER_ATTEMPTS,
                ROUTER,
                llmmesh__attempt__model="mock-metrics",
                llmmesh__attempt__outcome="succeeded",
            )
            usage = [
                p for p in r.latest_points(names.METRIC_TOKEN_USAGE, ADAPTER) if p.attributes.items() >= model.items()
            ]
            return attempts >= REQUESTS and sum(p.count for p in usage) >= 2 * REQUESTS

        receiver.wait_for(arrived)
        assert (
            _total(
                receiver,
                names.METRIC_ROUTER_ATTEMPTS,
                ROUTER,
                llmmesh__attempt__model="mock-metrics",
                llmmesh__attempt__code="OK",
            )
            == REQUESTS
        )
        input_points = [
            p
            for p in receiver.latest_points(names.METRIC_TOKEN_USAGE, ADAPTER)
            if p.attributes.get(names.GEN_AI_REQUEST_MODEL) == "mock-metrics"
            and p.attributes.get(names.GEN_AI_TOKEN_TYPE) == "input"
        ]
        assert sum(p.count for p in input_points) == REQUESTS
        assert sum(p.sum for p in input_points) == sum(r.usage.input_tokens for r in responses)
        durations = _total(
            receiver, names.METRIC_OPERATION_DURATION, ADAPTER, field="count", gen_ai__request__model="mock-metrics"
        )
        assert durations == REQUESTS
        served = _total(
            receiver,
            names.METRIC_SERVER_REQUEST_DURATION,
            ROUTER,
            field="count",
            gen_ai__request__model="mock-metrics",
            gen_ai__response__model="mock-metrics",
            llmmesh__code="OK",
        )
        assert served == REQUESTS
        cost = _total(receiver, names.METRIC_ROUTER_COST, ROUTER, gen_ai__request__model="mock-metrics")
        assert cost == pytest.approx(sum(r.estimated_cost_usd for r in responses))
        assert cost > 0

    async def test_fallbacks_failed_attempts_breakers_and_in_flight(
        self, traced: TracedMesh, receiver: OtlpReceiver
    ) -> None:
        """Two fallbacks count two failed UNAVAILABLE attempts and two fallbacks; breakers are gauged; nothing stays in flight."""
        async with grpc.aio.insecure_channel(traced.router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            for _ in range(2):
                await stub.Chat(_request("mock-down-2", max_retries=0), timeout=10)

        def fallbacks(r: OtlpReceiver) -> float:
            return _total(
                r,
                names.METRIC_ROUTER_FALLBACKS,
                ROUTER,
                llmmesh__fallback__from_model="mock-down-2",
                llmmesh__fallback__to_model="mock-metrics",
            )

        receiver.wait_for(lambda r: fallbacks(r) >= 2)
        assert fallbacks(receiver) == 2
        failed = _total(
            receiver,
            names.METRIC_ROUTER_ATTEMPTS,
            ROUTER,
            llmmesh__attempt__model="mock-down-2",
            llmmesh__attempt__outcome="failed",
            llmmesh__attempt__code="UNAVAILABLE",
        )
        assert failed == 2
        breakers = {
            (p.attributes[names.BREAKER_SCOPE], p.attributes.get(names.GEN_AI_REQUEST_MODEL)): p.value
            for p in receiver.latest_points(names.METRIC_ROUTER_BREAKER_STATE, ROUTER)
        }
        assert breakers["model", "mock-down-2"] == 0  # two failures: still closed
        assert _total(receiver, names.METRIC_ROUTER_IN_FLIGHT, ROUTER) == 0

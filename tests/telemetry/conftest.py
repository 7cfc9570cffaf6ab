"""Telemetry fixtures: a real OTLP receiver on loopback, and agent → router → mock adapter
as real processes exporting to it with short batch and metric intervals."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.otlp_receiver import OtlpReceiver, ReceivedSpan
from services.common.processes import ServiceProcess, start_service
from services.testing.mesh import MockMesh

AGENT = "llmmesh-agent"
ROUTER = "llmmesh-router"
ADAPTER = "llmmesh-provider-mock"

MOCK_CONFIG: dict[str, Any] = {
    "models": [
        {"name": "mock-agent", "scripted": True},
        {"name": "mock-small"},
        {"name": "mock-metrics"},
        {"name": "mock-down", "failures": [{"code": "UNAVAILABLE", "rate": 1, "message": "upstream 503"}]},
        {"name": "mock-down-2", "failures": [{"code": "UNAVAILABLE", "rate": 1, "message": "upstream 503"}]},
    ],
    "scripts": [
        {
            "match": "monthly",
            "turns": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1234 * 12"}}]},
                {"text": "The yearly total is {tool_results}."},
            ],
        },
        {"match": "", "turns": [{"text": "Scripted answer to: {question}"}]},
    ],
}
ROUTING: dict[str, Any] = {
    "providers": {"mock": {"kind": "mock"}},
    "models": {
        "mock-agent": {"provider": "mock"},
        "mock-small": {"provider": "mock", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "mock-metrics": {"provider": "mock", "price": {"input_per_mtok": 3.0, "output_per_mtok": 5.0}},
        "mock-down": {"provider": "mock", "fallbacks": ["mock-small"]},
        "mock-down-2": {"provider": "mock", "fallbacks": ["mock-metrics"]},
    },
}


def telemetry_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    """Children export to `receiver` at once (100 ms batches, 300 ms metric interval)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        **extra,
    }


class TracedMesh:
    """MockMesh (router + mock adapter) and an agent, all exporting to one receiver."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.mesh = MockMesh(mock_config=MOCK_CONFIG, routing=ROUTING, env=env, workdir=workdir)
        self.workdir = workdir
        self.env = env
        self.agent: ServiceProcess | None = None

    def start(self) -> TracedMesh:
        try:
            self.mesh.start()
            self.agent = start_service(
                ["-m", "services.agent"],
                name="agent",
                workdir=self.workdir,
                env={**self.env, "LLMMESH_ROUTER_ADDRESS": self.mesh.router_address},
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.terminate()
        self.mesh.stop()

    @property
    def router_address(self) -> str:
        return self.mesh.router_address

    @property
    def agent_address(self) -> str:
        assert self.agent is not None
        return self.agent.address


@pytest.fixture(scope="package")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture(scope="package")
def traced(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedMesh]:
    started = TracedMesh(tmp_path_factory.mktemp("traced"), telemetry_env(receiver)).start()
    try:
        yield started
    finally:
        started.stop()


def new_traceparent() -> tuple[str, str]:
    """A caller's W3C traceparent (sampled) and its trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


def spans_when(receiver: OtlpReceiver, trace_id: str, *, count: int, timeout: float = 15.0) -> list[ReceivedSpan]:
    """The trace's spans once at least `count` have arrived (the processes export on their own schedules)."""
    return receiver.wait_for(lambda r: (spans := r.spans(trace_id)) and len(spans) >= count and spans, timeout)


def by_service(spans: list[ReceivedSpan], service: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.service == service]

"""Telemetry setup from OTEL_* / LLMMESH_*, the SDK HTTP spans, Prometheus, and trace ids in logs."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from llmmesh.v1 import chat_pb2, provider_service_pb2_grpc
from llmmesh.v1 import provider_service_pb2 as ppb
from services.common import telemetry_names as names
from services.common.logs import add_trace_context
from services.common.otlp_receiver import OtlpReceiver
from services.common.processes import ServiceProcess, run_to_exit, start_service
from services.testing.fake_openai import FakeOpenAI, Reply, completion
from tests.telemetry.conftest import new_traceparent, spans_when, telemetry_env

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMMESH_"))}
PROBE = (
    "from services.common.telemetry import setup_telemetry; t = setup_telemetry('llmmesh-probe'); "
    "print(t.tracing, t.metering, type(t.tracer).__name__)"
)


def _probe(**env: str) -> str:
    result = run_to_exit(["-c", PROBE], env={**CLEAN_ENV, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # after the "telemetry" log line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestSetup:
    def test_no_endpoint_installs_no_sdk(self) -> None:
        """Without an OTLP endpoint nothing is exported and the tracer is the API's no-op."""
        assert _probe() == "False False NoOpTracer"

    def test_endpoint_turns_traces_and_metrics_on(self, receiver: OtlpReceiver) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT alone turns on both signals."""
        assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint).startswith("True True")

    def test_sdk_disabled_and_exporter_none_win(self, receiver: OtlpReceiver) -> None:
        """OTEL_SDK_DISABLED=true turns everything off; OTEL_TRACES_EXPORTER=none only traces."""
        endpoint = receiver.endpoint
        assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SDK_DISABLED="true") == "False False NoOpTracer"
        assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_TRACES_EXPORTER="none").startswith("False True")


class TestLogs:
    def test_log_lines_get_the_current_trace_and_span_id(self) -> None:
        """The structlog processor adds trace_id/span_id of the current span, and nothing outside a span."""
        tracer = TracerProvider().get_tracer("test")
        assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
        with tracer.start_as_current_span("work") as span:
            event = add_trace_context(None, "info", {"event": "x"})
        context = span.get_span_context()
        assert event["trace_id"] == f"{context.trace_id:032x}"
        assert event["span_id"] == f"{context.span_id:016x}"


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(expected_key="test-key-otel") as server:
        yield server


@pytest.fixture(scope="module")
def openai_adapter(fake_openai: FakeOpenAI, receiver: OtlpReceiver) -> Iterator[tuple[ServiceProcess, int]]:
    prometheus_port = _free_port()
    process = start_service(
        ["-m", "services.providers.openai"],
        name="openai-traced",
        env={
            **telemetry_env(receiver),
            "OPENAI_API_KEY": "test-key-otel",
            "OPENAI_BASE_URL": fake_openai.url,
            "LLMMESH_PROMETHEUS_PORT": str(prometheus_port),
        },
    )
    yield process, prometheus_port
    process.terminate()


class TestSdkHttpSpans:
    async def test_openai_sdk_call_is_a_child_http_span_with_trace_headers(
        self, fake_openai: FakeOpenAI, openai_adapter: tuple[ServiceProcess, int], receiver: OtlpReceiver
    ) -> None:
        """The adapter's chat span has a CLIENT child `POST /v1/chat/completions` whose context reached the upstream."""
        fake_openai.script(Reply.json(completion("Hi from the fake")))
        traceparent, trace_id = new_traceparent()
        async with grpc.aio.insecure_channel(openai_adapter[0].address) as channel:
            await provider_service_pb2_grpc.ProviderServiceStub(channel).Chat(
                ppb.ProviderServiceChatRequest(
                    model="gpt-4o-mini",
                    messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])],
                ),
                timeout=10,
                metadata=(("traceparent", traceparent),),
            )
        spans = spans_when(receiver, trace_id, count=2)
        (chat,) = [s for s in spans if s.name == "chat gpt-4o-mini"]
        (http,) = [s for s in spans if s.kind == "client"]
        assert http.name == "POST /v1/chat/completions"
        assert http.parent_span_id == chat.span_id
        assert http.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 200
        assert chat.attributes[names.GEN_AI_PROVIDER_NAME] == "openai"
        assert chat.attributes[names.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
        sent = fake_openai.requests[-1].headers
        assert sent.get("traceparent", "").split("-")[1:3] == [trace_id, http.span_id]
        assert "test-key-otel" not in str(http.attributes)

    def test_prometheus_endpoint_serves_genai_metrics(self, openai_adapter: tuple[ServiceProcess, int]) -> None:
        """With LLMMESH_PROMETHEUS_PORT the adapter serves /metrics with the GenAI token histogram."""
        # Runs after the chat above (same module, definition order).
        # The histogram is recorded as the adapter finishes the call, which may be just after the caller has its answer.
        give_up = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{openai_adapter[1]}/metrics", timeout=5) as response:
                body = response.read().decode()
            if "gen_ai_client_token_usage" in body or time.monotonic() > give_up:
                break
            time.sleep(0.2)
        assert "gen_ai_client_token_usage" in body
        assert 'gen_ai_provider_name="openai"' in body

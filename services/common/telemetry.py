"""OpenTelemetry for one process, set up once from the standard OTEL_* variables.

`setup_telemetry(name)` (called by MeshServer) builds the resource
(service.name from OTEL_SERVICE_NAME, else the service's own name;
service.version; service.instance.id), the tracer provider with the sampler
from OTEL_TRACES_SAMPLER (unset: parent-based, 10% of new traces) and an
OTLP exporter behind a BatchSpanProcessor,
and the meter provider with a PeriodicExportingMetricReader (OTLP) and, when
LLMMESH_PROMETHEUS_PORT is set, a Prometheus scrape endpoint.

Nothing is exported unless an OTLP endpoint is configured
(OTEL_EXPORTER_OTLP_ENDPOINT or the per-signal variables) or the exporter is
`console`; OTEL_SDK_DISABLED=true or OTEL_{TRACES,METRICS}_EXPORTER=none turn a
signal off. Without an SDK the OpenTelemetry API is a no-op that still carries
the caller's trace context from hop to hop, so an unexported process never
breaks a trace. `telemetry()` gives the process's instance (a no-op one before
setup), whose instruments code may use unconditionally.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.trace import Tracer
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common import telemetry_names as names
from services.common.settings import ENV_PREFIX, load_settings

if TYPE_CHECKING:  # the SDK is imported only when something is exported
    from opentelemetry.sdk.metrics import ExemplarFilter
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

log = structlog.get_logger(__name__)

INSTRUMENTATION_SCOPE = "llmmesh"
# Share of new (root) traces recorded when OTEL_TRACES_SAMPLER is unset; a caller's
# sampling decision is always followed, so traces stay whole across the mesh. Recording
# every request costs the router about 40% of its throughput on a 2-core host
# (tests/telemetry/overhead.py); metrics are exact whatever the sampling.
DEFAULT_ROOT_SAMPLING_RATIO = 0.1
_TRUE = {"true", "1", "yes", "on"}


class TelemetrySettings(BaseSettings):
    """llmmesh's own telemetry switches (LLMMESH_*); everything else is standard OTEL_*."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    capture_content: bool = Field(False, description="Record prompt and completion text on spans (off: never).")
    prometheus_port: int | None = Field(
        None, ge=0, le=65535, description="Serve /metrics for Prometheus here; unset or empty: no endpoint."
    )
    prometheus_host: str = Field("", description="Address of the Prometheus endpoint; empty: LLMMESH_HOST.")
    host: str = Field("127.0.0.1", description="The service's bind address (LLMMESH_HOST).")

    @field_validator("prometheus_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        # Manifests list every variable the code reads; an empty value means no endpoint.
        return None if value == "" else value


Key = tuple[tuple[str, str], ...]


class Tally:
    """A counter kept in a dict and read by an observable instrument when metrics are collected.

    The router's hot path pays for a dict update, not for the SDK's per-measurement
    work (attribute hashing, locks, exemplars): ~0.3 µs instead of ~20 µs. Callers
    pass attributes as a tuple of pairs in a fixed order (the dict key).
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[Key, float] = {}

    def add(self, amount: float, key: Key) -> None:
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, key: Key) -> float:
        return self._values.get(key, 0.0)

    def observe(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(value, dict(key)) for key, value in list(self._values.items())]


def register_tally(
    meter: Meter, name: str, tally: Tally, *, unit: str, description: str, up_down: bool = False
) -> None:
    """Exports `tally` as an observable counter (or an up-down one: in-flight levels kept with ±1)."""
    create = meter.create_observable_up_down_counter if up_down else meter.create_observable_counter
    create(name, callbacks=[tally.observe], unit=unit, description=description)


DURATION_HISTOGRAM: dict[str, Any] = {"unit": "s", "explicit_bucket_boundaries_advisory": list(names.DURATION_BUCKETS)}


@dataclass
class Instruments:
    """Histograms every process may record (no-ops when metrics are off) and the engine's tallies.

    Only what a process records reaches its endpoint: a histogram without
    measurements exports nothing, and the tallies are exported by the process
    that registers them (services/router/metrics.py), never by adapters or the agent.
    """

    operation_duration: Histogram
    token_usage: Histogram
    adapter_time_to_first_token: Histogram
    router_attempts: Tally = field(default_factory=Tally)
    router_fallbacks: Tally = field(default_factory=Tally)
    router_hedges: Tally = field(default_factory=Tally)

    @classmethod
    def create(cls, meter: Meter) -> Instruments:
        return cls(
            operation_duration=meter.create_histogram(
                names.METRIC_OPERATION_DURATION,
                description="GenAI operation duration (adapter → provider).",
                **DURATION_HISTOGRAM,
            ),
            token_usage=meter.create_histogram(
                names.METRIC_TOKEN_USAGE,
                unit="{token}",
                description="Tokens used per GenAI operation, by gen_ai.token.type.",
                explicit_bucket_boundaries_advisory=list(names.TOKEN_BUCKETS),
            ),
            adapter_time_to_first_token=meter.create_histogram(
                names.METRIC_ADAPTER_TIME_TO_FIRST_TOKEN,
                description="Streamed calls: from the adapter's call to the provider's first content chunk.",
                **DURATION_HISTOGRAM,
            ),
        )


@dataclass
class Telemetry:
    """One process's tracer, meter, instruments and shutdown."""

    service_name: str
    tracer: Tracer
    meter: Meter
    instruments: Instruments
    capture_content: bool = False
    tracing: bool = False
    metering: bool = False
    _providers: list[object] = field(default_factory=list, repr=False)

    async def shutdown(self) -> None:
        """Exports what is buffered and stops the exporters (off the event loop: exports block)."""
        if self._providers:
            await asyncio.to_thread(self._shutdown_providers)

    def _shutdown_providers(self) -> None:
        for provider in self._providers:
            try:
                provider.shutdown()  # type: ignore[attr-defined]
            except Exception as error:  # noqa: BLE001 - a collector gone away must not fail the shutdown
                log.warning("telemetry shutdown failed", error=repr(error))
        self._providers.clear()


def _noop() -> Telemetry:
    meter = metrics.NoOpMeter(INSTRUMENTATION_SCOPE)
    return Telemetry("", trace.NoOpTracer(), meter, Instruments.create(meter))


_current: Telemetry = _noop()


def telemetry() -> Telemetry:
    """The process's telemetry: what setup_telemetry built, else a no-op."""
    return _current


def setup_telemetry(service_name: str) -> Telemetry:
    """Builds the process's telemetry once from OTEL_* / LLMMESH_*; later calls return the same."""
    global _current  # one telemetry per process, like OpenTelemetry's own globals
    if _current.service_name:
        return _current
    settings = load_settings(TelemetrySettings)
    if _flag("OTEL_SDK_DISABLED"):
        _current = _noop()
        _current.service_name = service_name
        return _current
    resource = _resource(service_name)
    providers: list[object] = []
    tracer: Tracer = trace.NoOpTracer()
    span_exporter = _span_exporter()
    if span_exporter is not None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource, sampler=_default_sampler())
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(tracer_provider)
        tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE, _version())
        providers.append(tracer_provider)
        from services.common.telemetry_http import instrument_httpx2

        instrument_httpx2(tracer)
    readers = _metric_readers(settings)
    meter: Meter = metrics.NoOpMeter(INSTRUMENTATION_SCOPE)
    if readers:
        from opentelemetry.sdk.metrics import MeterProvider

        meter_provider = MeterProvider(resource=resource, metric_readers=readers, exemplar_filter=_exemplar_filter())
        metrics.set_meter_provider(meter_provider)
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, _version())
        providers.append(meter_provider)
    _current = Telemetry(
        service_name,
        tracer,
        meter,
        Instruments.create(meter),
        capture_content=settings.capture_content,
        tracing=span_exporter is not None,
        metering=bool(readers),
        _providers=providers,
    )
    log.info(
        "telemetry",
        traces=_current.tracing,
        metrics=_current.metering,
        capture_content=settings.capture_content,
        prometheus_port=settings.prometheus_port,
    )
    return _current


def reset_for_tests() -> None:
    """Forgets the process's telemetry (in-process tests that set it up more than once)."""
    global _current
    _current = _noop()


def _default_sampler() -> Sampler | None:
    """parentbased_traceidratio at DEFAULT_ROOT_SAMPLING_RATIO; None lets OTEL_TRACES_SAMPLER(_ARG) decide."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return ParentBased(TraceIdRatioBased(DEFAULT_ROOT_SAMPLING_RATIO))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _exporter_choice(signal: str) -> str:
    """`otlp` when an endpoint is configured, `console`, or `none` (also the default without an endpoint)."""
    choice = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower()
    if choice == "otlp" and not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    ):
        # OpenTelemetry would default to localhost:4317; a process with no collector
        # configured should not spend time exporting into the void.
        return "none"
    return choice


def _span_exporter() -> SpanExporter | None:
    choice = _exporter_choice("traces")
    if choice == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if choice == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return None


def _metric_readers(settings: TelemetrySettings) -> list[MetricReader]:
    readers: list[MetricReader] = []
    choice = _exporter_choice("metrics")
    if choice in ("otlp", "console"):
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

        if choice == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter: Any = OTLPMetricExporter()
        else:
            exporter = ConsoleMetricExporter()
        # Interval from OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
        readers.append(PeriodicExportingMetricReader(exporter))
    if settings.prometheus_port is not None:
        from services.common.telemetry_prometheus import prometheus_reader

        readers.append(prometheus_reader(settings.prometheus_host or settings.host, settings.prometheus_port))
    return readers


def _exemplar_filter() -> ExemplarFilter | None:
    """Exemplars off unless OTEL_METRICS_EXEMPLAR_FILTER asks: sampling one per measurement costs the hot path."""
    if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
        return None  # the SDK reads it
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    return AlwaysOffExemplarFilter()


def _resource(service_name: str) -> Resource:
    from opentelemetry.sdk.resources import Resource

    attributes = {"service.version": _version(), "service.instance.id": uuid.uuid4().hex}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service_name
    # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME are read by Resource.create.
    return Resource.create(attributes)


def _version() -> str:
    try:
        return importlib.metadata.version("llmmesh")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"

"""A small OTLP/gRPC receiver: what `llmmesh up --traces` and the telemetry tests read.

It implements opentelemetry-proto's TraceService and MetricsService, keeps
what arrives in memory (bounded), and renders a trace as an indented tree
with durations. It runs on a plain (threaded) grpc server rather than
grpc.aio: the CLI that hosts it is synchronous, and module-scoped test
fixtures outlive pytest-asyncio's per-test event loops.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TextIO

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from services.common import telemetry_names as names

_MAX_SPANS = 50_000
_MAX_POINTS = 50_000
_SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver got it, with ids in hex."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    service: str
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str = ""
    events: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass(frozen=True)
class MetricPoint:
    """One data point: `value` for sums and gauges, `count`/`sum` for histograms."""

    service: str
    name: str
    kind: str
    attributes: dict[str, Any]
    value: float = 0.0
    count: int = 0
    sum: float = 0.0
    bucket_counts: tuple[int, ...] = ()
    time_ns: int = 0
    #: The exporting process's service.instance.id (tells replicas of one service apart).
    instance: str = ""


def _value(any_value: common_pb2.AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in any_value.array_value.values)
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def _attributes(items: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


@dataclass
class _Store:
    spans: deque[ReceivedSpan] = field(default_factory=lambda: deque(maxlen=_MAX_SPANS))
    points: deque[MetricPoint] = field(default_factory=lambda: deque(maxlen=_MAX_POINTS))
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=_SPAN_KINDS.get(span.kind, str(span.kind)),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            service=service,
                            attributes=_attributes(span.attributes),
                            status_code=span.status.code,
                            status_message=span.status.message,
                            events=tuple((event.name, _attributes(event.attributes)) for event in span.events),
                        )
                    )
        with self._store.changed:
            self._store.spans.extend(received)
            self._store.changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        received = []
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            service = str(resource.get("service.name", ""))
            instance = str(resource.get("service.instance.id", ""))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    received.extend(_points(service, metric, instance))
        with self._store.changed:
            self._store.points.extend(received)
            self._store.changed.notify_all()
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Discard(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """Accepts exports and drops them (for load tests: a collector that costs the mesh nothing)."""

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        if request.DESCRIPTOR.name == "ExportTraceServiceRequest":
            return trace_service_pb2.ExportTraceServiceResponse()
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _points(service: str, metric: Any, instance: str = "") -> list[MetricPoint]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        return [
            MetricPoint(
                service,
                metric.name,
                kind,
                _attributes(point.attributes),
                value=point.as_double if point.WhichOneof("value") == "as_double" else point.as_int,
                time_ns=point.time_unix_nano,
                instance=instance,
            )
            for point in getattr(metric, kind).data_points
        ]
    if kind == "histogram":
        return [
            MetricPoint(
                service,
                metric.name,
                kind,
                _attributes(point.attributes),
                count=point.count,
                sum=point.sum,
                bucket_counts=tuple(point.bucket_counts),
                time_ns=point.time_unix_nano,
                instance=instance,
            )
            for point in metric.histogram.data_points
        ]
    return []


class OtlpReceiver:
    """An OTLP/gRPC endpoint on loopback that keeps spans and metric points in memory."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, keep: bool = True) -> None:
        self._store = _Store()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp"))
        if keep:
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self._store), self._server)
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self._store), self._server)
        else:
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Discard(), self._server)
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Discard(), self._server)
        self.host = host
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"could not bind {host}:{port}")

    @property
    def endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def clear(self) -> None:
        with self._store.lock:
            self._store.spans.clear()
            self._store.points.clear()

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._store.lock:
            return [span for span in self._store.spans if trace_id is None or span.trace_id == trace_id]

    def metric_points(self, name: str | None = None, service: str | None = None) -> list[MetricPoint]:
        with self._store.lock:
            return [
                point
                for point in self._store.points
                if (name is None or point.name == name) and (service is None or point.service == service)
            ]

    def latest_points(self, name: str, service: str | None = None) -> list[MetricPoint]:
        """The newest point of each attribute set (cumulative temporality: the running totals)."""
        newest: dict[tuple[str, tuple[tuple[str, Any], ...]], MetricPoint] = {}
        for point in self.metric_points(name, service):
            key = (point.service, tuple(sorted(point.attributes.items())))
            if key not in newest or point.time_ns >= newest[key].time_ns:
                newest[key] = point
        return list(newest.values())

    def wait_for(self, condition: Callable[[OtlpReceiver], Any], timeout: float = 10.0) -> Any:
        """Waits until `condition(self)` is truthy and returns it; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._store.changed:
            while True:
                self._store.lock.release()
                try:
                    value = condition(self)
                finally:
                    self._store.lock.acquire()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"OTLP receiver: condition not met within {timeout}s")
                self._store.changed.wait(min(left, 0.2))


# -- the trace tree -------------------------------------------------------------------------


def _details(span: ReceivedSpan) -> str:
    """What a person wants next to the span: the outcome, the answer's shape, why it moved on."""
    a = span.attributes
    parts: list[str] = []
    if names.ATTEMPT_OUTCOME in a:
        parts.append(f"{a[names.ATTEMPT_OUTCOME]} {a.get(names.ATTEMPT_CODE, '')}".strip())
        if a.get(names.ATTEMPT_INSTANCE):
            parts.append(str(a[names.ATTEMPT_INSTANCE]))
        if a.get(names.ATTEMPT_HEDGED):
            parts.append("hedge")
        if a.get(names.ATTEMPT_FALLBACK_REASON):
            parts.append(f"fallback: {a[names.ATTEMPT_FALLBACK_REASON]}")
        if a.get(names.ATTEMPT_REASON):
            parts.append(str(a[names.ATTEMPT_REASON]))
        if a.get(names.ATTEMPT_MOVED_ON_BECAUSE):
            parts.append(f"then: {a[names.ATTEMPT_MOVED_ON_BECAUSE]}")
    elif names.GEN_AI_USAGE_INPUT_TOKENS in a or names.GEN_AI_USAGE_OUTPUT_TOKENS in a:
        if a.get(names.ROUTER_MODEL):
            parts.append(f"answered by {a[names.ROUTER_MODEL]}@{a.get(names.GEN_AI_PROVIDER_NAME, '?')}")
        parts.append(
            f"{a.get(names.GEN_AI_USAGE_INPUT_TOKENS, 0)} in / {a.get(names.GEN_AI_USAGE_OUTPUT_TOKENS, 0)} out"
        )
        reasons = a.get(names.GEN_AI_RESPONSE_FINISH_REASONS)
        if reasons:
            parts.append(",".join(reasons))
    if names.HTTP_RESPONSE_STATUS_CODE in a:
        parts.append(f"HTTP {a[names.HTTP_RESPONSE_STATUS_CODE]}")
    if names.AGENT_END_REASON in a:
        parts.append(str(a[names.AGENT_END_REASON]))
    if span.status_code == 2:
        parts.append(f"ERROR {span.status_message or a.get(names.ERROR_TYPE, '')}".strip())
    return " · ".join(parts)


def format_trace(spans: Iterable[ReceivedSpan]) -> str:
    """One trace as an indented tree: name, service, duration, details; children by start time."""
    spans = sorted(spans, key=lambda s: s.start_ns)
    if not spans:
        return ""
    ids = {span.span_id for span in spans}
    children: dict[str, list[ReceivedSpan]] = {}
    roots: list[ReceivedSpan] = []
    for span in spans:
        if span.parent_span_id and span.parent_span_id in ids:
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    total = (max(s.end_ns for s in spans) - min(s.start_ns for s in spans)) / 1e6
    lines = [f"trace {spans[0].trace_id} · {len(spans)} spans · {total:.1f} ms"]

    def walk(span: ReceivedSpan, prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        label = f"{prefix}{branch}{span.name}"
        details = _details(span)
        lines.append(
            f"{label:<56} {span.service:<26} {span.duration_ms:>9.1f} ms" + (f"  {details}" if details else "")
        )
        below = children.get(span.span_id, [])
        extension = "" if depth == 0 else ("   " if last else "│  ")
        for index, child in enumerate(below):
            walk(child, prefix + extension, index == len(below) - 1, depth + 1)

    for root in roots:
        walk(root, "", True, 0)
    return "\n".join(lines)


class TracePrinter:
    """Prints each finished trace once: its root has arrived and nothing new came for `quiet` seconds."""

    def __init__(
        self, receiver: OtlpReceiver, out: TextIO = sys.stdout, *, quiet: float = 1.0, genai_only: bool = True
    ) -> None:
        self._receiver = receiver
        self._genai_only = genai_only
        self._out = out
        self._quiet = quiet
        self._printed: set[str] = set()
        self._seen: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trace-printer", daemon=True)

    def start(self) -> TracePrinter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush(force=True)

    def flush(self, *, force: bool = False) -> None:
        """Prints the traces that are finished (every one left, when `force`)."""
        now = time.monotonic()
        by_trace: dict[str, list[ReceivedSpan]] = {}
        for span in self._receiver.spans():
            if span.trace_id not in self._printed:
                by_trace.setdefault(span.trace_id, []).append(span)
        for trace_id, spans in by_trace.items():
            count, changed_at = self._seen.get(trace_id, (0, now))
            if count != len(spans):
                self._seen[trace_id] = (len(spans), now)
                changed_at = now
            # Processes export on their own schedules: a trace is done once it has its
            # root and has stopped growing (a root from an untraced caller has a parent we never see).
            has_root = any(not span.parent_span_id for span in spans)
            quiet = self._quiet if has_root else self._quiet * 5
            if force or now - changed_at >= quiet:
                self._printed.add(trace_id)
                self._seen.pop(trace_id, None)
                # Background calls (tool listing, model listing) are traces too, but not the ones people look for.
                if self._genai_only and not any(names.GEN_AI_OPERATION_NAME in span.attributes for span in spans):
                    continue
                print(format_trace(spans) + "\n", file=self._out, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self._quiet / 2):
            self.flush()


def main(argv: list[str] | None = None) -> None:
    """`python -m services.common.otlp_receiver`: a local trace view for services exporting OTLP to it."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Local OTLP/gRPC receiver that prints each finished trace as a tree.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--discard", action="store_true", help="accept and drop everything (load tests)")
    args = parser.parse_args(argv)
    receiver = OtlpReceiver(args.host, args.port, keep=not args.discard).start()
    printer = None if args.discard else TracePrinter(receiver).start()
    print(f"OTLP receiver on {receiver.endpoint} (set OTEL_EXPORTER_OTLP_ENDPOINT to it)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    if printer is not None:
        printer.stop()
    receiver.stop()


if __name__ == "__main__":
    main()

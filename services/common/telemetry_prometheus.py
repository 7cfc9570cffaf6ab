"""The optional Prometheus scrape endpoint (LLMMESH_PROMETHEUS_PORT)."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import MetricReader

from services.common.settings import ConfigError, listen_error


def prometheus_reader(host: str, port: int) -> MetricReader:
    """A metric reader served at http://host:port/metrics by prometheus_client."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError:  # pragma: no cover - both are dependencies; a slimmed image may lack them
        raise ConfigError(
            "LLMMESH_PROMETHEUS_PORT is set but opentelemetry-exporter-prometheus is not installed"
        ) from None
    try:
        start_http_server(port, addr=host)
    except OSError as error:
        raise listen_error(f"{host}:{port}", error, "LLMMESH_PROMETHEUS_PORT", "LLMMESH_PROMETHEUS_HOST") from None
    return PrometheusMetricReader()

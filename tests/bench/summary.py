"""From load results to the figures the report shows (medians over runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.bench.load import LoadResult
from tests.bench.stats import median, percentile


def figures(result: LoadResult) -> dict[str, Any]:
    """One run's figures: RPS, latency percentiles (ms), errors, CPU µs per request per process."""
    out: dict[str, Any] = {
        "requests": result.measured,
        "ok": result.ok,
        "errors": dict(result.errors),
        "rps": result.rps,
        "p50_ms": percentile(result.latencies_s, 0.50) * 1000,
        "p90_ms": percentile(result.latencies_s, 0.90) * 1000,
        "p99_ms": percentile(result.latencies_s, 0.99) * 1000,
        "cpu_us_per_request": result.cpu_us_per_request(),
    }
    if result.first_chunk_s:
        out["ttfc_p50_ms"] = percentile(result.first_chunk_s, 0.50) * 1000
        out["ttfc_p99_ms"] = percentile(result.first_chunk_s, 0.99) * 1000
    return out


def median_figures(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over runs; errors are summed, CPU is per process."""
    if not runs:
        return {}
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        if key == "errors":
            total: dict[str, int] = {}
            for run in runs:
                for code, count in run["errors"].items():
                    total[code] = total.get(code, 0) + count
            merged[key] = total
        elif key == "cpu_us_per_request":
            merged[key] = {name: median([run[key].get(name, float("nan")) for run in runs]) for name in value}
        elif isinstance(value, int | float):
            merged[key] = median([run[key] for run in runs])
    merged["runs"] = len(runs)
    return merged

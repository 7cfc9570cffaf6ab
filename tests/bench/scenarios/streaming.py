"""Scenario 8: streaming through one router and one OpenAI adapter (real SDK) from the fake upstream.

Two phases, each on its own processes (the fake's cadence is set per process):

- fast: streams of `stream_chunks` chunks sent back to back, at
  `stream_concurrency`, in a closed loop: CPU per chunk of router, adapter
  and fake (CPU per stream over its chunks) and each chunk's lag, from the
  fake upstream writing it to the load client reading it (tests.bench.stamps);
- slow: `slow_streams` streams open at once, a chunk every
  `slow_interval_s`, `slow_stream_chunks` each, their starts spread over
  `slow_ramp_s`: errors, chunks that arrived, chunk lag, peak RSS (VmHWM,
  reset before the phase) and CPU of each process. Bounded: each stream's
  deadline is its nominal length plus 30 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bench import requests as req
from tests.bench.load import LoadResult, LoadSpec, LoadWorker
from tests.bench.procstat import memory_kib, reset_peak_rss
from tests.bench.settings import BenchSettings
from tests.bench.stats import percentile
from tests.bench.summary import figures, median_figures
from tests.bench.topology import Topology

MODEL = "gpt-4o-mini"
ROUTING = {
    "providers": {"openai": {"kind": "openai"}},
    "models": {MODEL: {"provider": "openai", "context_window": 128000}},
}


def run(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    return {"fast": _fast(settings, worker, workdir / "fast"), "slow": _slow(settings, worker, workdir / "slow")}


def _mesh(topology: Topology, chunks: int, interval_s: float) -> dict[str, Any]:
    fake = topology.fake_openai("fake-openai", stream_chunks=chunks, chunk_interval_s=interval_s)
    adapter = topology.openai_adapter("openai", f"http://{fake.address}/v1", [MODEL])
    router = topology.router("router", ROUTING, {"llmmesh-provider-openai": [adapter.address]})
    return {"router": router, "adapter": adapter, "fake": fake}


def _lag_figures(result: LoadResult) -> dict[str, float]:
    return {
        "lag_p50_ms": percentile(result.lags_s, 0.50) * 1000,
        "lag_p99_ms": percentile(result.lags_s, 0.99) * 1000,
        "lag_max_ms": max(result.lags_s, default=float("nan")) * 1000,
    }


def _fast(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    with Topology(workdir) as topology:
        processes = _mesh(topology, settings.stream_chunks, 0.0)
        pids = {name: process.pid for name, process in processes.items()}
        runs = []
        for _ in range(settings.runs):
            outcome = worker.run(
                LoadSpec(
                    target=processes["router"].address,
                    method=req.ROUTER_STREAM,
                    request=req.router_stream(MODEL),
                    concurrency=settings.stream_concurrency,
                    duration_s=settings.duration_s,
                    warmup_s=settings.warmup_s,
                    streaming=True,
                    watch_pids=pids,
                    lag=True,
                    timeout_s=30.0,
                )
            )
            found = {**figures(outcome), **_lag_figures(outcome)}
            found["chunks_per_stream"] = outcome.chunks / outcome.measured if outcome.measured else 0.0
            # CPU per stream over the content chunks in it (the role, finish and usage events ride along).
            found["cpu_us_per_chunk"] = {
                name: us / settings.stream_chunks for name, us in found["cpu_us_per_request"].items()
            }
            runs.append(found)
    merged = median_figures(runs)
    merged["cpu_us_per_chunk"] = median_figures([{"cpu_us_per_request": run["cpu_us_per_chunk"]} for run in runs])[
        "cpu_us_per_request"
    ]
    return {
        "concurrency": settings.stream_concurrency,
        "chunks": settings.stream_chunks,
        "figures": merged,
        "raw": runs,
    }


def _slow(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    nominal_s = settings.slow_stream_chunks * settings.slow_interval_s
    with Topology(workdir) as topology:
        processes = _mesh(topology, settings.slow_stream_chunks, settings.slow_interval_s)
        pids = {name: process.pid for name, process in processes.items()}
        idle_kib = {name: memory_kib(pid) for name, pid in pids.items()}
        peaks_reset = all(reset_peak_rss(pid) for pid in pids.values())
        outcome = worker.run(
            LoadSpec(
                target=processes["router"].address,
                method=req.ROUTER_STREAM,
                request=req.router_stream(MODEL),
                concurrency=settings.slow_streams,
                duration_s=nominal_s,
                warmup_s=0.0,
                streaming=True,
                watch_pids=pids,
                lag=True,
                one_call_each=True,
                ramp_s=settings.slow_ramp_s,
                timeout_s=nominal_s + 30.0,
            )
        )
        under_load_kib = {name: memory_kib(pid) for name, pid in pids.items()}
    return {
        "streams": settings.slow_streams,
        "chunks_per_stream": settings.slow_stream_chunks,
        "interval_ms": settings.slow_interval_s * 1000,
        "ramp_s": settings.slow_ramp_s,
        "ok": outcome.ok,
        "errors": dict(outcome.errors),
        "chunks_received": outcome.chunks,
        "content_chunks_expected": settings.slow_streams * settings.slow_stream_chunks,
        "content_chunks_received": len(outcome.lags_s),
        "wall_s": outcome.window_s,
        # A stream's nominal length is (chunks - 1) × interval; time to first chunk and the achieved chunk
        # rate show where a longer one went (starting late, or the upstream's cadence slowed by a busy machine).
        "nominal_stream_s": (settings.slow_stream_chunks - 1) * settings.slow_interval_s,
        "ttfc_p50_s": percentile(outcome.first_chunk_s, 0.50),
        "ttfc_p99_s": percentile(outcome.first_chunk_s, 0.99),
        "chunks_per_s": len(outcome.lags_s) / outcome.window_s,
        "stream_p50_s": percentile(outcome.latencies_s, 0.50),
        "stream_max_s": max(outcome.latencies_s, default=float("nan")),
        **_lag_figures(outcome),
        "cpu_s": dict(outcome.cpu_s),
        "idle_kib": idle_kib,
        "under_load_kib": under_load_kib,
        "peaks_reset": peaks_reset,
    }

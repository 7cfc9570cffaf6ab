"""Scenario 1: the same load straight to the adapter, through the bare proxy, through the router.

Also scenario 6 (memory): peak RSS of router and adapter under the
concurrency-256 load, on the same processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bench import requests as req
from tests.bench.load import LoadSpec, LoadWorker
from tests.bench.procstat import memory_kib, reset_peak_rss
from tests.bench.settings import BenchSettings
from tests.bench.stats import median, ratio
from tests.bench.summary import figures, median_figures
from tests.bench.topology import MOCK_SERVICE, Topology

MODEL = "bench-echo"
MOCK_CONFIG = {"models": [{"name": MODEL, "context_window": 8192}]}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "models": {MODEL: {"provider": "mock", "context_window": 8192}},
}
TARGETS = ("direct", "proxy", "router")


def run(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    with Topology(workdir) as topology:
        mock = topology.mock("mock", MOCK_CONFIG)
        proxy, router = topology.together(
            lambda: topology.proxy("proxy", mock.address),
            lambda: topology.router("router", ROUTING, {MOCK_SERVICE: [mock.address]}),
        )
        idle_kib = {"router": memory_kib(router.pid), "adapter": memory_kib(mock.pid)}
        routes = {
            "direct": (mock.address, req.PROVIDER_CHAT, req.provider_chat(MODEL), {"adapter": mock.pid}),
            "proxy": (
                proxy.address,
                req.PROVIDER_CHAT,
                req.provider_chat(MODEL),
                {"proxy": proxy.pid, "adapter": mock.pid},
            ),
            "router": (
                router.address,
                req.ROUTER_CHAT,
                req.router_chat(MODEL),
                {"router": router.pid, "adapter": mock.pid},
            ),
        }
        result: dict[str, Any] = {"unary": [], "streaming": []}
        if "hop" in settings.scenarios:
            for concurrency in settings.concurrencies:
                result["unary"].append(_compare(settings, worker, routes, concurrency, streaming=False))
            stream_routes = {
                "direct": (mock.address, req.PROVIDER_STREAM, req.provider_stream(MODEL), {"adapter": mock.pid}),
                "proxy": (
                    proxy.address,
                    req.PROVIDER_STREAM,
                    req.provider_stream(MODEL),
                    {"proxy": proxy.pid, "adapter": mock.pid},
                ),
                "router": (
                    router.address,
                    req.ROUTER_STREAM,
                    req.router_stream(MODEL),
                    {"router": router.pid, "adapter": mock.pid},
                ),
            }
            for concurrency in settings.stream_concurrencies:
                result["streaming"].append(_compare(settings, worker, stream_routes, concurrency, streaming=True))
        if "memory" in settings.scenarios:
            result["memory"] = _memory(settings, worker, routes["router"], router.pid, mock.pid, idle_kib)
    return result


def _spec(
    settings: BenchSettings, route: tuple[str, str, bytes, dict[str, int]], concurrency: int, **extra: Any
) -> LoadSpec:
    target, method, request, pids = route
    return LoadSpec(
        target=target,
        method=method,
        request=request,
        concurrency=concurrency,
        duration_s=settings.duration_s,
        warmup_s=settings.warmup_s,
        watch_pids=pids,
        ramp_s=min(0.002 * concurrency, 0.5),
        **extra,
    )


def _compare(
    settings: BenchSettings,
    worker: LoadWorker,
    routes: dict[str, tuple[str, str, bytes, dict[str, int]]],
    concurrency: int,
    *,
    streaming: bool,
) -> dict[str, Any]:
    """Runs the targets in turn, `runs` times, so each ratio compares neighbours in time."""
    per_target: dict[str, list[dict[str, Any]]] = {target: [] for target in TARGETS}
    ratios: dict[str, list[float]] = {
        "router_over_proxy_rps": [],
        "router_over_direct_rps": [],
        "proxy_over_direct_rps": [],
        "router_added_p50_ms": [],
        "proxy_added_p50_ms": [],
        # CPU per request of the hop process itself: steadier than RPS on a shared machine.
        "router_over_proxy_cpu": [],
    }
    for _ in range(settings.runs):
        this_run = {}
        for target in TARGETS:
            outcome = worker.run(_spec(settings, routes[target], concurrency, streaming=streaming))
            this_run[target] = figures(outcome)
            per_target[target].append(this_run[target])
        latency = "ttfc_p50_ms" if streaming else "p50_ms"
        ratios["router_over_proxy_rps"].append(this_run["router"]["rps"] / this_run["proxy"]["rps"])
        ratios["router_over_direct_rps"].append(this_run["router"]["rps"] / this_run["direct"]["rps"])
        ratios["proxy_over_direct_rps"].append(this_run["proxy"]["rps"] / this_run["direct"]["rps"])
        ratios["router_added_p50_ms"].append(this_run["router"][latency] - this_run["direct"][latency])
        ratios["proxy_added_p50_ms"].append(this_run["proxy"][latency] - this_run["direct"][latency])
        ratios["router_over_proxy_cpu"].append(
            ratio(this_run["router"]["cpu_us_per_request"]["router"], this_run["proxy"]["cpu_us_per_request"]["proxy"])
        )
    return {
        "concurrency": concurrency,
        "targets": {target: median_figures(runs) for target, runs in per_target.items()},
        "ratios": {name: median(values) for name, values in ratios.items()},
        "raw": per_target,
    }


def _memory(
    settings: BenchSettings,
    worker: LoadWorker,
    route: tuple[str, str, bytes, dict[str, int]],
    router_pid: int,
    adapter_pid: int,
    idle_kib: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """Peak RSS (VmHWM) of router and adapter over a concurrency-256 router load, peaks reset first."""
    reset = all([reset_peak_rss(router_pid), reset_peak_rss(adapter_pid)])
    outcome = worker.run(_spec(settings, route, settings.memory_concurrency))
    return {
        "concurrency": settings.memory_concurrency,
        "peak_reset_before_load": reset,
        "idle_kib": idle_kib,
        "under_load_kib": {"router": memory_kib(router_pid), "adapter": memory_kib(adapter_pid)},
        "load": figures(outcome),
    }

"""Scenario 3: a heavy-tailed upstream, p50/p99 without and with hedging, and what hedging cost.

Two mock instances serve one model whose calls take 50 ms (95%) or 2 s (5%),
each instance drawing independently. The same router serves both variants:
"no hedge" sends RoutingPolicy.strategy FALLBACK on each request, "hedge"
uses the routing file's strategy (hedge after a fixed delay, to the other
instance). Upstream calls are counted from the mocks' events file; the
extra share is upstream calls ÷ requests sent − 1, warm-up included on both
sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmmesh.v1 import router_service_pb2 as rpb
from tests.bench import requests as req
from tests.bench.load import RECORD_ATTEMPTS, LoadResult, LoadSpec, LoadWorker
from tests.bench.settings import BenchSettings
from tests.bench.stats import median, ratio
from tests.bench.summary import figures, median_figures
from tests.bench.topology import MOCK_SERVICE, Topology

MODEL = "bench-tail"
LATENCY = [{"weight": 0.95, "ms": 50}, {"weight": 0.05, "ms": 2000}]
HEDGE_DELAY_MS = 100
# The shipped default: at most 10% of requests hedged (plus 0.5/s), over 10 s.
HEDGE_BUDGET = {"ratio": 0.1, "window_s": 10, "min_per_second": 0.5}
# No seed: each instance draws its own tail.
MOCK_CONFIG = {"models": [{"name": MODEL, "latency": LATENCY}]}
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "defaults": {"hedge_budget": HEDGE_BUDGET, "max_retries": 0},
    "models": {MODEL: {"provider": "mock", "strategy": "hedge", "hedge_delay_ms": HEDGE_DELAY_MS}},
}
VARIANTS = {
    "no_hedge": rpb.RoutingPolicy(strategy=rpb.ROUTING_STRATEGY_FALLBACK),
    "hedge": None,
}


def run(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    events = workdir / "hedge-events.jsonl"
    with Topology(workdir) as topology:
        mocks = topology.together(
            *(lambda i=index: topology.mock(f"mock-{i}", MOCK_CONFIG, events_file=events) for index in range(2))
        )
        router = topology.router("router", ROUTING, {MOCK_SERVICE: [mock.address for mock in mocks]})
        per_variant: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        for _ in range(settings.runs):
            for variant, policy in VARIANTS.items():
                events.unlink(missing_ok=True)
                outcome = worker.run(
                    LoadSpec(
                        target=router.address,
                        method=req.ROUTER_CHAT,
                        request=req.router_chat(MODEL, policy),
                        concurrency=settings.hedge_concurrency,
                        duration_s=settings.hedge_duration_s,
                        warmup_s=settings.warmup_s,
                        watch_pids={"router": router.pid, **{f"mock-{i}": m.pid for i, m in enumerate(mocks)}},
                        record=RECORD_ATTEMPTS,
                        ramp_s=0.1,
                    )
                )
                per_variant[variant].append(_figures(outcome, _upstream_calls(events)))
    merged = {variant: median_figures(runs) for variant, runs in per_variant.items()}
    cuts = [
        ratio(without["p99_ms"], with_["p99_ms"])
        for without, with_ in zip(per_variant["no_hedge"], per_variant["hedge"], strict=True)
    ]
    return {
        "latency": "95% 50 ms / 5% 2 s",
        "hedge_delay_ms": HEDGE_DELAY_MS,
        "hedge_budget": HEDGE_BUDGET,
        "concurrency": settings.hedge_concurrency,
        **merged,
        "p99_cut": median(cuts),
        "extra_upstream_share": merged["hedge"]["extra_upstream_share"],
        "raw": per_variant,
    }


def _figures(outcome: LoadResult, upstream_calls: int) -> dict[str, Any]:
    attempts = [attempt for record in outcome.records for attempt in record.attempts]
    return {
        **figures(outcome),
        "issued": outcome.issued_total,
        "upstream_calls": upstream_calls,
        "extra_upstream_share": upstream_calls / outcome.issued_total - 1 if outcome.issued_total else 0.0,
        "hedged_attempt_share": ratio(sum(1 for a in attempts if a[2]), len(outcome.records)),
    }


def _upstream_calls(events: Path) -> int:
    if not events.exists():
        return 0
    return sum(1 for line in events.read_text().splitlines() if line and json.loads(line)["event"] == "start")

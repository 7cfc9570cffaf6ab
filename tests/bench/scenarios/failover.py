"""Scenario 4: steady load over two adapter instances; one is SIGKILLed mid-run.

Static discovery lists both instances and never changes, so everything the
router does about the dead one comes from its own observations (errors,
retries, breakers, balancing). Reported per run: failed requests (all, and
after the kill), attempts that still went to the dead instance, and when the
last of them started, relative to the kill.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.bench import requests as req
from tests.bench.load import RECORD_ATTEMPTS, LoadResult, LoadSpec, LoadWorker
from tests.bench.settings import BenchSettings
from tests.bench.stats import percentile
from tests.bench.topology import MOCK_SERVICE, Topology

MODEL = "bench-steady"
MOCK_CONFIG = {"models": [{"name": MODEL, "latency": [{"weight": 1, "ms": 5}]}]}
# The shipped defaults (max_retries 1, default budgets and breakers).
ROUTING = {
    "providers": {"mock": {"kind": "mock"}},
    "defaults": {"max_retries": 1},
    "models": {MODEL: {"provider": "mock"}},
}
# "Still picked at end": an attempt to the dead instance in the window's last second.
_END_SLICE_S = 1.0


def run(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    runs = []
    for index in range(settings.runs):
        run_dir = workdir / f"failover-{index}"
        run_dir.mkdir(parents=True, exist_ok=True)
        with Topology(run_dir) as topology:
            survivor, victim = topology.together(
                lambda: topology.mock("mock-a", MOCK_CONFIG), lambda: topology.mock("mock-b", MOCK_CONFIG)
            )
            router = topology.router("router", ROUTING, {MOCK_SERVICE: [survivor.address, victim.address]})
            spec = LoadSpec(
                target=router.address,
                method=req.ROUTER_CHAT,
                request=req.router_chat(MODEL),
                concurrency=settings.failover_concurrency,
                duration_s=settings.failover_duration_s,
                warmup_s=settings.warmup_s,
                record=RECORD_ATTEMPTS,
                ramp_s=0.05,
            )
            worker.submit(spec)
            time.sleep(settings.warmup_s + spec.ramp_s + settings.failover_kill_after_s)
            victim.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            outcome = worker.result(spec)
            runs.append(_analyse(outcome, victim.address, killed_at))
    return {
        "concurrency": settings.failover_concurrency,
        "duration_s": settings.failover_duration_s,
        "kill_after_s": settings.failover_kill_after_s,
        "routing_defaults": ROUTING["defaults"],
        "runs": runs,
        "failed_total": sum(run["failed"] for run in runs),
    }


def _analyse(outcome: LoadResult, dead: str, killed_at: float) -> dict[str, Any]:
    window_end = outcome.window_started + outcome.window_s
    to_dead: list[float] = []
    for record in outcome.records:
        hits = sum(1 for attempt in record.attempts if attempt[0] == dead) + record.detail.count(dead)
        if hits and record.started >= killed_at - 0.05:
            to_dead.extend([record.started] * hits)
    failed = [record for record in outcome.records if record.code != "OK"]
    return {
        "requests": len(outcome.records),
        "errors": dict(outcome.errors),
        "failed": len(failed),
        "failed_after_kill": sum(1 for record in failed if record.started >= killed_at),
        # Failed without trying anything: a breaker for the whole model (or provider) was open.
        "failed_circuit_open": sum(1 for record in failed if record.detail.startswith("circuit open")),
        "attempts_to_dead": len(to_dead),
        "last_attempt_to_dead_after_kill_s": max(to_dead) - killed_at if to_dead else 0.0,
        "dead_still_picked_at_end": any(started >= window_end - _END_SLICE_S for started in to_dead),
        "p99_ms": percentile(outcome.latencies_s, 0.99) * 1000,
        "sample_error": failed[0].detail[:300] if failed else "",
    }

"""`make bench` / `python -m tests.bench [--quick] [--only hop,hedging] [--out FILE]`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from tests.bench import report, targets
from tests.bench.load import LoadWorker
from tests.bench.procstat import machine
from tests.bench.scenarios import agent, failover, hedging, hop, litellm, real_path, streaming
from tests.bench.settings import QUICK, SCENARIOS, BenchSettings

DEFAULT_OUT = Path("bench-results/latest.json")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="llmmesh benchmarks: hop overhead vs a bare proxy, the real SDK path, hedging, failover, "
        "agent step overhead, memory, the mesh against LiteLLM's proxy, streaming (CPU per chunk, chunk lag, "
        "concurrent slow streams). Prints Markdown tables and writes JSON.",
    )
    parser.add_argument("--quick", action="store_true", help="one short run of each scenario (about a minute)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios to run (default: all of {', '.join(SCENARIOS)})"
    )
    parser.add_argument("--runs", type=int, help="runs per figure (medians are reported)")
    parser.add_argument("--duration", type=float, help="measured seconds per load run")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each window")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    settings = QUICK if args.quick else BenchSettings()
    changes: dict[str, Any] = {}
    if args.only:
        chosen = tuple(name.strip() for name in args.only.split(",") if name.strip())
        unknown = [name for name in chosen if name not in SCENARIOS]
        if unknown:
            raise SystemExit(f"--only: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        changes["scenarios"] = chosen
    if args.runs is not None:
        if args.runs < 1:
            raise SystemExit("--runs: must be at least 1")
        changes["runs"] = args.runs
    if args.duration is not None:
        if args.duration <= 0:
            raise SystemExit("--duration: must be positive")
        changes["duration_s"] = args.duration
    if args.warmup is not None:
        if args.warmup < 0:
            raise SystemExit("--warmup: must not be negative")
        changes["warmup_s"] = args.warmup
    return dataclasses.replace(settings, **changes)


def run_bench(settings: BenchSettings, workdir: Path, *, log: Any = print) -> dict[str, Any]:
    """Runs the chosen scenarios; returns the results (JSON-ready), targets included."""
    results: dict[str, Any] = {
        "machine": {
            **machine(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "event_loop": "uvloop (services.common.server.run_service)",
            "telemetry": "whatever the router does by default (pre-telemetry router at the time of writing)",
        },
        "settings": settings.as_dict(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timings_s": {},
    }
    chosen = set(settings.scenarios)
    plan = [
        ("hop", {"hop", "memory"}, hop.run),
        ("real_path", {"real_path"}, real_path.run),
        ("hedging", {"hedging"}, hedging.run),
        ("failover", {"failover"}, failover.run),
        ("agent", {"agent"}, agent.run),
        ("litellm", {"litellm"}, litellm.run),
        ("streaming", {"streaming"}, streaming.run),
    ]
    with LoadWorker() as worker:
        for name, covers, scenario in plan:
            if not covers & chosen:
                continue
            log(f"running {name} ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            scenario_dir = workdir / name
            scenario_dir.mkdir(parents=True, exist_ok=True)
            results[name] = scenario(settings, worker, scenario_dir)
            if "skipped" in results[name]:
                log(f"  {name} skipped: {results[name]['skipped']}", file=sys.stderr, flush=True)
            results["timings_s"][name] = round(time.monotonic() - began, 1)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["targets"] = targets.evaluate(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = settings_from(args)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmmesh-bench-") as workdir:
        results = run_bench(settings, Path(workdir))
    results["timings_s"]["total"] = round(time.monotonic() - began, 1)
    print(report.render(results))
    report.write_json(results, args.out)
    print(f"\nwrote {args.out} ({results['timings_s']['total']:.0f} s)")
    return 0

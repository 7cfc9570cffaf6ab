"""The printed tables and the JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _cell(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (it reads on a terminal and pastes into the README)."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(header), *(len(row[i]) for row in cells)) if cells else len(header) for i, header in enumerate(headers)
    ]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)


def _loadavg(values: Sequence[float] | None) -> str:
    return " / ".join(f"{value:.2f}" for value in values) if values else "–"


def _cpu(figures: dict[str, Any]) -> str:
    return " + ".join(f"{name} {us:,.0f}" for name, us in figures.get("cpu_us_per_request", {}).items())


def _errors(figures: dict[str, Any]) -> str:
    return ", ".join(f"{code} {count}" for code, count in figures.get("errors", {}).items()) or "0"


def render(results: dict[str, Any]) -> str:
    """Every scenario's table, with the machine and settings on top."""
    out: list[str] = []
    machine = results["machine"]
    out.append(
        f"Machine: {machine['nproc']} CPU(s), {machine['cpu_model']}, Python {machine['python']}, "
        f"grpcio {machine['grpcio']}, load average at start {_loadavg(machine.get('load_average_at_start'))}, "
        f"at end {_loadavg(machine.get('load_average_at_end'))} (other work on the machine shows here)"
    )
    settings = results["settings"]
    out.append(
        f"Settings: {settings['runs']} run(s) per figure (medians), warm-up {settings['warmup_s']} s, "
        f"window {settings['duration_s']} s{' (quick)' if settings['quick'] else ''}; "
        "CPU is µs per request per server process; errors are totals over runs."
    )
    hop = results.get("hop")
    if hop and hop.get("unary"):
        out.append("\n### 1. Hop overhead, unary (mock adapter, zero delay)\n")
        rows = []
        for entry in hop["unary"]:
            for target in ("direct", "proxy", "router"):
                figures = entry["targets"][target]
                rows.append(
                    [
                        entry["concurrency"],
                        target,
                        figures["rps"],
                        figures["p50_ms"],
                        figures["p99_ms"],
                        _cpu(figures),
                        _errors(figures),
                    ]
                )
        out.append(table(["c", "path", "RPS", "p50 ms", "p99 ms", "CPU µs/req", "errors"], rows))
        out.append("")
        rows = [
            [
                entry["concurrency"],
                entry["ratios"]["router_over_proxy_rps"],
                entry["ratios"]["proxy_over_direct_rps"],
                entry["ratios"]["router_over_direct_rps"],
                entry["ratios"]["proxy_added_p50_ms"],
                entry["ratios"]["router_added_p50_ms"],
                entry["ratios"]["router_over_proxy_cpu"],
            ]
            for entry in hop["unary"]
        ]
        out.append(
            table(
                [
                    "c",
                    "router/proxy RPS",
                    "proxy/direct RPS",
                    "router/direct RPS",
                    "proxy +p50 ms",
                    "router +p50 ms",
                    "router/proxy CPU per req",
                ],
                rows,
            )
        )
    if hop and hop.get("streaming"):
        out.append("\n### 1b. Streaming: time to first chunk\n")
        rows = []
        for entry in hop["streaming"]:
            for target in ("direct", "proxy", "router"):
                figures = entry["targets"][target]
                rows.append(
                    [
                        entry["concurrency"],
                        target,
                        figures["rps"],
                        figures.get("ttfc_p50_ms", math.nan),
                        figures.get("ttfc_p99_ms", math.nan),
                        figures["p50_ms"],
                        _cpu(figures),
                        _errors(figures),
                    ]
                )
        out.append(
            table(
                ["c", "path", "streams/s", "TTFC p50 ms", "TTFC p99 ms", "whole p50 ms", "CPU µs/stream", "errors"],
                rows,
            )
        )
    real = results.get("real_path")
    if real:
        out.append("\n### 2. Real path: router → OpenAI adapter (openai SDK) → loopback fake OpenAI\n")
        rows = []
        for entry in real["rows"]:
            for target in ("adapter", "router"):
                figures = entry["targets"][target]
                rows.append(
                    [
                        entry["concurrency"],
                        target,
                        figures["rps"],
                        figures["p50_ms"],
                        figures["p99_ms"],
                        _cpu(figures),
                        _errors(figures),
                    ]
                )
        out.append(table(["c", "entry", "RPS", "p50 ms", "p99 ms", "CPU µs/req", "errors"], rows))
    hedging = results.get("hedging")
    if hedging:
        out.append(
            f"\n### 3. Hedging (2 mock instances, {hedging['latency']}; hedge after {hedging['hedge_delay_ms']} ms; "
            f"hedge budget {hedging['hedge_budget']})\n"
        )
        rows = []
        for variant in ("no_hedge", "hedge"):
            figures = hedging[variant]
            rows.append(
                [
                    variant.replace("_", " "),
                    figures["rps"],
                    figures["p50_ms"],
                    figures["p99_ms"],
                    figures["extra_upstream_share"] * 100,
                    figures["hedged_attempt_share"] * 100,
                    _errors(figures),
                ]
            )
        out.append(
            table(
                ["strategy", "RPS", "p50 ms", "p99 ms", "extra upstream calls %", "hedged attempts %", "errors"], rows
            )
        )
        out.append(
            f"\np99 cut: {hedging['p99_cut']:.1f}× for {hedging['extra_upstream_share'] * 100:.1f}% extra upstream calls"
        )
    failover = results.get("failover")
    if failover:
        out.append(
            f"\n### 4. Failover (2 mock instances, c={failover['concurrency']}, one SIGKILLed "
            f"{failover['kill_after_s']} s into a {failover['duration_s']} s window)\n"
        )
        rows = [
            [
                index + 1,
                run["requests"],
                run["failed"],
                run["failed_after_kill"],
                run["failed_circuit_open"],
                run["attempts_to_dead"],
                run["last_attempt_to_dead_after_kill_s"],
                run["dead_still_picked_at_end"],
                _errors(run),
            ]
            for index, run in enumerate(failover["runs"])
        ]
        out.append(
            table(
                [
                    "run",
                    "requests",
                    "failed",
                    "failed after kill",
                    "of which circuit open",
                    "attempts to dead",
                    "last to dead (s after kill)",
                    "still picked at end",
                    "errors",
                ],
                rows,
            )
        )
    agent = results.get("agent")
    if agent:
        out.append("\n### 5. Agent step overhead (one-step run vs the bare router call it makes)\n")
        rows = []
        for entry in agent["rows"]:
            for target in ("router", "agent"):
                figures = entry["targets"][target]
                rows.append(
                    [entry["concurrency"], target, figures["rps"], figures["p50_ms"], figures["p99_ms"], _cpu(figures)]
                )
            rows.append([entry["concurrency"], "agent − router p50", "", entry["added_p50_ms"], "", ""])
        out.append(table(["c", "call", "RPS", "p50 ms", "p99 ms", "CPU µs/req"], rows))
    memory = (hop or {}).get("memory")
    if memory:
        out.append(f"\n### 6. Memory (peak RSS over a c={memory['concurrency']} router load; idle RSS after start)\n")
        rows = [
            [
                role,
                memory["idle_kib"][role]["VmRSS"] / 1024,
                memory["under_load_kib"][role]["VmHWM"] / 1024,
                memory["under_load_kib"][role]["VmRSS"] / 1024,
            ]
            for role in ("router", "adapter")
        ]
        out.append(table(["process", "idle RSS MiB", "peak RSS MiB (VmHWM)", "RSS after MiB"], rows))
    targets = results.get("targets")
    if targets:
        out.append("\n### Targets\n")
        out.append(
            table(
                ["target", "goal", "measured", "met"],
                [[t["name"], t["goal"], t["measured"], "yes" if t["met"] else "NO"] for t in targets],
            )
        )
    return "\n".join(out)


def write_json(results: dict[str, Any], path: Path) -> None:
    """Strict JSON: NaN (a figure with no samples) becomes null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_strict(results), indent=2, allow_nan=False) + "\n")


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value

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
    lite = results.get("litellm")
    if lite:
        out += _litellm_section(lite)
    stream = results.get("streaming")
    if stream:
        out += _streaming_section(stream)
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


_LITELLM_PATHS = (
    ("upstream", "upstream direct (HTTP)"),
    ("litellm", "LiteLLM proxy (HTTP)"),
    ("mesh_grpc", "mesh, gRPC"),
    ("mesh_http", "mesh, HTTP door"),
)


def _litellm_section(lite: dict[str, Any]) -> list[str]:
    out = ["\n### 7. Against LiteLLM's proxy (same fake upstream, same load client, one run side by side)\n"]
    if "skipped" in lite:
        return [*out, f"skipped: {lite['skipped']}"]
    rows = []
    for entry in lite["unary"]:
        for key, label in _LITELLM_PATHS:
            found = entry["targets"][key]
            rows.append(
                [
                    entry["concurrency"],
                    label,
                    found["rps"],
                    found["p50_ms"],
                    found["p99_ms"],
                    _cpu(found),
                    _errors(found),
                ]
            )
    out.append(f"LiteLLM {lite['litellm_version']}, one worker. Unary:\n")
    out.append(table(["c", "path", "RPS", "p50 ms", "p99 ms", "CPU µs/req", "errors"], rows))
    stream = lite["streaming"]
    rows = []
    for key, label in _LITELLM_PATHS:
        found = stream["targets"][key]
        rows.append(
            [
                label,
                found["rps"],
                found["p50_ms"],
                found.get("chunks_per_stream", math.nan),
                found.get("lag_p99_ms", math.nan),
                _cpu(found),
                _errors(found),
            ]
        )
    out.append(f"\nStreams (c={stream['concurrency']}):\n")
    out.append(
        table(["path", "streams/s", "whole p50 ms", "events/stream", "lag p99 ms", "CPU µs/stream", "errors"], rows)
    )
    ratios = lite["ratios"]
    per_chunk = ratios["cpu_us_per_chunk"]
    rows = [
        [
            label,
            ratios.get(f"{door}_over_litellm_rps", math.nan),
            ratios.get("added_p50_ms", {}).get(door, math.nan),
            ratios.get("added_p50_ms", {}).get("litellm", math.nan),
            ratios.get(f"{door}_added_p50_over_litellm", math.nan),
            per_chunk[door],
            per_chunk["litellm"],
            ratios[f"{door}_cpu_per_chunk_over_litellm"],
        ]
        for door, label in (("mesh_grpc", "gRPC"), ("mesh_http", "HTTP door"))
    ]
    out.append("")
    out.append(
        table(
            [
                "mesh door",
                f"RPS ÷ LiteLLM at c={ratios.get('rps_concurrency', '?')}",
                f"+p50 ms at c={ratios.get('p50_concurrency', '?')}",
                "LiteLLM +p50 ms",
                "+p50 ÷ LiteLLM's",
                "router+adapter CPU µs/chunk",
                "LiteLLM CPU µs/chunk",
                "CPU/chunk ÷ LiteLLM",
            ],
            rows,
        )
    )
    return out


def _streaming_section(stream: dict[str, Any]) -> list[str]:
    fast, slow = stream["fast"], stream["slow"]
    found = fast["figures"]
    out = [
        f"\n### 8. Streaming: router → OpenAI adapter → fake upstream ({fast['chunks']}-chunk streams, "
        f"c={fast['concurrency']}, back to back)\n"
    ]
    per_chunk = " + ".join(f"{name} {us:,.0f}" for name, us in found.get("cpu_us_per_chunk", {}).items())
    out.append(
        table(
            ["streams/s", "whole p50 ms", "TTFC p50 ms", "lag p50 ms", "lag p99 ms", "CPU µs/chunk", "errors"],
            [
                [
                    found["rps"],
                    found["p50_ms"],
                    found.get("ttfc_p50_ms", math.nan),
                    found["lag_p50_ms"],
                    found["lag_p99_ms"],
                    per_chunk,
                    _errors(found),
                ]
            ],
        )
    )
    out.append(
        f"\n{slow['streams']} slow streams at once ({slow['chunks_per_stream']} chunks, one every "
        f"{slow['interval_ms']:.0f} ms, starts spread over {slow['ramp_s']} s): {slow['ok']} ok, errors "
        f"{_errors(slow)}, {slow['content_chunks_received']:,} of {slow['content_chunks_expected']:,} chunks, "
        f"lag p50 {slow['lag_p50_ms']:.1f} ms, p99 {slow['lag_p99_ms']:.1f} ms, max {slow['lag_max_ms']:.1f} ms; "
        f"wall {slow['wall_s']:.1f} s ({slow['chunks_per_s']:,.0f} chunks/s); a stream took "
        f"{slow['stream_p50_s']:.2f} s at p50 (nominal {slow['nominal_stream_s']:.2f} s), "
        f"first chunk at p50 {slow['ttfc_p50_s']:.2f} s, p99 {slow['ttfc_p99_s']:.2f} s\n"
    )
    rows = [
        [
            role,
            slow["idle_kib"][role]["VmRSS"] / 1024,
            slow["under_load_kib"][role]["VmHWM"] / 1024,
            slow["cpu_s"].get(role, math.nan),
        ]
        for role in ("router", "adapter", "fake")
    ]
    out.append(table(["process", "idle RSS MiB", "peak RSS MiB (VmHWM)", "CPU s over the run"], rows))
    return out


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

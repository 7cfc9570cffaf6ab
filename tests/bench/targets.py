"""The issue's targets, checked against a run's results."""

from __future__ import annotations

from typing import Any


def _unary_at(results: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    for entry in results.get("hop", {}).get("unary", []):
        if entry["concurrency"] == concurrency:
            return entry
    return None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target the run measured: name, goal, measured value, met."""
    rows: list[dict[str, Any]] = []
    single = _unary_at(results, 1)
    if single is not None:
        added = single["ratios"]["router_added_p50_ms"]
        rows.append(
            {
                "name": "router hop at c=1",
                "goal": "≤ 1.0 ms p50 over direct",
                "measured": f"+{added:.2f} ms",
                "met": added <= 1.0,
            }
        )
    sixty_four = _unary_at(results, 64)
    if sixty_four is not None:
        share = sixty_four["ratios"]["router_over_proxy_rps"]
        rows.append(
            {
                "name": "router RPS at c=64",
                "goal": "≥ 70% of the bare proxy",
                "measured": f"{share:.0%}",
                "met": share >= 0.70,
            }
        )
    hedging = results.get("hedging")
    if hedging:
        cut, extra = hedging["p99_cut"], hedging["extra_upstream_share"]
        rows.append(
            {
                "name": "hedging",
                "goal": "p99 cut ≥ 5× for ≤ 10% extra calls",
                "measured": f"{cut:.1f}× for {extra:.1%}",
                "met": cut >= 5 and extra <= 0.10,
            }
        )
    failover = results.get("failover")
    if failover:
        failed = failover["failed_total"]
        rows.append(
            {"name": "failover", "goal": "0 failed requests", "measured": f"{failed} failed", "met": failed == 0}
        )
    rows += _litellm_targets(results.get("litellm") or {})
    rows += _streaming_targets(results.get("streaming") or {})
    memory = results.get("hop", {}).get("memory")
    if memory:
        megabytes = memory["under_load_kib"]["router"]["VmHWM"] * 1024 / 1e6
        rows.append(
            {
                "name": f"router RSS at c={memory['concurrency']}",
                "goal": "≤ 150 MB peak",
                "measured": f"{megabytes:.0f} MB",
                "met": megabytes <= 150,
            }
        )
    return rows


def _litellm_targets(lite: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's goals against LiteLLM, for the mesh's gRPC path (the HTTP door's figures are in the table)."""
    ratios = lite.get("ratios")
    if not ratios:
        return []
    rps = ratios["mesh_grpc_over_litellm_rps"]
    added = ratios["mesh_grpc_added_p50_over_litellm"]
    per_chunk = ratios["mesh_grpc_cpu_per_chunk_over_litellm"]
    return [
        {
            "name": f"mesh RPS vs LiteLLM at c={ratios['rps_concurrency']}",
            "goal": "≥ 8×",
            "measured": f"{rps:.1f}×",
            "met": rps >= 8,
        },
        {
            "name": f"mesh added p50 vs LiteLLM's at c={ratios['p50_concurrency']}",
            "goal": "≤ 1/5",
            "measured": f"{added:.2f}",
            "met": added <= 0.2,
        },
        {
            "name": "router+adapter CPU per chunk vs LiteLLM",
            "goal": "≤ 1/8",
            "measured": f"{per_chunk:.2f}",
            "met": per_chunk <= 0.125,
        },
    ]


def _streaming_targets(stream: dict[str, Any]) -> list[dict[str, Any]]:
    slow = stream.get("slow")
    if not slow:
        return []
    failed = sum(slow["errors"].values())
    missing = slow["content_chunks_expected"] - slow["content_chunks_received"]
    peak_mb = max(slow["under_load_kib"][role]["VmHWM"] for role in ("router", "adapter")) * 1024 / 1e6
    lag = slow["lag_p99_ms"]
    return [
        {
            "name": f"{slow['streams']} slow streams: errors",
            "goal": "0 errors, every chunk",
            "measured": f"{failed} errors, {missing} chunks missing",
            "met": failed == 0 and missing == 0,
        },
        {
            "name": f"{slow['streams']} slow streams: chunk lag p99",
            "goal": "≤ 50 ms",
            "measured": f"{lag:.1f} ms",
            "met": lag <= 50,
        },
        {
            "name": f"{slow['streams']} slow streams: peak RSS",
            "goal": "≤ 150 MB each (router, adapter)",
            "measured": f"{peak_mb:.0f} MB (larger)",
            "met": peak_mb <= 150,
        },
    ]

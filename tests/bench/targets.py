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

"""The benchmark harness still runs: scenarios 1, 4, 6 and 8 once, at tiny settings, over real processes.

Kept to the scenarios that exercise every part of the harness (load worker,
bare proxy, router and mock processes, streaming, per-request records, the
mid-run SIGKILL, /proc readings, report, JSON) in about ten seconds, and
the streaming scenario over the real OpenAI adapter and the fake upstream's
stamped streams. Scenario 7 (LiteLLM) is left out: its proxy's start and
load take about a minute even at --quick (the venv it runs from is the one
tests/router/test_litellm_client.py uses); only its skipped report is
checked. `make bench ARGS=--quick` runs them all.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from tests.bench import report
from tests.bench.cli import main, run_bench
from tests.bench.settings import QUICK

TINY = dataclasses.replace(
    QUICK,
    warmup_s=0.1,
    duration_s=0.3,
    concurrencies=(2,),
    stream_concurrencies=(2,),
    failover_concurrency=2,
    failover_duration_s=0.8,
    failover_kill_after_s=0.3,
    memory_concurrency=8,
    scenarios=("hop", "memory", "failover"),
)


STREAM_TINY = dataclasses.replace(
    QUICK,
    warmup_s=0.1,
    duration_s=0.3,
    stream_chunks=5,
    stream_concurrency=2,
    slow_streams=4,
    slow_stream_chunks=3,
    slow_interval_s=0.05,
    slow_ramp_s=0.1,
    scenarios=("streaming",),
)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_bench(STREAM_TINY, tmp_path_factory.mktemp("bench-stream"), log=lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_bench(TINY, tmp_path_factory.mktemp("bench"), log=lambda *args, **kwargs: None)


class TestBenchHarness:
    def test_hop_compares_direct_proxy_and_router(self, results: dict) -> None:
        """Scenario 1 loads all three paths, without errors, and reports CPU per request of each server."""
        entry = results["hop"]["unary"][0]
        for target in ("direct", "proxy", "router"):
            figures = entry["targets"][target]
            assert figures["ok"] > 0, target
            assert figures["errors"] == {}, target
            assert figures["cpu_us_per_request"]["adapter"] > 0
        assert set(entry["targets"]["router"]["cpu_us_per_request"]) == {"router", "adapter"}
        assert set(entry["targets"]["proxy"]["cpu_us_per_request"]) == {"proxy", "adapter"}
        assert math.isfinite(entry["ratios"]["router_over_proxy_rps"])

    def test_streams_report_time_to_first_chunk(self, results: dict) -> None:
        """Streaming runs measure the first chunk before the whole stream."""
        router = results["hop"]["streaming"][0]["targets"]["router"]
        assert router["ok"] > 0
        assert 0 < router["ttfc_p50_ms"] <= router["p50_ms"]

    def test_failover_kills_one_instance(self, results: dict) -> None:
        """The failover run saw the kill: its requests are counted and the dead address is tracked."""
        run = results["failover"]["runs"][0]
        assert run["requests"] > 0
        assert run["failed"] == sum(run["errors"].values())

    def test_memory_is_read_under_load(self, results: dict) -> None:
        """Peak RSS of router and adapter is read after a router load with their peaks reset first."""
        memory = results["hop"]["memory"]
        assert memory["load"]["ok"] > 0
        assert memory["under_load_kib"]["router"]["VmHWM"] >= memory["under_load_kib"]["router"]["VmRSS"] > 0

    def test_report_renders_every_scenario_and_target(self, results: dict) -> None:
        """The printed report has each scenario's section and the targets table."""
        text = report.render(results)
        for heading in ("### 1.", "### 1b.", "### 4.", "### 6.", "### Targets"):
            assert heading in text
        assert {row["name"] for row in results["targets"]} == {"failover", "router RSS at c=8"}


class TestStreamingScenario:
    def test_fast_streams_report_cpu_per_chunk_and_lag(self, streamed: dict) -> None:
        """Back-to-back streams through router and adapter: every content chunk arrives, stamped, CPU per chunk."""
        fast = streamed["streaming"]["fast"]["figures"]
        assert fast["ok"] > 0
        assert fast["errors"] == {}
        # 5 content chunks plus the role, finish and usage events, however the mesh frames them.
        assert fast["chunks_per_stream"] >= 1
        assert 0 <= fast["lag_p50_ms"] <= fast["lag_p99_ms"]
        assert set(fast["cpu_us_per_chunk"]) == {"router", "adapter", "fake"}
        assert fast["cpu_us_per_chunk"]["adapter"] > 0

    def test_slow_streams_are_held_open_at_once(self, streamed: dict) -> None:
        """Each of the N slow streams is one call; every stamped chunk of every stream is counted."""
        slow = streamed["streaming"]["slow"]
        assert slow["ok"] == 4
        assert slow["errors"] == {}
        assert slow["content_chunks_received"] == slow["content_chunks_expected"] == 12
        # Three chunks 50 ms apart: no stream can be shorter than the two gaps.
        assert slow["stream_p50_s"] >= 0.1
        for role in ("router", "adapter", "fake"):
            assert slow["under_load_kib"][role]["VmHWM"] > 0, role

    def test_report_and_targets_name_the_streaming_goals(self, streamed: dict) -> None:
        text = report.render({**streamed, "litellm": {"skipped": "no index reachable"}})
        assert "### 8." in text
        assert "### 7." in text
        assert "skipped: no index reachable" in text
        names = {row["name"] for row in streamed["targets"]}
        assert "4 slow streams: chunk lag p99" in names
        assert next(row for row in streamed["targets"] if row["name"] == "4 slow streams: errors")["met"]


class TestBenchCommand:
    def test_bad_scenario_name_is_refused(self) -> None:
        """--only with an unknown scenario stops before starting anything, naming the choices."""
        with pytest.raises(SystemExit, match="unknown scenario"):
            main(["--only", "hop,warp"])

    def test_writes_strict_json(self, results: dict, tmp_path: Path) -> None:
        """The JSON file parses strictly (NaN written as null) and names the machine."""
        out = tmp_path / "latest.json"
        report.write_json({**results, "extra": float("nan")}, out)
        loaded = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"non-strict JSON: {name}"))
        assert loaded["extra"] is None
        assert loaded["machine"]["nproc"] >= 1

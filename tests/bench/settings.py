"""Run settings: the full default run and the `--quick` one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCENARIOS = ("hop", "real_path", "hedging", "failover", "agent", "memory", "litellm", "streaming")


@dataclass(frozen=True)
class BenchSettings:
    """How long and how hard each scenario runs; every figure is a median over `runs`."""

    runs: int = 3
    warmup_s: float = 1.0
    duration_s: float = 3.0
    #: Scenario 1 (unary hop overhead).
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    #: Scenario 1 (time to first chunk).
    stream_concurrencies: tuple[int, ...] = (1, 16)
    #: Scenario 2 (router → OpenAI adapter → fake OpenAI).
    real_path_concurrencies: tuple[int, ...] = (16, 64)
    #: Scenario 3: the tail needs samples; p99 of ~1,700 requests per run at c=32.
    hedge_concurrency: int = 32
    hedge_duration_s: float = 8.0
    #: Scenario 4: one instance is killed this long into the measured window.
    failover_concurrency: int = 16
    failover_duration_s: float = 8.0
    failover_kill_after_s: float = 3.0
    #: Scenario 5.
    agent_concurrencies: tuple[int, ...] = (1, 16)
    #: Scenario 6.
    memory_concurrency: int = 256
    #: Scenario 7 (against LiteLLM's proxy): unary concurrencies, then 50-chunk streams at one concurrency.
    litellm_concurrencies: tuple[int, ...] = (1, 16, 64)
    litellm_stream_concurrency: int = 16
    #: Content chunks in each streamed answer of scenarios 7 and 8 (fast streams).
    stream_chunks: int = 50
    #: Scenario 8: fast streams at this concurrency for CPU per chunk and chunk lag.
    stream_concurrency: int = 16
    #: Scenario 8: this many slow streams open at once, a chunk every `slow_interval_s`.
    slow_streams: int = 1000
    slow_stream_chunks: int = 30
    slow_interval_s: float = 0.1
    #: The slow streams' starts are spread over this long.
    slow_ramp_s: float = 3.0
    scenarios: tuple[str, ...] = SCENARIOS
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = BenchSettings(
    runs=1,
    warmup_s=0.3,
    duration_s=1.0,
    concurrencies=(1, 64),
    stream_concurrencies=(1,),
    real_path_concurrencies=(16,),
    hedge_duration_s=3.0,
    failover_duration_s=3.0,
    failover_kill_after_s=1.0,
    agent_concurrencies=(1,),
    litellm_concurrencies=(1, 64),
    litellm_stream_concurrency=4,
    stream_concurrency=4,
    slow_streams=50,
    slow_stream_chunks=10,
    slow_ramp_s=1.0,
    quick=True,
)

"""What the router learns from answers: latency per model, headroom per provider."""

from __future__ import annotations

import time
from collections import deque

from llmmesh.v1 import chat_pb2

_LATENCY_SAMPLES = 256
_MIN_SAMPLES_FOR_P95 = 20
# Headroom without a reset time is trusted for this long.
_HEADROOM_TTL_SECONDS = 60.0


class LatencyTracker:
    """Recent successful attempt latencies per model, for p95 hedge delays."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[float]] = {}

    def record(self, model: str, seconds: float) -> None:
        samples = self._samples.get(model)
        if samples is None:
            samples = self._samples[model] = deque(maxlen=_LATENCY_SAMPLES)
        samples.append(seconds)

    def p95(self, model: str) -> float | None:
        samples = self._samples.get(model)
        if samples is None or len(samples) < _MIN_SAMPLES_FOR_P95:
            return None
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


class HeadroomTracker:
    """The last rate-limit headroom each provider instance reported."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, chat_pb2.RateLimitHeadroom]] = {}

    def record(self, provider: str, headroom: chat_pb2.RateLimitHeadroom) -> None:
        if headroom.ListFields():
            self._last[provider] = (time.monotonic(), headroom)

    def is_low(self, provider: str, ratio: float) -> bool:
        """True while the provider's last report left less than `ratio` of a limit."""
        entry = self._last.get(provider)
        if entry is None:
            return False
        seen, headroom = entry
        age = time.monotonic() - seen
        for remaining, limit, reset in (
            ("remaining_requests", "limit_requests", "requests_reset"),
            ("remaining_tokens", "limit_tokens", "tokens_reset"),
        ):
            if not headroom.HasField(remaining) or not headroom.HasField(limit) or getattr(headroom, limit) <= 0:
                continue
            ttl = getattr(headroom, reset).ToNanoseconds() / 1e9 if headroom.HasField(reset) else _HEADROOM_TTL_SECONDS
            if age < ttl and getattr(headroom, remaining) / getattr(headroom, limit) < ratio:
                return True
        return False

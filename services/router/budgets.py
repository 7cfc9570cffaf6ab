"""Sliding-window budgets for extra upstream calls (retries, hedges).

A budget admits an extra call while extras stay below `ratio` × requests
seen in the window, plus `min_per_second` × window as a floor, the shape
Finagle and Envoy use: a healthy service barely touches it, an outage
cannot turn every request into 1 + max_retries upstream calls.
"""

from __future__ import annotations

import time
from collections import deque

from services.router.config import Budget


class SlidingBudget:
    """Counts requests and extra calls over the last `window_s` seconds."""

    def __init__(self, settings: Budget) -> None:
        self._settings = settings
        self._requests: deque[float] = deque()
        self._extras: deque[float] = deque()
        self._now = time.monotonic

    def _trim(self, now: float) -> None:
        horizon = now - self._settings.window_s
        for queue in (self._requests, self._extras):
            while queue and queue[0] < horizon:
                queue.popleft()

    def record_request(self) -> None:
        self._requests.append(self._now())

    def try_spend(self) -> bool:
        """Takes one extra call from the budget if there is room."""
        now = self._now()
        self._trim(now)
        allowed = self._settings.ratio * len(self._requests) + self._settings.min_per_second * self._settings.window_s
        if len(self._extras) + 1 > allowed:
            return False
        self._extras.append(now)
        return True

"""How much of a caller's deadline the router keeps back for its own answer.

The router ends its attempts a little before the caller's deadline so that
its DEADLINE_EXCEEDED, with the attempts list, reaches the caller before the
caller's own timer fires with a bare "Deadline Exceeded". A fixed 5 ms is
too little once the event loop is busy: under load the error is built and
sent tens of milliseconds late, and requests that started together reach
their deadlines together, each needing the loop for a moment to fail its
attempts and answer. So the margin adapts: the largest of a share of the
request's whole time (measured: 5 % of 1 s left 64 of 150 simultaneous
callers to their own timers, 10 % none), a few times the event loop's recent
lateness (how late timed wake-ups run), and a moment per request in flight;
never more than a quarter of the request's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

FLOOR_SECONDS = 0.005
SHARE_OF_DEADLINE = 0.1
# The share stops growing here: a long request needs no more than a slow loop does.
MAX_SHARE_SECONDS = 0.5
MAX_SHARE_OF_DEADLINE = 0.25
# Loop time one request needs to fail its attempts and send its error when many end together.
SECONDS_PER_REQUEST_IN_FLIGHT = 0.001
LATENESS_FACTOR = 3.0
# Recent lateness halves every this many seconds once the load is gone.
LATENESS_HALF_LIFE_SECONDS = 2.0
SAMPLE_EVERY_SECONDS = 0.05


class DeadlineMargin:
    """The margin for one request, from its whole time and the loop's recent lateness."""

    def __init__(self) -> None:
        self._lateness = 0.0
        self._seen_at = time.monotonic()
        self._watcher: asyncio.Task[None] | None = None
        self.in_flight = 0

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Counts a request in flight while it runs."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def observe_lateness(self, seconds: float) -> None:
        """A timed wake-up ran `seconds` after it was due."""
        now = time.monotonic()
        decayed = self._lateness * 0.5 ** ((now - self._seen_at) / LATENESS_HALF_LIFE_SECONDS)
        self._lateness = max(decayed, max(seconds, 0.0))
        self._seen_at = now

    def recent_lateness(self) -> float:
        return self._lateness * 0.5 ** ((time.monotonic() - self._seen_at) / LATENESS_HALF_LIFE_SECONDS)

    def for_request(self, whole_seconds: float) -> float:
        """Seconds to keep back from a request that had `whole_seconds` when it arrived."""
        wanted = max(
            FLOOR_SECONDS,
            min(SHARE_OF_DEADLINE * whole_seconds, MAX_SHARE_SECONDS),
            LATENESS_FACTOR * self.recent_lateness(),
            SECONDS_PER_REQUEST_IN_FLIGHT * self.in_flight,
        )
        return min(wanted, max(FLOOR_SECONDS, MAX_SHARE_OF_DEADLINE * whole_seconds))

    def start(self) -> None:
        """Samples the loop's lateness in the background (the router process does this; tests need not)."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + SAMPLE_EVERY_SECONDS
            await asyncio.sleep(SAMPLE_EVERY_SECONDS)
            self.observe_lateness(loop.time() - due)

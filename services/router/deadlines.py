"""How much of a caller's deadline the router keeps back for its own answer.

The router ends its attempts a little before the caller's deadline so that
its DEADLINE_EXCEEDED, with the attempts list, reaches the caller before the
caller's own timer fires with a bare "Deadline Exceeded". A fixed 5 ms is
too little once the event loop is busy: under load the error is built and
sent tens of milliseconds late. So the margin adapts: a share of the
request's whole time, and at least a few times the event loop's recent
lateness (how late timed wake-ups run), never more than a quarter of the
request's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

FLOOR_SECONDS = 0.005
SHARE_OF_DEADLINE = 0.04
MAX_SHARE_OF_DEADLINE = 0.25
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
        wanted = max(FLOOR_SECONDS, SHARE_OF_DEADLINE * whole_seconds, LATENESS_FACTOR * self.recent_lateness())
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

"""The executor for unary requests: FALLBACK, HEDGE and FANOUT as one state machine.

    STARTING ──something runs──▶ WAITING
    STARTING ──nothing runs, a retry is due later──▶ BACKING_OFF
    STARTING ──nothing runs, nothing may start──▶ EXHAUSTED
    WAITING ──an answer (FANOUT_ALL: all answers)──▶ WON
    WAITING ──an attempt ended, a hedge or retry fell due──▶ STARTING
    WAITING / BACKING_OFF ──the deadline (less the margin)──▶ TIMED_OUT
    BACKING_OFF ──the retry is due──▶ STARTING

STARTING asks the strategy what may start now (nothing, the next candidate,
or a hedge) and admits attempts through the race; each runs as a task
inside `Race.attempt()`, which settles it however it ends. Leaving the
machine, for whatever reason, cancels what still runs: as a lost race when
there is an answer, as the caller's when the deadline or the caller ended it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace

from services.router.attempts import CALLER_GONE, LOST_RACE, OUT_OF_TIME, Event, State
from services.router.race import Flight, Race


class Phase(enum.Enum):
    STARTING = "starting"
    WAITING = "waiting"
    BACKING_OFF = "backing_off"
    WON = "won"
    EXHAUSTED = "exhausted"
    TIMED_OUT = "timed_out"


_TERMINAL = frozenset({Phase.WON, Phase.EXHAUSTED, Phase.TIMED_OUT})
_NEVER = float("inf")

Call = Callable[[Flight], Awaitable[Any]]


class Executor:
    """Runs one race's attempts per its plan's strategy."""

    def __init__(self, race: Race, call: Call) -> None:
        self.race = race
        self._call = call
        strategy = race.plan.strategy
        self._fan_out = strategy in ("fanout_first", "fanout_all")
        self._hedging = strategy == "hedge"
        self._collect_all = strategy == "fanout_all"
        self._running: dict[asyncio.Task[None], Flight] = {}
        self.winners: list[Flight] = []
        self._next_hedge_at = _NEVER
        self._failover_due = False

    async def run(self) -> list[Flight]:
        """The winning attempts (answer in `flight.answer`), or the race's error."""
        phase = Phase.STARTING
        try:
            while phase not in _TERMINAL:
                phase = await self._step(phase)
        finally:
            await self._cancel_running(phase)
        self.race.timed_out = phase is Phase.TIMED_OUT
        if self.winners:
            return self.winners
        raise self.race.error()

    async def _step(self, phase: Phase) -> Phase:
        if phase is Phase.STARTING:
            return self._start_what_may_start()
        if phase is Phase.WAITING:
            return await self._wait()
        return await self._back_off()

    # -- STARTING ------------------------------------------------------------------------

    def _start_what_may_start(self) -> Phase:
        while True:
            # A retry's backoff may be under a millisecond: it can fall due between the look and
            # the verdict below, so the verdict compares with when the look was made, not with now.
            looked_at = self.race.now()
            if (kind := self._may_start()) is None:
                break
            if kind == "hedge" and not self._arrange_hedge():
                break
            flight = self.race.admit_next(hedge=kind == "hedge")
            self._failover_due = False
            if flight is None:
                break
            self._launch(flight)
        if self._running:
            return Phase.WAITING
        due = self.race.next_due_at()
        return Phase.BACKING_OFF if due is not None and due > looked_at else Phase.EXHAUSTED

    def _may_start(self) -> str | None:
        """What the strategy lets start now: the "next" candidate, a "hedge", or None."""
        if not self._running or self._fan_out or self._failover_due:
            return "next" if self.race.has_due() else None
        if self._hedging and self.race.now() >= self._next_hedge_at:
            return "hedge"
        return None

    def _arrange_hedge(self) -> bool:
        """Spends the hedge budget on a hedge that has somewhere to go; False when there is none."""
        self._next_hedge_at = _NEVER  # one hedge per delay; the next timer starts with the hedge
        target = self.race.hedge_target()
        # The budget is asked only for a hedge that can go, and the same-model hedge queued only once it said yes.
        if target is None or not self.race.engine.hedge_budget.try_spend():
            return False
        if target == "same":
            self.race.queue_same_model_hedge()
        return True

    def _launch(self, flight: Flight) -> None:
        # The attempt's span is the parent of the adapter's (trace context rides the call).
        task = asyncio.ensure_future(self._attempt(flight))
        self._running[task] = flight
        if self._hedging:
            self._next_hedge_at = self.race.now() + self.race.engine.hedge_delay(self.race.plan, flight.candidate)

    async def _attempt(self, flight: Flight) -> None:
        # `attempt()` starts the span that use_span, entered after it, makes current for the call.
        with (
            self.race.attempt(flight),
            trace.use_span(flight.span, end_on_exit=False, record_exception=False, set_status_on_exception=False),
        ):
            flight.answer = await self._call(flight)

    # -- WAITING / BACKING_OFF -----------------------------------------------------------------

    async def _wait(self) -> Phase:
        wake_at = min(self._next_hedge_at, self.race.stop_at, self.race.next_due_at() or _NEVER)
        done, _ = await asyncio.wait(
            self._running, timeout=max(wake_at - self.race.now(), 0.0), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            self.race.engine.margin.observe_lateness(self.race.now() - wake_at)
        for task in done:
            flight = self._running.pop(task)
            task.result()  # a bug of ours surfaces here, not as a silent loss
            if flight.verdict is not None and flight.verdict.event is Event.SUCCEED:
                self.winners.append(flight)
            else:
                self._failover_due = True  # a failure frees the way for the next candidate at once
        if self.winners and (not self._collect_all or not self._running):
            return Phase.WON
        if self.race.now() >= self.race.stop_at:
            return Phase.TIMED_OUT
        return Phase.STARTING

    async def _back_off(self) -> Phase:
        due = self.race.next_due_at()
        if due is None:
            return Phase.EXHAUSTED
        wake_at = min(due, self.race.stop_at)
        await asyncio.sleep(max(wake_at - self.race.now(), 0.0))
        self.race.engine.margin.observe_lateness(self.race.now() - wake_at)
        return Phase.TIMED_OUT if self.race.now() >= self.race.stop_at else Phase.STARTING

    async def _cancel_running(self, phase: Phase) -> None:
        """Cancels what still runs; each attempt settles itself as the verdict set here says."""
        if not self._running:
            return
        verdict = LOST_RACE if self.winners else OUT_OF_TIME if phase is Phase.TIMED_OUT else CALLER_GONE
        for task, flight in self._running.items():
            flight.cancel_as = verdict
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for flight in self._running.values():
            if flight.machine.state is State.ADMITTED:  # cancelled before its task ever ran
                self.race.withdraw(flight)
        self._running.clear()

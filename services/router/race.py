"""One request's walk over its candidates: choose → admit → run → settle → release.

`Race` owns the candidate queue, the retry and hedge budgets, the attempt
list, and the one place (`settle`) where an attempt's outcome takes effect
on breakers, balancer, latency, the queue and the span. Every path (unary,
streaming, hedged, fan-out) runs its attempts inside `Race.attempt()`, so
whatever ends one (an answer, an error, a cancellation, a stream closed by
its reader) settles and releases it exactly once. The attempt states live
in `attempts.py`; the executor that overlaps attempts in `executor.py`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import grpc
from opentelemetry import trace

from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import (
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_NO_INSTANCE,
    REASON_UPSTREAM_TIMEOUT,
    MeshError,
)
from services.router.attempt_telemetry import AttemptTelemetry
from services.router.attempts import (
    WON,
    AttemptMachine,
    Blame,
    Event,
    Verdict,
    judge_exception,
    move_on_reason,
    retryable,
)
from services.router.balancer import Instance, never_sent
from services.router.breakers import CircuitBreaker
from services.router.config import Candidate
from services.router.race_errors import caller_error, describe

if TYPE_CHECKING:
    from services.router.engine import Plan, RouterEngine

REASON_CIRCUIT_OPEN = "CIRCUIT_OPEN"
# A timeout this close to the caller's deadline (seconds, or share of the attempt's budget) is the caller's.
_SPENT_SLACK_SECONDS = 0.05
_SPENT_SLACK_SHARE = 0.1


@dataclass(slots=True)
class Pending:
    """A candidate waiting its turn; a retry waits until `not_before`, and delays no one else."""

    candidate: Candidate
    retry: int = 0
    hedge: bool = False
    not_before: float = 0.0


@dataclass(slots=True)
class Flight:
    """One admitted attempt: what it took (breakers, an instance) and how it is doing."""

    candidate: Candidate
    instance: Instance
    breakers: tuple[CircuitBreaker, ...]
    budget: float
    capped_by_caller: bool  # the budget is the caller's time left, not the attempt's own timeout
    retry: int
    hedged: bool
    attempt: rpb.Attempt
    machine: AttemptMachine = field(default_factory=AttemptMachine)
    span: trace.Span = trace.INVALID_SPAN
    started: float = 0.0
    verdict: Verdict | None = None
    cancel_as: Verdict | None = None  # set by whoever cancels the attempt, before it does
    answer: Any = None


class Race:
    """Rules, budgets, breakers and the attempt list of one request."""

    def __init__(self, engine: RouterEngine, plan: Plan, deadline: float, *, streaming: bool = False) -> None:
        self.engine = engine
        self.plan = plan
        self.deadline = deadline
        self.streaming = streaming
        self.attempts: list[rpb.Attempt] = []
        self._loop = engine.loop()
        now = self._loop.time()
        # Attempts end this much before the caller's deadline, so our error reaches it first.
        self.stop_at = deadline - engine.margin.for_request(deadline - now)
        self._pending: deque[Pending] = deque(Pending(c) for c in plan.candidates)
        self._last_failure: tuple[Candidate, MeshError, rpb.Attempt] | None = None
        self._last_skip: tuple[Candidate, MeshError, rpb.Attempt] | None = None
        self._stopped = False
        self.timed_out = False
        self._busy: set[tuple[str, str]] = set()
        # Instances this run passes over while another is left: ones it could not connect to, ones that gave up a call.
        self._passed_over: set[str] = set()
        self._same_model_hedges = 0
        self._fallback: tuple[str, str] | None = None  # (from model, why) for the next attempt's span
        self._telemetry = AttemptTelemetry()
        engine.retry_budget.record_request()
        engine.hedge_budget.record_request()

    def now(self) -> float:
        return self._loop.time()

    # -- choosing what runs next ----------------------------------------------------------

    def peek_next(self) -> Candidate | None:
        """The candidate that would be tried next, if any may be."""
        return self._pending[0].candidate if self._pending and not self._stopped else None

    def next_due_at(self) -> float | None:
        """When the earliest waiting candidate may start; None when none may any more."""
        if self._stopped or not self._pending:
            return None
        due = min(pending.not_before for pending in self._pending)
        return due if self._room(self.stop_at - due) else None

    def admit_next(self, *, hedge: bool = False) -> Flight | None:
        """The next due candidate, admitted through breakers and balancer; None when none may start now."""
        while (pending := self._first_due()) is not None:
            if not hedge and self._follow_up(pending) != "try":
                continue  # passed over, or the run stopped (then nothing is due any more)
            room = self._budget(pending.candidate)
            if room is None:
                return None
            flight = self._admit(pending, *room, hedged=hedge or pending.hedge)
            if flight is not None:
                return flight
        return None

    def has_due(self) -> bool:
        """Some candidate may start now."""
        return self._first_due() is not None

    def _first_due(self) -> Pending | None:
        now = self.now()
        if self._stopped:
            return None
        return next((pending for pending in self._pending if pending.not_before <= now), None)

    def _follow_up(self, pending: Pending) -> Literal["try", "passed over", "stop"]:
        """Decides whether `pending` may follow the last failure, and records the decision.

        "try": it may (the failed attempt notes why the router moved on);
        "passed over": not this one (a window no larger than the failed
        model's), the next may; "stop": the error ends the run.
        """
        if self._last_failure is None or pending.retry or pending.hedge:
            return "try"
        failed, error, attempt = self._last_failure
        candidate = pending.candidate
        why = move_on_reason(error, failed, candidate, fallback_on_content_filter=self.plan.fallback_on_content_filter)
        if why is None:
            self._pending.remove(pending)
            if error.reason == REASON_CONTEXT_WINDOW_EXCEEDED:
                self._record_skipped(candidate, "context window not larger than the failed model's")
                return "passed over"
            self._stopped = True
            return "stop"
        if not attempt.moved_on_because:
            attempt.moved_on_because = why
        if failed.name != candidate.name:
            self._fallback = (failed.name, why)
        return "try"

    def _room(self, left: float) -> bool:
        return left * 1000.0 >= self.engine.table.defaults.min_attempt_budget_ms

    def _budget(self, candidate: Candidate) -> tuple[float, bool] | None:
        """The attempt's budget and whether the caller's time left is what bounds it; None below the minimum."""
        left = self.stop_at - self.now()
        own = float("inf") if self.streaming else self.plan.per_attempt_timeout_s or candidate.per_attempt_timeout_s
        budget = min(own, left)
        return (budget, left <= own) if self._room(budget) else None

    def _admit(self, pending: Pending, budget: float, capped: bool, *, hedged: bool) -> Flight | None:
        candidate = pending.candidate
        breakers = self.engine.breakers_of(candidate)
        if not breakers[0].allow(budget):
            self._skip(pending, f"circuit open for {breakers[0].name}")
            return None
        if not breakers[1].allow(budget):
            breakers[0].release()
            self._skip(pending, f"circuit open for {breakers[1].name}")
            return None
        # A same-model hedge wants another instance; another model may share one.
        busy = frozenset(address for name, address in self._busy if name == candidate.name)
        pool = self.engine.balancer.pool(candidate.service)
        instance = pool.pick(busy | self._passed_over) if self._passed_over else None
        instance = instance or pool.pick(busy)
        if instance is None:
            for breaker in breakers:
                breaker.release()
            self._skip(pending, f"no healthy instance of {candidate.service}", reason=REASON_NO_INSTANCE)
            return None
        self._pending.remove(pending)
        attempt = rpb.Attempt(model=candidate.name, provider=candidate.provider, instance=instance.address)
        attempt.hedged = hedged
        return Flight(candidate, instance, breakers, budget, capped, pending.retry, hedged, attempt)

    def _skip(self, pending: Pending, why: str, reason: str = REASON_CIRCUIT_OPEN) -> None:
        """Passes over a candidate; the last real failure still decides who may follow."""
        self._pending.remove(pending)
        skipped = self._record_skipped(pending.candidate, why, reason)
        self._last_skip = (pending.candidate, MeshError(grpc.StatusCode.UNAVAILABLE, why, reason=reason), skipped)

    def _record_skipped(self, candidate: Candidate, why: str, reason: str = "") -> rpb.Attempt:
        skipped = rpb.Attempt(
            model=candidate.name,
            provider=candidate.provider,
            outcome=rpb.ATTEMPT_OUTCOME_SKIPPED,
            code=grpc.StatusCode.UNAVAILABLE.value[0],
            message=why,
        )
        self.attempts.append(skipped)
        self._telemetry.skipped(candidate, skipped, len(self.attempts), reason)
        return skipped

    def keep_only(self, eligible: Callable[[Candidate], bool], why: str) -> None:
        """Drops the waiting candidates that are not `eligible`, each listed as skipped with `why`."""
        for pending in [pending for pending in self._pending if not eligible(pending.candidate)]:
            self._pending.remove(pending)
            self._record_skipped(pending.candidate, why)

    # -- hedges -----------------------------------------------------------------------------

    def hedge_target(self) -> str | None:
        """Where a hedge would go: "next" candidate, "same" model on another instance (once), or None."""
        if self._first_due() is not None:
            return "next"
        if self._same_model_hedges >= 1 or not self.attempts:
            return None
        first = self.plan.candidates[0]
        return "same" if len(self.engine.balancer.pool(first.service)) >= 2 else None

    def queue_same_model_hedge(self) -> None:
        self._same_model_hedges += 1
        self._pending.append(Pending(self.plan.candidates[0], hedge=True))

    # -- the lifecycle --------------------------------------------------------------------

    @contextmanager
    def attempt(self, flight: Flight) -> Iterator[Flight]:
        """Runs one attempt: START on entry; on any exit, the outcome is settled and everything released.

        RPC errors and MeshErrors raised inside are outcomes: recorded, not
        re-raised. Anything else (a cancellation, a reader closing the
        stream, a bug) is recorded and goes on.
        """
        self._start(flight)
        try:
            with flight.instance.track():
                yield flight
        except (grpc.aio.AioRpcError, MeshError) as error:
            if not flight.machine.settled:
                self.settle(flight, self.judge(flight, error))
        except BaseException as exception:
            if not flight.machine.settled:
                self.settle(flight, self.judge(flight, exception))
            raise
        else:
            if not flight.machine.settled:
                self.settle(flight, WON)

    def judge(self, flight: Flight, exception: BaseException) -> Verdict:
        if flight.cancel_as is not None:
            return flight.cancel_as
        pool_size = len(self.engine.balancer.pool(flight.candidate.service))
        return judge_exception(exception, caller_time_spent=self._caller_time_spent(flight), pool_size=pool_size)

    def _caller_time_spent(self, flight: Flight) -> bool:
        """The caller's deadline bounded the attempt and is (about) used up: a timeout now is the caller's.

        An adapter's DEADLINE_EXCEEDED well before that (a provider's 504)
        stays the provider's.
        """
        slack = max(_SPENT_SLACK_SECONDS, _SPENT_SLACK_SHARE * flight.budget)
        return flight.capped_by_caller and self.stop_at - self.now() <= slack

    def _start(self, flight: Flight) -> None:
        flight.machine.process(Event.START)
        self.attempts.append(flight.attempt)
        self._busy.add((flight.candidate.name, flight.instance.address))
        fallback = self._fallback if flight.retry == 0 and not flight.hedged else None
        self._fallback = None
        if fallback is not None:
            self._telemetry.count_fallback(fallback[0], flight.candidate.name)
        flight.span = self._telemetry.start_span(
            flight.attempt,
            len(self.attempts),
            flight.breakers,
            flight.retry,
            fallback[1] if fallback is not None else None,
        )
        flight.started = self.now()

    def withdraw(self, flight: Flight) -> None:
        """An admitted attempt that never started (its task was cancelled first): give back what it took."""
        flight.machine.process(Event.CANCEL)
        for breaker in flight.breakers:
            breaker.release()
        flight.machine.process(Event.RELEASE)

    def first_chunk(self, flight: Flight) -> None:
        flight.machine.process(Event.FIRST_CHUNK)

    def settle(self, flight: Flight, verdict: Verdict) -> None:
        """The one place an outcome takes effect: attempt record, breakers, latency, what runs next, span."""
        sent_output = flight.machine.sent_output
        flight.machine.process(verdict.event)
        flight.verdict = verdict
        seconds = self._record_outcome(flight, verdict)
        self._release_breakers(flight, verdict)
        if verdict.event is Event.SUCCEED:
            self.engine.latency.record(flight.candidate.name, seconds)
        elif verdict.event is Event.FAIL and verdict.error is not None:
            self._last_failure = (flight.candidate, verdict.error, flight.attempt)
            if not sent_output:  # after partial output only a continuation may follow
                self._queue_next(flight, verdict.error)
        self._telemetry.end_span(flight.span, flight.attempt, verdict.code, flight.candidate)
        flight.machine.process(Event.RELEASE)

    def _record_outcome(self, flight: Flight, verdict: Verdict) -> float:
        seconds = self.now() - flight.started
        attempt = flight.attempt
        attempt.outcome = verdict.outcome  # type: ignore[assignment]
        attempt.code = verdict.code.value[0]
        attempt.latency.FromNanoseconds(int(seconds * 1e9))
        if verdict.error is not None:
            attempt.reason = verdict.error.reason
            attempt.message = verdict.error.message
        elif verdict.message:
            attempt.message = verdict.message
        self._busy.discard((flight.candidate.name, flight.instance.address))
        return seconds

    @staticmethod
    def _release_breakers(flight: Flight, verdict: Verdict) -> None:
        for breaker in flight.breakers:
            if verdict.event is Event.SUCCEED:
                breaker.record(grpc.StatusCode.OK)
            elif verdict.blame is Blame.PROVIDER:
                breaker.record(verdict.code)
            else:
                breaker.release()

    # -- retries -------------------------------------------------------------------------

    def _queue_next(self, flight: Flight, error: MeshError) -> None:
        if self._to_another_instance(flight, error):
            return
        self._maybe_retry(flight, error)

    def _to_another_instance(self, flight: Flight, error: MeshError) -> bool:
        """Sends the candidate to another instance when this one never got the call or gave it up.

        Like gRPC's transparent retry, neither spends the retry limit: the
        caller asked for no retry of the provider's answer, and neither is
        one. An instance that cancels a call (a draining adapter past its
        grace) may have started the upstream request, so that move spends
        the retry budget, which caps what a fleet of draining instances can
        cost.
        """
        address = flight.instance.address
        if address in self._passed_over:
            return False
        if never_sent(error):
            why = "could not connect; trying another instance"
        elif error.code == grpc.StatusCode.CANCELLED:
            why = "the instance gave the call up; trying another instance"
        else:
            return False
        self._passed_over.add(address)
        pool_size = len(self.engine.balancer.pool(flight.candidate.service))
        if pool_size <= len(self._passed_over):
            return False
        if error.code == grpc.StatusCode.CANCELLED and not self.engine.retry_budget.try_spend():
            return False
        self._pending.appendleft(Pending(flight.candidate, retry=flight.retry))
        flight.attempt.moved_on_because = why
        return True

    def _maybe_retry(self, flight: Flight, error: MeshError) -> None:
        """Queues the same candidate again when the error, the retry limit, the budget and the deadline allow."""
        candidate = flight.candidate
        limit = self.plan.max_retries if self.plan.max_retries is not None else candidate.max_retries
        if not retryable(error) or flight.retry >= limit:
            return
        defaults = self.engine.table.defaults
        backoff = random.uniform(0, min(defaults.max_backoff_ms, defaults.base_backoff_ms * 2**flight.retry)) / 1000
        wait = max(backoff, error.retry_after or 0.0)
        if not self._room(self.stop_at - self.now() - wait):
            flight.attempt.moved_on_because = (
                f"retry-after {wait:.2f}s does not fit in the time left; moving on"
                if error.retry_after
                else "no time left for a retry; moving on"
            )
            return
        if not self.engine.retry_budget.try_spend():
            flight.attempt.moved_on_because = "retry budget spent; moving on"
            return
        self._pending.appendleft(Pending(candidate, retry=flight.retry + 1, not_before=self.now() + wait))
        flight.attempt.moved_on_because = f"retrying after {wait * 1000:.0f} ms"

    # -- the end ---------------------------------------------------------------------------

    def error(self) -> MeshError:
        """The most meaningful error for a run that produced no answer.

        The deadline, when it stopped attempts that were still running; else
        a real upstream failure beats a skipped candidate (a 429 with its
        Retry-After says more than "no instance of the fallback"); with no
        attempt run at all, the deadline is what stopped us.
        """
        summary = "; ".join(describe(attempt) for attempt in self.attempts)
        ran = sum(attempt.outcome != rpb.ATTEMPT_OUTCOME_SKIPPED for attempt in self.attempts)
        count = {"attempts": str(ran)}
        last = self._last_failure or self._last_skip
        if self.timed_out or last is None:
            what = f"attempts: {summary}" if summary else "the deadline left no time for an attempt"
            return MeshError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline reached; {what}" if summary else what,
                reason=REASON_UPSTREAM_TIMEOUT,
                metadata=count,
            )
        error, attempt = last[1], last[2]
        if len(self.attempts) == 1:
            note = f" (router: {attempt.moved_on_because})" if attempt.moved_on_because else ""
            return caller_error(error, error.message + note, count)
        return caller_error(error, f"no candidate answered; attempts: {summary}", count)

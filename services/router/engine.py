"""The router's request path: resolve → plan candidates → attempts within one deadline.

One deadline bounds everything: each attempt gets min(per-attempt timeout,
time left) and none starts below the minimum budget; a Retry-After wait is
honoured only when an attempt still fits after it. Strategies share one
executor (`_Race`): FALLBACK starts the next candidate when one fails, HEDGE
also starts it after a delay while the first still runs, FANOUT starts all
at once; the first success wins and the others are cancelled end to end.
Retries and hedges draw on sliding-window budgets; circuit breakers per
provider instance and per (provider, model) skip candidates that keep
failing. Every response (or error) lists what each attempt did.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_names as names
from services.common.auth import REASON_NOT_ROUTER, current_tenant
from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_INTERNAL,
    REASON_MODEL_NOT_FOUND,
    REASON_NO_INSTANCE,
    REASON_PROVIDER_AUTH,
    REASON_STREAM_TRUNCATED,
    REASON_UPSTREAM_TIMEOUT,
    REASON_UPSTREAM_UNAVAILABLE,
    MeshError,
    code_from_number,
    invalid_argument,
)
from services.common.telemetry import telemetry
from services.router import access, auto
from services.router.balancer import Balancer, Instance, never_sent
from services.router.breakers import BreakerRegistry, CircuitBreaker
from services.router.budgets import SlidingBudget
from services.router.config import Candidate, RoutingTable, Strategy
from services.router.observations import HeadroomTracker, LatencyTracker

# Kept back from the caller's deadline so our answer (or error) reaches it in time.
DEADLINE_MARGIN_SECONDS = 0.005
REASON_CIRCUIT_OPEN = "CIRCUIT_OPEN"
# An adapter refused the router itself (token or client certificate): the mesh's settings are wrong.
REASON_MESH_MISCONFIGURED = "MESH_MISCONFIGURED"

RouterRequest: TypeAlias = rpb.ChatRequest | rpb.StreamChatRequest
_T = TypeVar("_T")

# Classes that let the router try another candidate (and, bar CANCELLED, retry).
_MOVE_ON_CODES = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate limited or overloaded",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "attempt timed out",
    grpc.StatusCode.CANCELLED: "cancelled by the adapter",
}
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_OUTCOMES = {
    rpb.ATTEMPT_OUTCOME_SUCCEEDED: "succeeded",
    rpb.ATTEMPT_OUTCOME_FAILED: "failed",
    rpb.ATTEMPT_OUTCOME_CANCELLED: "cancelled",
    rpb.ATTEMPT_OUTCOME_SKIPPED: "skipped",
}
_STRATEGIES: dict[int, Strategy] = {
    rpb.ROUTING_STRATEGY_FALLBACK: "fallback",
    rpb.ROUTING_STRATEGY_HEDGE: "hedge",
    rpb.ROUTING_STRATEGY_FANOUT_FIRST: "fanout_first",
    rpb.ROUTING_STRATEGY_FANOUT_ALL: "fanout_all",
}


@dataclass(frozen=True, slots=True)
class _Plan:
    candidates: list[Candidate]
    strategy: Strategy
    per_attempt_timeout_s: float | None
    hedge_delay_s: float | None
    max_retries: int | None
    fallback_on_content_filter: bool
    allow_continuation: bool


class RouterEngine:
    """Runs chat requests over the routing table and the live instance pools."""

    def __init__(self, table: RoutingTable, balancer: Balancer) -> None:
        self.table = table
        self.balancer = balancer
        defaults = table.defaults
        self.breakers = BreakerRegistry(defaults.breaker, defaults.provider_breaker)
        self._breaker_pairs: dict[tuple[str, str], tuple[CircuitBreaker, CircuitBreaker]] = {}
        self.retry_budget = SlidingBudget(defaults.retry_budget)
        self.hedge_budget = SlidingBudget(defaults.hedge_budget)
        self.latency = LatencyTracker()
        self.headroom = HeadroomTracker()
        _observe_breakers(self.breakers)

    # -- planning --------------------------------------------------------------------------

    def plan(self, request: RouterRequest) -> _Plan:
        policy = request.routing
        named: list[tuple[str, Candidate]] = []
        if auto.is_auto(request.model):
            candidates = auto.choose(self.table, request, deprioritise=self._deprioritised)
        else:
            primary = self.table.lookup(request.model)
            if primary is None:
                raise self._not_found(request.model)
            candidates = [primary]
            named.append(("model", primary))
            if not policy.fallback_models:
                candidates += [self.table.lookup(name) for name in self.table.fallbacks_of(primary.name)]  # type: ignore[misc]
        for index, name in enumerate(policy.fallback_models):
            candidate = self.table.lookup(name)
            if candidate is None:
                raise invalid_argument(f"routing.fallback_models[{index}]", f"{name!r} is not a known model or alias")
            candidates.append(candidate)
            named.append((f"routing.fallback_models[{index}]", candidate))
        unique = list({candidate.name: candidate for candidate in candidates}.values())
        # The tenant's allowed models, after resolution: fallbacks and `auto` picks included.
        unique = access.permitted(current_tenant.get(), self.table, request.model, unique, named)
        # Steer away from providers near their rate limits, open breakers and
        # models with no instance, but keep them as a last resort.
        if len(unique) > 1:
            unique.sort(key=self._deprioritised)
        per_attempt = _seconds(policy, "per_attempt_timeout")
        if per_attempt is not None and per_attempt <= 0:
            raise invalid_argument("routing.per_attempt_timeout", "must be positive; omit it to use the routing file's")
        hedge_delay = _seconds(policy, "hedge_delay")
        if hedge_delay is not None and hedge_delay < 0:
            raise invalid_argument("routing.hedge_delay", "must not be negative")
        if policy.HasField("max_retries") and not 0 <= policy.max_retries <= 10:
            raise invalid_argument("routing.max_retries", "must be between 0 and 10")
        return _Plan(
            candidates=unique,
            strategy=_STRATEGIES.get(policy.strategy, unique[0].strategy),
            per_attempt_timeout_s=per_attempt,
            hedge_delay_s=hedge_delay,
            max_retries=policy.max_retries if policy.HasField("max_retries") else None,
            fallback_on_content_filter=policy.fallback_on_content_filter,
            allow_continuation=policy.allow_mid_stream_continuation,
        )

    def _not_found(self, model: str) -> MeshError:
        matches = self.table.close_matches(model)
        hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else "; see ListModels"
        return MeshError(
            grpc.StatusCode.NOT_FOUND,
            f"model: {model!r} is not a known model or alias{hint}",
            reason=REASON_MODEL_NOT_FOUND,
            metadata={"close_matches": ",".join(matches)},
        )

    def _deprioritised(self, candidate: Candidate) -> bool:
        return (
            len(self.balancer.pool(candidate.service)) == 0
            or self.headroom.is_low(candidate.provider, self.table.defaults.low_headroom_ratio)
            # Only while the breaker rejects: once its open time is over the candidate must
            # come first again, or a healthy fallback would starve it of its half-open probe.
            or any(breaker.is_rejecting() for breaker in self.breakers_of(candidate))
        )

    def breakers_of(self, candidate: Candidate) -> tuple[CircuitBreaker, CircuitBreaker]:
        # Asked three times per attempt; the registry keeps breakers for good, so the pair can be kept too.
        key = (candidate.provider, candidate.name)
        pair = self._breaker_pairs.get(key)
        if pair is None:
            pair = self._breaker_pairs[key] = (
                self.breakers.for_provider(candidate.provider),
                self.breakers.for_model(candidate.provider, candidate.name),
            )
        return pair

    def hedge_delay(self, plan: _Plan, candidate: Candidate) -> float:
        if plan.hedge_delay_s is not None:
            return plan.hedge_delay_s
        for setting in (candidate.hedge_delay_ms, self.table.defaults.hedge_delay_ms):
            if setting == "p95":
                observed = self.latency.p95(candidate.name)
                if observed is not None:
                    return observed
            else:
                return float(setting) / 1000.0
        return 0.5

    # -- unary -----------------------------------------------------------------------------

    async def chat(self, request: rpb.ChatRequest, deadline: float) -> rpb.ChatResponse:
        plan = self.plan(request)
        race = _Race(self, plan, deadline)

        async def attempt(candidate: Candidate, instance: Instance, budget: float) -> ppb.ProviderServiceChatResponse:
            answer: ppb.ProviderServiceChatResponse = await instance.stub.Chat(
                _provider_request(request, candidate, ppb.ProviderServiceChatRequest), timeout=budget
            )
            self.headroom.record(candidate.provider, answer.headroom)
            return answer

        winners = await race.run(attempt)
        responses = [self._response(candidate, answer, race.attempts) for candidate, answer in winners]
        responses[0].alternatives.extend(responses[1:])
        return responses[0]

    @staticmethod
    def _response(
        candidate: Candidate, answer: ppb.ProviderServiceChatResponse, attempts: list[rpb.Attempt]
    ) -> rpb.ChatResponse:
        usage = answer.usage
        return rpb.ChatResponse(
            message=answer.message,
            finish_reason=answer.finish_reason,
            usage=usage,
            model=candidate.name,
            provider=candidate.provider,
            response_model=answer.response_model,
            attempts=attempts,
            estimated_cost_usd=candidate.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens),
            extensions=answer.extensions if answer.HasField("extensions") else None,
        )

    async def run_attempts(
        self, plan: _Plan, deadline: float, call: Callable[[Candidate, Instance, float], Awaitable[_T]]
    ) -> tuple[list[tuple[Candidate, _T]], list[rpb.Attempt]]:
        """Runs `call` over the plan's candidates on the chat executor (deadlines, retries, hedges,
        breakers, balancer); returns the winner(s) and every attempt. Other RPCs (Embed) use it."""
        race = _Race(self, plan, deadline)
        return await race.run(call), race.attempts

    # -- streaming -------------------------------------------------------------------------

    async def stream_chat(
        self, request: rpb.StreamChatRequest, deadline: float
    ) -> AsyncIterator[rpb.StreamChatResponse]:
        """Falls back (and retries) freely before the first delta; after it, fails or continues.

        Streams do not hedge: a hedge would have to buffer one stream while
        racing another, which costs the time to first token it exists to save.
        """
        plan = self.plan(request)
        race = _Race(self, plan, deadline)
        partial: list[str] = []
        usage = chat_pb2.Usage()
        continued = False
        current_request: RouterRequest = request
        while (target := await race.next_target_when_due()) is not None:
            flight = race.start(target)
            candidate, instance = target.candidate, target.instance
            with trace.use_span(flight.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                call = instance.stub.StreamChat(
                    _provider_request(current_request, candidate, ppb.ProviderServiceStreamChatRequest),
                    timeout=target.budget,
                )
            sent = False
            error: MeshError
            try:
                with instance.track():
                    async for event in call:
                        if event.HasField("delta"):
                            sent = True
                            partial.append(event.delta.text)
                            yield rpb.StreamChatResponse(delta=event.delta)
                            continue
                        final = event.final
                        race.succeeded(flight)
                        self.headroom.record(candidate.provider, final.headroom)
                        _add_usage(usage, final.usage)
                        yield rpb.StreamChatResponse(
                            final=rpb.StreamChatFinal(
                                finish_reason=final.finish_reason,
                                usage=usage,
                                model=candidate.name,
                                provider=candidate.provider,
                                response_model=final.response_model,
                                attempts=race.attempts,
                                estimated_cost_usd=candidate.cost(
                                    usage.input_tokens, usage.output_tokens, usage.cached_input_tokens
                                ),
                                continued=continued,
                            )
                        )
                        return
                error = MeshError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{candidate.provider} stream ended without a final message",
                    reason=REASON_STREAM_TRUNCATED,
                )
            except grpc.aio.AioRpcError as rpc_error:
                error = MeshError.from_rpc_error(rpc_error)
            finally:
                call.cancel()
            race.failed(flight, error, retryable=not sent)
            if not sent:
                continue
            if not plan.allow_continuation or race.peek_next() is None:
                # Part of the answer is already with the caller: a silent switch
                # would splice two answers, so the stream fails instead.
                raise _caller_error(error, f"stream failed after partial output from {candidate.name}: {error.message}")
            successor = race.peek_next()
            assert successor is not None
            continued = True
            current_request = _with_assistant_prefix(request, "".join(partial))
            yield rpb.StreamChatResponse(
                continuation=rpb.StreamContinuation(
                    model=successor.name, provider=successor.provider, reason=f"{error.code.name}: {error.message}"
                )
            )
        raise race.error()


@dataclass(slots=True)
class _Flight:
    candidate: Candidate
    instance: Instance
    attempt: rpb.Attempt
    started: float
    retry: int
    breakers: tuple[CircuitBreaker, ...]
    span: trace.Span


@dataclass(frozen=True, slots=True)
class _Target:
    candidate: Candidate
    instance: Instance
    budget: float
    hedged: bool
    retry: int


@dataclass(slots=True)
class _Pending:
    candidate: Candidate
    retry: int = 0
    hedge: bool = False


@dataclass
class _Race:
    """One request's walk over its candidates: rules, budgets, breakers, the attempt list."""

    engine: RouterEngine
    plan: _Plan
    deadline: float
    attempts: list[rpb.Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending: deque[_Pending] = deque(_Pending(c) for c in self.plan.candidates)
        self._last: tuple[Candidate, MeshError, rpb.Attempt] | None = None
        self._last_failure: tuple[Candidate, MeshError, rpb.Attempt] | None = None
        self._stopped = False
        self._next_not_before = 0.0
        self._busy: set[tuple[str, str]] = set()
        self._unreachable: set[str] = set()  # instances this run could not connect to
        self._retries: dict[str, int] = {}
        self._same_model_hedges = 0
        self._fallback: tuple[str, str] | None = None  # (from model, why) for the next attempt's span
        self._telemetry = telemetry()
        self.engine.retry_budget.record_request()
        self.engine.hedge_budget.record_request()

    def now(self) -> float:
        return self._loop.time()

    # -- choosing what runs next ----------------------------------------------------------

    def peek_next(self) -> Candidate | None:
        return self._pending[0].candidate if self._pending and not self._stopped else None

    def next_target(self, *, hedge: bool = False) -> _Target | None:
        """The next candidate, instance and budget; None when nothing (more) may start."""
        while self._pending and not self._stopped:
            pending = self._pending[0]
            candidate = pending.candidate
            if self._last is not None and pending.retry == 0 and not hedge:
                failed, error, attempt = self._last
                why = _move_on_reason(error, failed, candidate, self.plan)
                if why is None:
                    self._pending.popleft()
                    if error.reason == REASON_CONTEXT_WINDOW_EXCEEDED:
                        self._record_skipped(
                            candidate, _skipped(candidate, "context window not larger than the failed model's")
                        )
                        continue
                    self._stopped = True
                    return None
                if not attempt.moved_on_because:
                    attempt.moved_on_because = why
                if failed.name != candidate.name:
                    self._fallback = (failed.name, why)
            budget = self._budget(candidate)
            if budget is None:
                return None
            breakers = self.engine.breakers_of(candidate)
            if not breakers[0].allow():
                self._skip(pending, f"circuit open for {breakers[0].name}")
                continue
            if not breakers[1].allow():
                breakers[0].release()
                self._skip(pending, f"circuit open for {breakers[1].name}")
                continue
            # A same-model hedge wants another instance; another model may share one.
            busy = frozenset(address for name, address in self._busy if name == candidate.name)
            instance = self.engine.balancer.pool(candidate.service).pick(busy)
            if instance is None:
                for breaker in breakers:
                    breaker.release()
                self._skip(pending, f"no healthy instance of {candidate.service}", reason=REASON_NO_INSTANCE)
                continue
            self._pending.popleft()
            return _Target(candidate, instance, budget, hedge or pending.hedge, pending.retry)
        return None

    async def next_target_when_due(self) -> _Target | None:
        """Like next_target, after waiting out a scheduled retry's backoff."""
        if self._pending and self._next_not_before > self.now():
            await asyncio.sleep(self._next_not_before - self.now())
        return self.next_target()

    def _skip(self, pending: _Pending, why: str, reason: str = REASON_CIRCUIT_OPEN) -> None:
        self._pending.popleft()
        skipped = _skipped(pending.candidate, why)
        self._record_skipped(pending.candidate, skipped, reason)
        error = MeshError(grpc.StatusCode.UNAVAILABLE, why, reason=reason)
        self._last = (pending.candidate, error, skipped)

    def _budget(self, candidate: Candidate) -> float | None:
        left = self.deadline - self.now() - DEADLINE_MARGIN_SECONDS
        budget = min(self.plan.per_attempt_timeout_s or candidate.per_attempt_timeout_s, left)
        return budget if budget * 1000.0 >= self.engine.table.defaults.min_attempt_budget_ms else None

    # -- recording outcomes ---------------------------------------------------------------

    def start(self, target: _Target) -> _Flight:
        candidate, instance = target.candidate, target.instance
        attempt = _attempt(candidate, instance, rpb.ATTEMPT_OUTCOME_UNSPECIFIED, 0, 0.0)
        attempt.hedged = target.hedged
        self.attempts.append(attempt)
        self._busy.add((candidate.name, instance.address))
        breakers = self.engine.breakers_of(candidate)
        span = self._start_span(candidate, self._attempt_attributes(candidate, instance, target, breakers))
        self._fallback = None
        return _Flight(candidate, instance, attempt, self.now(), target.retry, breakers, span)

    def _attempt_attributes(
        self, candidate: Candidate, instance: Instance, target: _Target, breakers: tuple[CircuitBreaker, ...]
    ) -> dict[str, Any] | None:
        """The attempt span's attributes, only what is notable (each one costs at export); None when not tracing."""
        fallback = self._fallback if target.retry == 0 and not target.hedged else None
        if fallback is not None:
            self._telemetry.instruments.router_fallbacks.add(
                1, ((names.FALLBACK_FROM, fallback[0]), (names.FALLBACK_TO, candidate.name))
            )
        if not self._telemetry.tracing:
            return None
        attributes: dict[str, Any] = {
            names.ATTEMPT_INDEX: len(self.attempts),
            names.ATTEMPT_MODEL: candidate.name,
            names.ATTEMPT_PROVIDER: candidate.provider,
            names.ATTEMPT_INSTANCE: instance.address,
        }
        if target.hedged:
            attributes[names.ATTEMPT_HEDGED] = True
        if target.retry:
            attributes[names.ATTEMPT_RETRY] = target.retry
        if fallback is not None:
            attributes[names.ATTEMPT_FALLBACK_REASON] = fallback[1]
        for breaker in breakers:
            if breaker.state.value != "closed":
                attributes[names.ATTEMPT_BREAKER_STATE] = f"{breaker.name}: {breaker.state.value}"
        return attributes

    def _start_span(self, candidate: Candidate, attributes: dict[str, Any] | None) -> trace.Span:
        return self._telemetry.tracer.start_span(
            names.SPAN_ATTEMPT.format(model=candidate.name), kind=SpanKind.CLIENT, attributes=attributes
        )

    def _finish(self, flight: _Flight, outcome: int, code: grpc.StatusCode) -> float:
        seconds = self.now() - flight.started
        flight.attempt.outcome = outcome  # type: ignore[assignment]
        flight.attempt.code = code.value[0]
        flight.attempt.latency.FromNanoseconds(int(seconds * 1e9))
        self._busy.discard((flight.candidate.name, flight.instance.address))
        return seconds

    def _end_span(self, flight: _Flight, code: grpc.StatusCode, hedge_result: str) -> None:
        """Ends the attempt's span (after the outcome and any retry decision are known) and counts it."""
        attempt, span = flight.attempt, flight.span
        outcome = _OUTCOMES[attempt.outcome]
        if span.is_recording():
            attributes = {names.ATTEMPT_OUTCOME: outcome, names.ATTEMPT_CODE: code.name}
            if attempt.reason:
                attributes[names.ATTEMPT_REASON] = attempt.reason
            if attempt.moved_on_because:
                attributes[names.ATTEMPT_MOVED_ON_BECAUSE] = attempt.moved_on_because
            if attempt.outcome == rpb.ATTEMPT_OUTCOME_FAILED:
                attributes[names.ERROR_TYPE] = code.name
                span.set_status(trace.Status(trace.StatusCode.ERROR, f"{code.name}: {attempt.message}"[:300]))
            span.set_attributes(attributes)
        span.end()
        instruments = self._telemetry.instruments
        instruments.router_attempts.add(1, _attempt_key(outcome, code.name, flight.candidate))
        if attempt.hedged:
            instruments.router_hedges.add(1, ((names.HEDGE_RESULT, hedge_result),))

    def _record_skipped(self, candidate: Candidate, skipped: rpb.Attempt, reason: str = "") -> None:
        """A candidate passed over (open breaker, no instance, too small a window): a zero-length span says why."""
        self.attempts.append(skipped)
        code = grpc.StatusCode.UNAVAILABLE.name
        attributes: dict[str, Any] | None = None
        if self._telemetry.tracing:
            attributes = {
                names.ATTEMPT_INDEX: len(self.attempts),
                names.ATTEMPT_MODEL: candidate.name,
                names.ATTEMPT_PROVIDER: candidate.provider,
                names.ATTEMPT_OUTCOME: "skipped",
                names.ATTEMPT_CODE: code,
                names.ATTEMPT_MOVED_ON_BECAUSE: skipped.message,
            }
            if reason:
                attributes[names.ATTEMPT_REASON] = reason
        self._start_span(candidate, attributes).end()
        self._telemetry.instruments.router_attempts.add(1, _attempt_key("skipped", code, candidate))

    def succeeded(self, flight: _Flight) -> None:
        seconds = self._finish(flight, rpb.ATTEMPT_OUTCOME_SUCCEEDED, grpc.StatusCode.OK)
        for breaker in flight.breakers:
            breaker.record(grpc.StatusCode.OK)
        self.engine.latency.record(flight.candidate.name, seconds)
        self._end_span(flight, grpc.StatusCode.OK, "won")

    def cancelled(self, flight: _Flight) -> None:
        self._finish(flight, rpb.ATTEMPT_OUTCOME_CANCELLED, grpc.StatusCode.CANCELLED)
        flight.attempt.message = "cancelled: another attempt answered first"
        for breaker in flight.breakers:
            breaker.release()
        self._end_span(flight, grpc.StatusCode.CANCELLED, "lost")

    def failed(self, flight: _Flight, error: MeshError, *, retryable: bool = True) -> None:
        self._finish(flight, rpb.ATTEMPT_OUTCOME_FAILED, error.code)
        flight.attempt.reason = error.reason
        flight.attempt.message = error.message
        pool_size = len(self.engine.balancer.pool(flight.candidate.service))
        # A transport failure (no adapter answered: no ErrorInfo) says one instance is
        # unwell, which is the balancer's ejection to handle; counting it against the
        # model's or provider's breaker would also shut out the healthy instances.
        instance_fault = error.code == grpc.StatusCode.UNAVAILABLE and not error.reason and pool_size > 1
        # An adapter refusing the router is the mesh's misconfiguration, not the provider's fault.
        blameless = instance_fault or error.reason == REASON_NOT_ROUTER
        for breaker in flight.breakers:
            if blameless:
                breaker.release()
            else:
                breaker.record(error.code)
        self._last = self._last_failure = (flight.candidate, error, flight.attempt)
        self._queue_next(flight, error, pool_size, retryable=retryable)
        # After the retry decision, so the span says what the router did next.
        self._end_span(flight, error.code, "failed")

    def _queue_next(self, flight: _Flight, error: MeshError, pool_size: int, *, retryable: bool) -> None:
        if retryable and never_sent(error) and flight.instance.address not in self._unreachable:
            # Like gRPC's transparent retry: the call reached no adapter, so it goes to another instance
            # (the balancer passes over this one) without spending the retry limit or budget.
            self._unreachable.add(flight.instance.address)
            if pool_size > len(self._unreachable):
                self._pending.appendleft(_Pending(flight.candidate, retry=flight.retry))
                flight.attempt.moved_on_because = "could not connect; trying another instance"
                return
        if retryable:
            self._maybe_retry(flight, error)

    def _maybe_retry(self, flight: _Flight, error: MeshError) -> None:
        """Queues the same candidate again when the error, the retry limit, the budget and the deadline allow."""
        candidate = flight.candidate
        limit = self.plan.max_retries if self.plan.max_retries is not None else candidate.max_retries
        if error.code not in _MOVE_ON_CODES or error.code == grpc.StatusCode.CANCELLED or flight.retry >= limit:
            return
        defaults = self.engine.table.defaults
        backoff = random.uniform(0, min(defaults.max_backoff_ms, defaults.base_backoff_ms * 2**flight.retry)) / 1000
        wait = max(backoff, error.retry_after or 0.0)
        left_after_wait = self.deadline - self.now() - wait - DEADLINE_MARGIN_SECONDS
        if left_after_wait * 1000.0 < defaults.min_attempt_budget_ms:
            flight.attempt.moved_on_because = (
                f"retry-after {wait:.2f}s does not fit in the time left; moving on"
                if error.retry_after
                else "no time left for a retry; moving on"
            )
            return
        if not self.engine.retry_budget.try_spend():
            flight.attempt.moved_on_because = "retry budget spent; moving on"
            return
        self._pending.appendleft(_Pending(candidate, retry=flight.retry + 1))
        self._next_not_before = self.now() + wait
        flight.attempt.moved_on_because = f"retrying after {wait * 1000:.0f} ms"

    # -- the executor ---------------------------------------------------------------------

    async def run(self, call: Callable[[Candidate, Instance, float], Awaitable[_T]]) -> list[tuple[Candidate, _T]]:
        """Runs attempts per the plan's strategy; returns the winner(s) or raises the run's error."""
        strategy = self.plan.strategy
        if strategy == "fallback":
            return await self._run_in_turn(call)
        fan_out = strategy in ("fanout_first", "fanout_all")
        running: dict[asyncio.Task[_T], _Flight] = {}
        winners: list[tuple[Candidate, _T]] = []
        next_hedge_at = float("inf")
        failover_due = False
        try:
            while True:
                asked = False
                # Start what may start now.
                while self.now() >= self._next_not_before and (
                    not running or fan_out or failover_due or self.now() >= next_hedge_at
                ):
                    hedging = bool(running) and not fan_out and not failover_due
                    if hedging and not (self._hedge_target_available() and self.engine.hedge_budget.try_spend()):
                        next_hedge_at = float("inf")
                        break
                    asked = True
                    target = self.next_target(hedge=hedging)
                    failover_due = False
                    if target is None:
                        break
                    flight = self.start(target)
                    candidate = target.candidate
                    # The attempt's span is the parent of the adapter's (trace context rides the call).
                    with trace.use_span(
                        flight.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                    ):
                        task = asyncio.ensure_future(
                            self._tracked(target.instance, call(candidate, target.instance, target.budget))
                        )
                    running[task] = flight
                    next_hedge_at = (
                        self.now() + self.engine.hedge_delay(self.plan, candidate)
                        if strategy == "hedge"
                        else float("inf")
                    )
                if not running:
                    if self._pending and not self._stopped and self._next_not_before > self.now():
                        await asyncio.sleep(self._next_not_before - self.now())
                        continue
                    if self._pending and not self._stopped and not asked:
                        continue  # a retry fell due between the two checks: start it now, don't give up
                    break
                wake_at = min(next_hedge_at, self.deadline)
                if self._next_not_before > self.now():
                    wake_at = min(wake_at, self._next_not_before)
                done, _ = await asyncio.wait(
                    running, timeout=max(wake_at - self.now(), 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    flight = running.pop(task)
                    error = _error_of(task)
                    if error is None:
                        self.succeeded(flight)
                        winners.append((flight.candidate, task.result()))
                        continue
                    self.failed(flight, error)
                    failover_due = True  # a failure frees the way for the next candidate at once
                if winners and (strategy != "fanout_all" or not running):
                    return winners
                if self.now() >= self.deadline:
                    break
        finally:
            for task, flight in running.items():
                task.cancel()
                self.cancelled(flight)
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if winners:
            return winners
        raise self.error()

    async def _run_in_turn(
        self, call: Callable[[Candidate, Instance, float], Awaitable[_T]]
    ) -> list[tuple[Candidate, _T]]:
        """FALLBACK: one attempt at a time, awaited in place.

        The general executor's task and wait set are only needed when attempts
        overlap; here each attempt's own gRPC deadline (its budget, never past
        the run's deadline) bounds the await, so the result is the same for
        one task and two loop wake-ups less per request.
        """
        while True:
            if self._pending and self._next_not_before > self.now():
                await asyncio.sleep(self._next_not_before - self.now())
            target = self.next_target()
            if target is None:
                raise self.error()
            flight = self.start(target)
            try:
                # The attempt's span is current for the call: the adapter's span becomes its child.
                with (
                    target.instance.track(),
                    trace.use_span(
                        flight.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                    ),
                ):
                    answer = await call(target.candidate, target.instance, target.budget)
            except grpc.aio.AioRpcError as rpc_error:
                self.failed(flight, MeshError.from_rpc_error(rpc_error))
                continue
            except MeshError as error:
                self.failed(flight, error)
                continue
            except BaseException:
                self.cancelled(flight)
                raise
            self.succeeded(flight)
            return [(target.candidate, answer)]

    def _hedge_target_available(self) -> bool:
        """A hedge goes to the next candidate, or to the same model on another instance once."""
        if self._pending:
            return True
        if self._same_model_hedges >= 1 or not self.attempts:
            return False
        first = self.plan.candidates[0]
        if len(self.engine.balancer.pool(first.service)) < 2:
            return False
        self._same_model_hedges += 1
        self._pending.append(_Pending(first, hedge=True))
        return True

    @staticmethod
    async def _tracked(instance: Instance, call: Awaitable[_T]) -> _T:
        with instance.track():
            return await call

    def error(self) -> MeshError:
        """The most meaningful error for a run that produced no answer.

        A real upstream failure beats a skipped candidate (a 429 with its
        Retry-After says more than "no instance of the fallback"); with no
        attempt run at all, the deadline is what stopped us.
        """
        summary = "; ".join(_describe(attempt) for attempt in self.attempts)
        last = self._last_failure or self._last
        if last is None:
            return MeshError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the deadline left no time for an attempt",
                reason=REASON_UPSTREAM_TIMEOUT,
            )
        error, attempt = last[1], last[2]
        if len(self.attempts) == 1:
            note = f" (router: {attempt.moved_on_because})" if attempt.moved_on_because else ""
            return _caller_error(error, error.message + note)
        return _caller_error(error, f"no candidate answered; attempts: {summary}")


_BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}


def _attempt_key(outcome: str, code: str, candidate: Candidate) -> tuple[tuple[str, str], ...]:
    return (
        (names.ATTEMPT_OUTCOME, outcome),
        (names.ATTEMPT_CODE, code),
        (names.ATTEMPT_MODEL, candidate.name),
        (names.ATTEMPT_PROVIDER, candidate.provider),
    )


def _observe_breakers(registry: BreakerRegistry) -> None:
    """Breaker state as a gauge: 0 closed, 1 half-open, 2 open (the registry is held weakly)."""
    from weakref import ref

    from opentelemetry.metrics import CallbackOptions, Observation

    held = ref(registry)

    def observe(_: CallbackOptions) -> list[Observation]:
        current = held()
        if current is None:
            return []
        return [Observation(_BREAKER_LEVELS[state], {names.BREAKER: name}) for name, state in current.states().items()]

    telemetry().meter.create_observable_gauge(
        names.METRIC_ROUTER_BREAKER_STATE,
        callbacks=[observe],
        unit="{state}",
        description="Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    )


def _error_of(task: asyncio.Task[Any]) -> MeshError | None:
    exception = task.exception()
    if exception is None:
        return None
    if isinstance(exception, grpc.aio.AioRpcError):
        return MeshError.from_rpc_error(exception)
    if isinstance(exception, MeshError):
        return exception
    raise exception


def _move_on_reason(error: MeshError, failed: Candidate, candidate: Candidate, plan: _Plan) -> str | None:
    """Why the router may try `candidate` after `failed` raised `error`; None when it may not."""
    if error.code in _MOVE_ON_CODES:
        return _MOVE_ON_CODES[error.code]
    if error.reason == REASON_NOT_ROUTER:
        return "the adapter refused the router (mesh misconfiguration)"
    if error.reason == REASON_CONTEXT_WINDOW_EXCEEDED:
        if candidate.context_window > failed.context_window:
            return "context window exceeded; trying a larger window"
        return None
    if error.reason == REASON_CONTENT_FILTERED and plan.fallback_on_content_filter:
        return "content filtered; policy allows fallback"
    if error.code in _AUTH_CODES and candidate.provider != failed.provider:
        return f"{failed.provider} rejected its credentials"
    return None


def _seconds(policy: rpb.RoutingPolicy, name: str) -> float | None:
    return getattr(policy, name).ToNanoseconds() / 1e9 if policy.HasField(name) else None


def _add_usage(total: chat_pb2.Usage, more: chat_pb2.Usage) -> None:
    total.input_tokens += more.input_tokens
    total.output_tokens += more.output_tokens
    total.cached_input_tokens += more.cached_input_tokens
    total.reasoning_tokens += more.reasoning_tokens


def _with_assistant_prefix(request: RouterRequest, prefix: str) -> RouterRequest:
    """The request plus the partial answer as an assistant prefix, marked as such."""
    continued = type(request)()
    continued.CopyFrom(request)
    message = continued.messages.add(role=chat_pb2.ROLE_ASSISTANT)
    message.content.add(text=prefix)
    json_format.ParseDict({"llmmesh": {"continuation_prefix": True}}, message.extensions)
    return continued


def _provider_request(
    request: RouterRequest,
    candidate: Candidate,
    cls: type[ppb.ProviderServiceChatRequest] | type[ppb.ProviderServiceStreamChatRequest],
) -> Any:
    provider_request = cls(
        model=candidate.upstream_model,
        messages=request.messages,
        tools=request.tools,
        tool_choice=request.tool_choice,
        settings=request.settings,
    )
    # Provider-only options reach adapters of that provider only.
    own = request.extensions.fields.get(candidate.kind)
    if own is not None:
        provider_request.extensions.fields[candidate.kind].CopyFrom(own)
    return provider_request


def _attempt(candidate: Candidate, instance: Instance | None, outcome: int, code: int, seconds: float) -> rpb.Attempt:
    attempt = rpb.Attempt(
        model=candidate.name,
        provider=candidate.provider,
        instance=instance.address if instance is not None else "",
        outcome=outcome,  # type: ignore[arg-type]
        code=code,
    )
    attempt.latency.FromNanoseconds(int(seconds * 1e9))
    return attempt


def _skipped(candidate: Candidate, why: str) -> rpb.Attempt:
    attempt = _attempt(candidate, None, rpb.ATTEMPT_OUTCOME_SKIPPED, grpc.StatusCode.UNAVAILABLE.value[0], 0.0)
    attempt.message = why
    return attempt


_DEFAULT_REASONS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: REASON_UPSTREAM_TIMEOUT,
    grpc.StatusCode.UNAVAILABLE: REASON_UPSTREAM_UNAVAILABLE,
    grpc.StatusCode.CANCELLED: REASON_UPSTREAM_UNAVAILABLE,
}


def _caller_error(error: MeshError, message: str) -> MeshError:
    """The error as callers see it, always with a reason.

    A provider's credential problem is the operator's to fix, not the
    caller's: FAILED_PRECONDITION. A transport failure between router and
    adapter (no ErrorInfo) gets the reason of its class.
    """
    if error.reason == REASON_NOT_ROUTER:
        return MeshError(grpc.StatusCode.FAILED_PRECONDITION, message, reason=REASON_MESH_MISCONFIGURED)
    if error.code in _AUTH_CODES:
        return MeshError(grpc.StatusCode.FAILED_PRECONDITION, message, reason=REASON_PROVIDER_AUTH)
    return MeshError(
        error.code,
        message,
        reason=error.reason or _DEFAULT_REASONS.get(error.code, REASON_INTERNAL),
        metadata=error.metadata,
        retry_after=error.retry_after,
        field=error.field,
    )


def _describe(attempt: rpb.Attempt) -> str:
    outcome = rpb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
    where = f"{attempt.model}@{attempt.provider}" + (f" {attempt.instance}" if attempt.instance else "")
    code = f" {code_from_number(attempt.code).name}" if attempt.outcome == rpb.ATTEMPT_OUTCOME_FAILED else ""
    return (
        f"{where}: {outcome}{code}"
        + (f" ({attempt.message})" if attempt.message else "")
        + (f" -> {attempt.moved_on_because}" if attempt.moved_on_because else "")
    )

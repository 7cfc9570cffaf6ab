"""Spans and metrics for attempts: written from what the race decided, deciding nothing."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_names as names
from services.common.telemetry import telemetry
from services.router.breakers import CircuitBreaker
from services.router.config import Candidate

OUTCOMES = {
    rpb.ATTEMPT_OUTCOME_SUCCEEDED: "succeeded",
    rpb.ATTEMPT_OUTCOME_FAILED: "failed",
    rpb.ATTEMPT_OUTCOME_CANCELLED: "cancelled",
    rpb.ATTEMPT_OUTCOME_SKIPPED: "skipped",
}


class AttemptTelemetry:
    """One request's attempt spans and counters."""

    def __init__(self) -> None:
        self._telemetry = telemetry()

    def count_fallback(self, from_model: str, to_model: str) -> None:
        self._telemetry.instruments.router_fallbacks.add(
            1, ((names.FALLBACK_FROM, from_model), (names.FALLBACK_TO, to_model))
        )

    def start_span(
        self,
        attempt: rpb.Attempt,
        index: int,
        breakers: tuple[CircuitBreaker, ...],
        retry: int,
        fallback_reason: str | None,
    ) -> trace.Span:
        """The attempt's span, with only what is notable (each attribute costs at export)."""
        attributes: dict[str, Any] | None = None
        if self._telemetry.tracing:
            attributes = {
                names.ATTEMPT_INDEX: index,
                names.ATTEMPT_MODEL: attempt.model,
                names.ATTEMPT_PROVIDER: attempt.provider,
                names.ATTEMPT_INSTANCE: attempt.instance,
            }
            if attempt.hedged:
                attributes[names.ATTEMPT_HEDGED] = True
            if retry:
                attributes[names.ATTEMPT_RETRY] = retry
            if fallback_reason is not None:
                attributes[names.ATTEMPT_FALLBACK_REASON] = fallback_reason
            for breaker in breakers:
                if breaker.state.value != "closed":
                    attributes[names.ATTEMPT_BREAKER_STATE] = f"{breaker.name}: {breaker.state.value}"
        return self._telemetry.tracer.start_span(
            names.SPAN_ATTEMPT.format(model=attempt.model), kind=SpanKind.CLIENT, attributes=attributes
        )

    def end_span(self, span: trace.Span, attempt: rpb.Attempt, code: grpc.StatusCode, candidate: Candidate) -> None:
        """Ends the span once the outcome and any retry decision are on `attempt`, and counts it."""
        outcome = OUTCOMES[attempt.outcome]
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
        instruments.router_attempts.add(1, _attempt_key(outcome, code.name, candidate))
        if attempt.hedged:
            result = {"succeeded": "won", "cancelled": "lost"}.get(outcome, "failed")
            instruments.router_hedges.add(1, ((names.HEDGE_RESULT, result),))

    def skipped(self, candidate: Candidate, skipped: rpb.Attempt, index: int, reason: str) -> None:
        """A candidate passed over (open breaker, no instance, too small a window): a zero-length span says why."""
        code = grpc.StatusCode.UNAVAILABLE.name
        attributes: dict[str, Any] | None = None
        if self._telemetry.tracing:
            attributes = {
                names.ATTEMPT_INDEX: index,
                names.ATTEMPT_MODEL: candidate.name,
                names.ATTEMPT_PROVIDER: candidate.provider,
                names.ATTEMPT_OUTCOME: "skipped",
                names.ATTEMPT_CODE: code,
                names.ATTEMPT_MOVED_ON_BECAUSE: skipped.message,
            }
            if reason:
                attributes[names.ATTEMPT_REASON] = reason
        name = names.SPAN_ATTEMPT.format(model=candidate.name)
        self._telemetry.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes).end()
        self._telemetry.instruments.router_attempts.add(1, _attempt_key("skipped", code, candidate))


def _attempt_key(outcome: str, code: str, candidate: Candidate) -> tuple[tuple[str, str], ...]:
    return (
        (names.ATTEMPT_OUTCOME, outcome),
        (names.ATTEMPT_CODE, code),
        (names.ATTEMPT_MODEL, candidate.name),
        (names.ATTEMPT_PROVIDER, candidate.provider),
    )

"""The router's request path: resolve → plan candidates → attempt within one deadline.

Every attempt gets min(per-attempt timeout, time left); none starts with
less than the minimum budget. The router moves to the next candidate only
for the classes DESIGN.md allows, and every response (or error) says what
each attempt did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import structlog

from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_MODEL_NOT_FOUND,
    REASON_NO_INSTANCE,
    REASON_PROVIDER_AUTH,
    REASON_STREAM_TRUNCATED,
    REASON_UPSTREAM_TIMEOUT,
    MeshError,
    code_from_number,
    invalid_argument,
)
from services.router.balancer import Balancer, Instance, never_sent
from services.router.config import Candidate, RoutingTable

log = structlog.get_logger(__name__)

# Kept back from the caller's deadline so our answer (or error) reaches it in time.
DEADLINE_MARGIN_SECONDS = 0.005

RouterRequest = rpb.ChatRequest | rpb.StreamChatRequest

_MOVE_ON_CODES = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate limited or overloaded",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "attempt timed out",
    grpc.StatusCode.CANCELLED: "cancelled by the adapter",
}
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True, slots=True)
class _Plan:
    candidates: list[Candidate]
    per_attempt_timeout_s: float | None
    fallback_on_content_filter: bool


class RouterEngine:
    """Runs chat requests over the routing table and the live instance pools."""

    def __init__(self, table: RoutingTable, balancer: Balancer) -> None:
        self.table = table
        self.balancer = balancer

    # -- planning --------------------------------------------------------------------------

    def plan(self, request: RouterRequest) -> _Plan:
        primary = self.table.lookup(request.model)
        if primary is None:
            matches = self.table.close_matches(request.model)
            hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else "; see ListModels"
            raise MeshError(
                grpc.StatusCode.NOT_FOUND,
                f"model: {request.model!r} is not a known model or alias{hint}",
                reason=REASON_MODEL_NOT_FOUND,
                metadata={"close_matches": ",".join(matches)},
            )
        policy = request.routing
        names = list(policy.fallback_models) or self.table.fallbacks_of(primary.name)
        candidates = [primary]
        for index, name in enumerate(names):
            candidate = self.table.lookup(name)
            if candidate is None:
                raise invalid_argument(f"routing.fallback_models[{index}]", f"{name!r} is not a known model or alias")
            if all(candidate.name != c.name for c in candidates):
                candidates.append(candidate)
        per_attempt = (
            policy.per_attempt_timeout.ToNanoseconds() / 1e9 if policy.HasField("per_attempt_timeout") else None
        )
        if per_attempt is not None and per_attempt <= 0:
            raise invalid_argument("routing.per_attempt_timeout", "must be positive; omit it to use the routing file's")
        return _Plan(candidates, per_attempt, policy.fallback_on_content_filter)

    def budget(self, plan: _Plan, candidate: Candidate, deadline: float) -> float | None:
        """Seconds for the next attempt, or None when too little time is left to start one."""
        left = deadline - asyncio.get_running_loop().time() - DEADLINE_MARGIN_SECONDS
        budget = min(plan.per_attempt_timeout_s or candidate.per_attempt_timeout_s, left)
        return budget if budget * 1000.0 >= self.table.defaults.min_attempt_budget_ms else None

    # -- unary -----------------------------------------------------------------------------

    async def chat(self, request: rpb.ChatRequest, deadline: float) -> rpb.ChatResponse:
        run = _Run(self, self.plan(request), deadline)
        while (target := run.next_target()) is not None:
            candidate, instance, budget = target
            started = run.now()
            try:
                with instance.track():
                    answer = await instance.stub.Chat(
                        _provider_request(request, candidate, ppb.ProviderServiceChatRequest), timeout=budget
                    )
            except grpc.aio.AioRpcError as rpc_error:
                instance.report_rpc_error(rpc_error)
                run.failed(candidate, instance, MeshError.from_rpc_error(rpc_error), started, never_sent(rpc_error))
                continue
            instance.report_success()
            run.succeeded(candidate, instance, started)
            usage = answer.usage
            return rpb.ChatResponse(
                message=answer.message,
                finish_reason=answer.finish_reason,
                usage=usage,
                model=candidate.name,
                provider=candidate.provider,
                response_model=answer.response_model,
                attempts=run.attempts,
                estimated_cost_usd=candidate.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens),
                extensions=answer.extensions if answer.HasField("extensions") else None,
            )
        raise run.error()

    # -- streaming -------------------------------------------------------------------------

    async def stream_chat(
        self, request: rpb.StreamChatRequest, deadline: float
    ) -> AsyncIterator[rpb.StreamChatResponse]:
        run = _Run(self, self.plan(request), deadline)
        while (target := run.next_target()) is not None:
            candidate, instance, budget = target
            started = run.now()
            call = instance.stub.StreamChat(
                _provider_request(request, candidate, ppb.ProviderServiceStreamChatRequest), timeout=budget
            )
            sent_output = resend = False
            try:
                with instance.track():
                    async for event in call:
                        if event.HasField("delta"):
                            sent_output = True
                            yield rpb.StreamChatResponse(delta=event.delta)
                            continue
                        instance.report_success()
                        run.succeeded(candidate, instance, started)
                        final, usage = event.final, event.final.usage
                        yield rpb.StreamChatResponse(
                            final=rpb.StreamChatFinal(
                                finish_reason=final.finish_reason,
                                usage=usage,
                                model=candidate.name,
                                provider=candidate.provider,
                                response_model=final.response_model,
                                attempts=run.attempts,
                                estimated_cost_usd=candidate.cost(
                                    usage.input_tokens, usage.output_tokens, usage.cached_input_tokens
                                ),
                            )
                        )
                        return
                error = MeshError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{candidate.provider} stream ended without a final message",
                    reason=REASON_STREAM_TRUNCATED,
                )
            except grpc.aio.AioRpcError as rpc_error:
                instance.report_rpc_error(rpc_error)
                error = MeshError.from_rpc_error(rpc_error)
                resend = never_sent(rpc_error)
            finally:
                call.cancel()
            run.failed(candidate, instance, error, started, resend)
            if sent_output:
                # Part of the answer is already with the caller: a silent switch
                # would splice two answers, so the stream fails instead.
                raise _caller_error(error, f"stream failed after partial output from {candidate.name}: {error.message}")
        raise run.error()


class _Run:
    """One request's walk over its candidates: move-on rules, budgets, the attempt list."""

    def __init__(self, engine: RouterEngine, plan: _Plan, deadline: float) -> None:
        self._engine = engine
        self._plan = plan
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._next = 0
        self._last: tuple[Candidate, MeshError, rpb.Attempt] | None = None
        self._out_of_time = False
        self._unreachable: set[str] = set()  # instances this run could not connect to
        self._resend: Candidate | None = None
        self.attempts: list[rpb.Attempt] = []

    def now(self) -> float:
        return self._loop.time()

    def next_target(self) -> tuple[Candidate, Instance, float] | None:
        """The next candidate, instance and time budget; None when the run is over."""
        if (resend := self._resend_target()) is not None:
            return resend
        candidates = self._plan.candidates
        while self._next < len(candidates):
            candidate = candidates[self._next]
            self._next += 1
            if self._last is not None:
                failed, error, attempt = self._last
                why = _move_on_reason(error, failed, candidate, self._plan)
                if why is None:
                    if error.reason == REASON_CONTEXT_WINDOW_EXCEEDED:
                        self.attempts.append(_skipped(candidate, "context window not larger than the failed model's"))
                        continue
                    return None
                attempt.moved_on_because = why
            budget = self._engine.budget(self._plan, candidate, self._deadline)
            if budget is None:
                self._out_of_time = True
                return None
            instance = self._engine.balancer.pool(candidate.service).pick()
            if instance is None:
                skipped = _skipped(candidate, f"no healthy instance of {candidate.service}")
                self.attempts.append(skipped)
                self._last = (candidate, _no_instance(candidate), skipped)
                continue
            return candidate, instance, budget
        return None

    def _resend_target(self) -> tuple[Candidate, Instance, float] | None:
        """A call that never reached its instance goes to another instance of the same candidate."""
        candidate, self._resend = self._resend, None
        if candidate is None or self._last is None:
            return None
        budget = self._engine.budget(self._plan, candidate, self._deadline)
        instance = self._engine.balancer.pool(candidate.service).pick(exclude=frozenset(self._unreachable))
        if budget is None or instance is None:
            return None
        self._last[2].moved_on_because = "could not connect; trying another instance"
        return candidate, instance, budget

    def failed(
        self, candidate: Candidate, instance: Instance, error: MeshError, started: float, resend: bool = False
    ) -> None:
        if resend:
            self._unreachable.add(instance.address)
            self._resend = candidate
        attempt = _attempt(candidate, instance, rpb.ATTEMPT_OUTCOME_FAILED, error.code.value[0], self.now() - started)
        attempt.reason = error.reason
        attempt.message = error.message
        self.attempts.append(attempt)
        self._last = (candidate, error, attempt)

    def succeeded(self, candidate: Candidate, instance: Instance, started: float) -> None:
        self.attempts.append(_attempt(candidate, instance, rpb.ATTEMPT_OUTCOME_SUCCEEDED, 0, self.now() - started))

    def error(self) -> MeshError:
        """The error for a run that produced no answer."""
        summary = "; ".join(_describe(attempt) for attempt in self.attempts)
        if self._out_of_time or self._last is None:
            return MeshError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the deadline left no time for {'another' if self.attempts else 'an'} attempt"
                + (f" (attempts: {summary})" if summary else ""),
                reason=REASON_UPSTREAM_TIMEOUT,
            )
        error = self._last[1]
        return _caller_error(
            error, f"{error.message} (attempts: {summary})" if len(self.attempts) > 1 else error.message
        )


def _move_on_reason(error: MeshError, failed: Candidate, candidate: Candidate, plan: _Plan) -> str | None:
    """Why the router may try `candidate` after `failed` raised `error`; None when it may not."""
    if error.code in _MOVE_ON_CODES:
        return _MOVE_ON_CODES[error.code]
    if error.reason == REASON_CONTEXT_WINDOW_EXCEEDED:
        if candidate.context_window > failed.context_window:
            return "context window exceeded; trying a larger window"
        return None
    if error.reason == REASON_CONTENT_FILTERED and plan.fallback_on_content_filter:
        return "content filtered; policy allows fallback"
    if error.code in _AUTH_CODES and candidate.provider != failed.provider:
        return f"{failed.provider} rejected its credentials"
    return None


def _provider_request(
    request: RouterRequest,
    candidate: Candidate,
    cls: type[ppb.ProviderServiceChatRequest] | type[ppb.ProviderServiceStreamChatRequest],
) -> ppb.ProviderServiceChatRequest | ppb.ProviderServiceStreamChatRequest:
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


def _no_instance(candidate: Candidate) -> MeshError:
    return MeshError(
        grpc.StatusCode.UNAVAILABLE,
        f"no healthy instance of {candidate.service} for model {candidate.name}",
        reason=REASON_NO_INSTANCE,
    )


def _caller_error(error: MeshError, message: str) -> MeshError:
    """The error as callers see it: a provider's credential problem is ours to fix, not theirs."""
    if error.code in _AUTH_CODES:
        return MeshError(grpc.StatusCode.FAILED_PRECONDITION, message, reason=REASON_PROVIDER_AUTH)
    return MeshError(
        error.code,
        message,
        reason=error.reason,
        metadata=error.metadata,
        retry_after=error.retry_after,
        field=error.field,
    )


def _describe(attempt: rpb.Attempt) -> str:
    outcome = rpb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
    where = f"{attempt.model}@{attempt.provider}" + (f" {attempt.instance}" if attempt.instance else "")
    code = f" {code_from_number(attempt.code).name}" if attempt.outcome == rpb.ATTEMPT_OUTCOME_FAILED else ""
    return f"{where}: {outcome}{code}" + (f" ({attempt.message})" if attempt.message else "")

"""The router's request path: resolve → plan candidates → attempts within one deadline.

One deadline bounds everything: each attempt gets min(per-attempt timeout,
time left) and none starts below the minimum budget; a Retry-After wait is
honoured only when an attempt still fits after it, and delays only its own
candidate. Every attempt, on every path, goes through one lifecycle
(`attempts.py`: its states and how outcomes are judged; `race.py`: choose →
admit through breakers and balancer → run → settle → release). Unary
requests run on `executor.py` (FALLBACK, HEDGE, FANOUT as one state
machine), streams on `streaming.py` (one attempt at a time, timed by first
token and idle gap). Retries and hedges draw on sliding-window budgets;
every response (or error) lists what each attempt did.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import structlog
from opentelemetry import trace

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import model_capabilities
from services.common import telemetry_names as names
from services.common.auth import current_tenant
from services.common.errors import REASON_MODEL_NOT_FOUND, MeshError, invalid_argument, unsupported_feature
from services.common.reasoning import asks_for_reasoning
from services.router import access, auto, extensions
from services.router.answers import answer_fields
from services.router.attempts import judge_answer
from services.router.balancer import Balancer
from services.router.breakers import BreakerRegistry, CircuitBreaker
from services.router.budgets import SlidingBudget
from services.router.config import Candidate, ResolvedCapabilities, RoutingTable, Strategy
from services.router.deadlines import DeadlineMargin
from services.router.executor import Executor
from services.router.observations import HeadroomTracker, LatencyTracker
from services.router.race import REASON_CIRCUIT_OPEN, Flight, Race
from services.router.race_errors import REASON_MESH_MISCONFIGURED
from services.router.streaming import StreamRun

__all__ = [
    "REASON_CIRCUIT_OPEN",
    "REASON_MESH_MISCONFIGURED",
    "Plan",
    "RouterEngine",
    "capability_metadata",
    "provider_request",
]

log = structlog.get_logger(__name__)

RouterRequest: TypeAlias = rpb.ChatRequest | rpb.StreamChatRequest

_STRATEGIES: dict[int, Strategy] = {
    rpb.ROUTING_STRATEGY_FALLBACK: "fallback",
    rpb.ROUTING_STRATEGY_HEDGE: "hedge",
    rpb.ROUTING_STRATEGY_FANOUT_FIRST: "fanout_first",
    rpb.ROUTING_STRATEGY_FANOUT_ALL: "fanout_all",
}


@dataclass(frozen=True, slots=True)
class Plan:
    candidates: list[Candidate]
    strategy: Strategy
    #: The strategy the request itself asked for (None: the routing file's).
    requested_strategy: Strategy | None
    per_attempt_timeout_s: float | None
    hedge_delay_s: float | None
    max_retries: int | None
    fallback_on_content_filter: bool
    allow_continuation: bool
    first_token_timeout_s: float
    stream_idle_timeout_s: float


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
        self.margin = DeadlineMargin()
        self._strategy_notes: set[str] = set()

    @staticmethod
    def loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # -- planning --------------------------------------------------------------------------

    def plan(self, request: RouterRequest) -> Plan:
        policy = request.routing
        candidates = self._candidates(request)
        # The primary's strategy, read before the sort below may put a fallback first.
        strategy = _STRATEGIES.get(policy.strategy, candidates[0].strategy)
        # Steer away from providers near their rate limits, open breakers and
        # models with no instance, but keep them as a last resort.
        if len(candidates) > 1:
            candidates.sort(key=self._deprioritised)
        per_attempt = _positive_seconds(policy, "per_attempt_timeout")
        hedge_delay = _seconds(policy, "hedge_delay")
        if hedge_delay is not None and hedge_delay < 0:
            raise invalid_argument("routing.hedge_delay", "must not be negative")
        if policy.HasField("max_retries") and not 0 <= policy.max_retries <= 10:
            raise invalid_argument("routing.max_retries", "must be between 0 and 10")
        defaults = self.table.defaults
        first_token = _positive_seconds(policy, "first_token_timeout") or per_attempt
        idle = _positive_seconds(policy, "stream_idle_timeout")
        return Plan(
            candidates=candidates,
            strategy=strategy,
            requested_strategy=_STRATEGIES.get(policy.strategy),
            per_attempt_timeout_s=per_attempt,
            hedge_delay_s=hedge_delay,
            max_retries=policy.max_retries if policy.HasField("max_retries") else None,
            fallback_on_content_filter=policy.fallback_on_content_filter,
            allow_continuation=policy.allow_mid_stream_continuation,
            first_token_timeout_s=first_token or defaults.first_token_timeout_s,
            stream_idle_timeout_s=idle or defaults.stream_idle_timeout_s,
        )

    def _candidates(self, request: RouterRequest) -> list[Candidate]:
        """The request's candidates in order, unique, and only those the tenant may use."""
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
        return access.permitted(current_tenant.get(), self.table, request.model, unique, named)

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

    def hedge_delay(self, plan: Plan, candidate: Candidate) -> float:
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
        race = Race(self, plan, deadline)
        filtered: list[tuple[Candidate, ppb.ProviderServiceChatResponse]] = []

        async def call(flight: Flight) -> ppb.ProviderServiceChatResponse:
            answer: ppb.ProviderServiceChatResponse = await flight.instance.stub.Chat(
                provider_request(request, flight.candidate, ppb.ProviderServiceChatRequest),
                timeout=flight.budget,
                metadata=capability_metadata(flight.candidate),
            )
            self.headroom.record(flight.candidate.provider, answer.headroom)
            refusal = judge_answer(answer.finish_reason, fallback_on_content_filter=plan.fallback_on_content_filter)
            if refusal is not None:
                filtered.append((flight.candidate, answer))
                raise refusal
            return answer

        try:
            with self.margin.request():
                winners = await Executor(race, call).run()
        except MeshError:
            if not filtered:
                raise
            # No candidate did better than the content filter: that answer is still the answer.
            return _response(*filtered[0], race.attempts)
        responses = [_response(flight.candidate, flight.answer, race.attempts) for flight in winners]
        responses[0].alternatives.extend(responses[1:])
        return responses[0]

    # -- streaming -------------------------------------------------------------------------

    def stream_chat(
        self, request: rpb.StreamChatRequest, deadline: float
    ) -> AsyncGenerator[rpb.StreamChatResponse, None]:
        """Falls back (and retries) freely before the first delta; after it, fails or continues.

        Streams do not hedge or fan out: a hedge would have to buffer one
        stream while racing another, which costs the time to first token it
        exists to save. A request that asks for it is refused; a routing-file
        strategy is noted on the span and in the log.
        """
        plan = self.plan(request)
        if plan.requested_strategy not in (None, "fallback"):
            raise invalid_argument(
                "routing.strategy",
                f"streams try candidates one at a time; {plan.requested_strategy.upper()} applies to Chat only "
                "(use FALLBACK or leave it unset)",
            )
        if plan.strategy != "fallback":
            self._note_stream_strategy(plan)
        return StreamRun(self, request, plan, deadline).events()

    def _note_stream_strategy(self, plan: Plan) -> None:
        model = plan.candidates[0].name
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(names.ROUTER_STRATEGY, f"fallback (routing file says {plan.strategy}; streams do not)")
        if model not in self._strategy_notes:
            self._strategy_notes.add(model)
            log.info("streams run as fallback", model=model, routing_strategy=plan.strategy)


def _response(
    candidate: Candidate, answer: ppb.ProviderServiceChatResponse, attempts: list[rpb.Attempt]
) -> rpb.ChatResponse:
    return rpb.ChatResponse(message=answer.message, **answer_fields(candidate, answer, attempts))


def _seconds(policy: rpb.RoutingPolicy, name: str) -> float | None:
    return getattr(policy, name).ToNanoseconds() / 1e9 if policy.HasField(name) else None


def _positive_seconds(policy: rpb.RoutingPolicy, name: str) -> float | None:
    seconds = _seconds(policy, name)
    if seconds is not None and seconds <= 0:
        raise invalid_argument(f"routing.{name}", "must be positive; omit it to use the routing file's")
    return seconds


def provider_request(
    request: RouterRequest,
    candidate: Candidate,
    cls: type[ppb.ProviderServiceChatRequest] | type[ppb.ProviderServiceStreamChatRequest],
    *,
    assistant_prefix: str = "",
) -> Any:
    _check_capabilities(request, candidate)
    built = cls(
        model=candidate.upstream_model,
        messages=request.messages,
        tools=request.tools,
        tool_choice=request.tool_choice,
        settings=request.settings,
        assistant_prefix=assistant_prefix,
        caller=request.caller,
    )
    # Provider-only options reach adapters of that kind, or of that one instance, only.
    own = extensions.for_candidate(request.extensions, candidate)
    if own is not None:
        built.extensions.fields[candidate.kind].CopyFrom(own)
    return built


def capability_metadata(candidate: Candidate) -> tuple[tuple[str, str], ...]:
    """`llmmesh-model-capabilities` for an attempt on `candidate`: its true capabilities."""
    return _capability_metadata(candidate.capabilities)


@functools.cache
def _capability_metadata(caps: ResolvedCapabilities) -> tuple[tuple[str, str], ...]:
    # Built once per distinct capability set (a handful per routing file), not per attempt.
    flags = ("vision", "documents", "audio", "tools", "json_schema", "reasoning", "sampling")
    return model_capabilities.encode(flag for flag in flags if getattr(caps, flag))


def _check_capabilities(request: RouterRequest, candidate: Candidate) -> None:
    """What the routing file says the model cannot do, refused as an adapter would.

    The attempt fails UNSUPPORTED_FEATURE naming the field and the router
    moves on, before any upstream call: the caller asked for the feature, not
    for a model without it.
    """
    caps = candidate.capabilities
    where = "in the routing file"
    if not caps.reasoning and asks_for_reasoning(request):
        raise unsupported_feature(
            "settings.reasoning", f"model {candidate.name!r} does not reason (reasoning: false {where})"
        )
    if not caps.tools and request.tools:
        raise unsupported_feature(
            "tools", f"model {candidate.name!r} cannot call tools (capabilities.tools: false {where})"
        )
    if not caps.json_schema and request.settings.response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        raise unsupported_feature(
            "settings.response_format.json_schema",
            f"model {candidate.name!r} does not follow JSON schemas (capabilities.json_schema: false {where})",
        )
    lacking = {
        kind: (flag, words)
        for kind, flag, words in (
            ("image", "vision", "reads no images"),
            ("document", "documents", "reads no documents"),
            ("audio", "audio", "hears no audio"),
        )
        if not getattr(caps, flag)
    }
    if lacking:
        for path, part in _media_parts(request):
            kind = part.WhichOneof("kind")
            if kind in lacking:
                flag, words = lacking[kind]
                raise unsupported_feature(
                    f"{path}.{kind}", f"model {candidate.name!r} {words} (capabilities.{flag}: false {where})"
                )
    settings = request.settings
    if (
        caps.max_output_tokens
        and settings.HasField("max_output_tokens")
        and (settings.max_output_tokens > caps.max_output_tokens)
    ):
        raise unsupported_feature(
            "settings.max_output_tokens",
            f"model {candidate.name!r} writes at most {caps.max_output_tokens} tokens "
            f"(capabilities.max_output_tokens {where}); ask for fewer",
        )


def _media_parts(request: RouterRequest) -> Iterator[tuple[str, chat_pb2.ContentPart]]:
    """(field path, part) for every content part and tool-result part of the request."""
    for index, message in enumerate(request.messages):
        for part_index, part in enumerate(message.content):
            yield f"messages[{index}].content[{part_index}]", part
        for part_index, part in enumerate(message.tool_result.parts):
            yield f"messages[{index}].tool_result.parts[{part_index}]", part

"""The router's request-level metrics and access log, recorded at its doors.

A door (the gRPC servicer today; the HTTP door's handler next) wraps each chat request in `served(...)`: in-flight by door and
call shape, duration, time to first token, outcome by requested model,
answering model, provider and gRPC code (failed requests included), tokens
and cost per tenant, and, when LLMMESH_ACCESS_LOG is on, one log line per
request without content. The engine's own tallies (attempts, fallbacks,
hedges) live in telemetry().instruments; this module exports them, the
breaker states, discovery freshness and the quota store's health, in the
router process only (`register`, from services/router/main.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from weakref import ref

import grpc
import structlog
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_genai as genai
from services.common import telemetry_names as names
from services.common.auth import current_tenant
from services.common.errors import MeshError
from services.common.telemetry import DURATION_HISTOGRAM, Tally, register_tally, telemetry
from services.router import auto

if TYPE_CHECKING:
    from services.common.discovery import Discovery
    from services.router.breakers import BreakerRegistry
    from services.router.config import RoutingTable

access_log = structlog.get_logger("llmmesh.access")

_BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}
Answer: TypeAlias = rpb.ChatResponse | rpb.StreamChatFinal


@dataclass
class RouterMetrics:
    """The router's caller-facing instruments (no-op histograms until `register`)."""

    duration: Histogram
    time_to_first_token: Histogram
    requests: Tally = field(default_factory=Tally)
    tokens: Tally = field(default_factory=Tally)
    cost: Tally = field(default_factory=Tally)
    in_flight: Tally = field(default_factory=Tally)
    access_log: bool = False
    quota_store_up: bool | None = None  # None: no shared store to report on

    @classmethod
    def create(cls, meter: Meter, *, access_log: bool = False) -> RouterMetrics:
        return cls(
            duration=meter.create_histogram(
                names.METRIC_SERVER_REQUEST_DURATION,
                description="Chat requests as the router's callers see them, failures included.",
                **DURATION_HISTOGRAM,
            ),
            time_to_first_token=meter.create_histogram(
                names.METRIC_SERVER_TIME_TO_FIRST_TOKEN,
                description="Streamed chats: from the request to the first content chunk.",
                **DURATION_HISTOGRAM,
            ),
            access_log=access_log,
        )


_current = RouterMetrics.create(metrics.NoOpMeter("llmmesh"))


def router_metrics() -> RouterMetrics:
    return _current


def register(
    *,
    breakers: BreakerRegistry,
    discovery: Discovery,
    services: Iterable[str],
    access_log: bool,
    quota_store_up: bool | None,
) -> RouterMetrics:
    """Creates and exports the router's instruments on the process meter; call once, from the router's main."""
    global _current  # one per process, like telemetry()
    meter = telemetry().meter
    _current = RouterMetrics.create(meter, access_log=access_log)
    _current.quota_store_up = quota_store_up
    engine = telemetry().instruments
    for name, tally, unit, description, up_down in (
        (names.METRIC_ROUTER_REQUESTS, _current.requests, "{request}", "Chat requests by outcome.", False),
        (names.METRIC_ROUTER_TOKENS, _current.tokens, "{token}", "Tokens of answered chats.", False),
        (names.METRIC_ROUTER_COST, _current.cost, "{USD}", "Estimated cost (routing price table).", False),
        (names.METRIC_ROUTER_IN_FLIGHT, _current.in_flight, "{request}", "Chats being served.", True),
        (names.METRIC_ROUTER_ATTEMPTS, engine.router_attempts, "{attempt}", "Attempts by outcome and code.", False),
        (names.METRIC_ROUTER_FALLBACKS, engine.router_fallbacks, "{fallback}", "Moves to another model.", False),
        (names.METRIC_ROUTER_HEDGES, engine.router_hedges, "{hedge}", "Hedged attempts by result.", False),
    ):
        register_tally(meter, name, tally, unit=unit, description=description, up_down=up_down)
    _observe_breakers(meter, breakers)
    _observe_discovery(meter, discovery, list(services))
    meter.create_observable_gauge(
        names.METRIC_ROUTER_QUOTA_STORE_UP,
        callbacks=[_quota_store_observer(_current)],
        description="1 while the shared quota store (Redis) answers, 0 while quotas fall back to local counts.",
    )
    return _current


def _quota_store_observer(current: RouterMetrics) -> Callable[[CallbackOptions], list[Observation]]:
    def observe(_: CallbackOptions) -> list[Observation]:
        return [] if current.quota_store_up is None else [Observation(int(current.quota_store_up))]

    return observe


def _observe_breakers(meter: Meter, registry: BreakerRegistry) -> None:
    """Breaker state as a gauge, 0 closed, 1 half-open, 2 open; scope, provider and model as labels."""
    held = ref(registry)

    def observe(_: CallbackOptions) -> list[Observation]:
        current = held()
        if current is None:
            return []
        return [Observation(_BREAKER_LEVELS[state], breaker_labels(name)) for name, state in current.states().items()]

    meter.create_observable_gauge(
        names.METRIC_ROUTER_BREAKER_STATE,
        callbacks=[observe],
        description="Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    )


def breaker_labels(name: str) -> dict[str, str]:
    """`provider openai` and `openai/gpt-4o` (BreakerRegistry's names) as scope, provider and model labels."""
    if name.startswith("provider "):
        return {names.BREAKER_SCOPE: "provider", names.GEN_AI_PROVIDER_NAME: name.removeprefix("provider ")}
    provider, _, model = name.partition("/")
    return {names.BREAKER_SCOPE: "model", names.GEN_AI_PROVIDER_NAME: provider, names.GEN_AI_REQUEST_MODEL: model}


def _observe_discovery(meter: Meter, discovery: Discovery, services: list[str]) -> None:
    def fresh(_: CallbackOptions) -> list[Observation]:
        return [Observation(int(discovery.fresh))]

    def endpoints(_: CallbackOptions) -> list[Observation]:
        return [
            Observation(len(discovery.endpoints(service)), {names.DISCOVERY_SERVICE: service}) for service in services
        ]

    meter.create_observable_gauge(
        names.METRIC_ROUTER_DISCOVERY_FRESH,
        callbacks=[fresh],
        description="1 while discovery answers, 0 while the router routes from its last good table.",
    )
    meter.create_observable_gauge(
        names.METRIC_ROUTER_DISCOVERY_ENDPOINTS,
        callbacks=[endpoints],
        unit="{instance}",
        description="Healthy instances discovery lists per provider service.",
    )


def requested_model(table: RoutingTable, model: str) -> tuple[str, str]:
    """The requested model as the routing table names it and its provider; bounded label values."""
    if auto.is_auto(model):
        return "auto", ""
    candidate = table.lookup(model)
    if candidate is None:
        return names.MODEL_UNKNOWN, ""
    return candidate.name, candidate.provider


def served(table: RoutingTable, model: str, *, door: str, stream: bool) -> Served:
    """The telemetry of one caller request through `door` (grpc or http); use as a context manager."""
    requested, provider = requested_model(table, model)
    return Served(router_metrics(), trace.get_current_span(), requested, provider, door=door, stream=stream)


class Served:
    """One caller request: in-flight, duration, TTFT, outcome, tokens, cost, span attributes, access log."""

    __slots__ = (
        "_answer",
        "_door",
        "_finished",
        "_first_token",
        "_metrics",
        "_provider",
        "_requested",
        "_span",
        "_started",
        "_stream",
        "_tenant",
    )

    def __init__(
        self, current: RouterMetrics, span: trace.Span, requested: str, provider: str, *, door: str, stream: bool
    ) -> None:
        self._metrics = current
        self._span = span
        self._requested = requested
        # Until an answer names its provider: the requested model's, so failures carry one too.
        self._provider = provider
        self._door = door
        self._stream = stream
        self._answer: Answer | None = None
        self._first_token: float | None = None
        self._finished = False

    def __enter__(self) -> Served:
        self._started = time.perf_counter()
        tenant = current_tenant.get()
        self._tenant = tenant.name if tenant is not None else ""
        self._metrics.in_flight.add(1, self._in_flight_key())
        return self

    def _in_flight_key(self) -> tuple[tuple[str, str], ...]:
        return ((names.DOOR, self._door), (names.CALL, "stream" if self._stream else "unary"))

    def event(self, event: rpb.StreamChatResponse) -> None:
        """A stream event: the first delta is the first token; the final one is the answer."""
        if self._first_token is None and event.HasField("delta"):
            self._first_token = time.perf_counter() - self._started
        elif event.HasField("final"):
            self.answered(event.final)

    def answered(self, answer: Answer) -> None:
        self._answer = answer
        self._provider = answer.provider
        if self._span.is_recording():
            genai.record_answer(
                self._span,
                usage=answer.usage,
                finish_reason=answer.finish_reason,
                response_model=answer.response_model,
                provider=answer.provider,
                extra={
                    names.ROUTER_MODEL: answer.model,
                    names.ROUTER_ATTEMPTS: len(answer.attempts),
                    names.ROUTER_ESTIMATED_COST: answer.estimated_cost_usd,
                },
            )

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        self.finish(error)

    def finish(self, error: BaseException | None) -> None:
        """Records the request's end (`error`: what ended it, None for an answer); later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        seconds = time.perf_counter() - self._started
        self._metrics.in_flight.add(-1, self._in_flight_key())
        code = _code_of(error)
        if isinstance(error, MeshError):
            genai.record_error(self._span, error.code, error.message)
        labels = self._labels(code)
        self._metrics.duration.record(seconds, labels)
        if self._first_token is not None:
            self._metrics.time_to_first_token.record(self._first_token, labels)
        self._count(code, self._tenant)
        if self._metrics.access_log:
            self._log(code, self._tenant, seconds)

    def _labels(self, code: str) -> dict[str, str]:
        labels = {
            names.GEN_AI_OPERATION_NAME: names.OPERATION_CHAT,
            names.GEN_AI_REQUEST_MODEL: self._requested,
            names.GEN_AI_RESPONSE_MODEL: self._answer.model if self._answer is not None else "",
            names.GEN_AI_PROVIDER_NAME: self._provider,
            names.CALL: "stream" if self._stream else "unary",
            names.CODE: code,
        }
        if code != "OK":
            labels[names.ERROR_TYPE] = code
        return labels

    def _count(self, code: str, tenant: str) -> None:
        answered = self._answer.model if self._answer is not None else ""
        common = (
            (names.GEN_AI_REQUEST_MODEL, self._requested),
            (names.GEN_AI_RESPONSE_MODEL, answered),
            (names.GEN_AI_PROVIDER_NAME, self._provider),
            (names.TENANT, tenant),
        )
        self._metrics.requests.add(1, (*common, (names.DOOR, self._door), (names.CODE, code)))
        answer = self._answer
        if answer is None:
            return
        # A fan-out's alternatives cost money too, not only the answer returned first.
        answers: list[Any] = [answer, *answer.alternatives] if isinstance(answer, rpb.ChatResponse) else [answer]
        usage = _total_usage(answers)
        self._metrics.tokens.add(usage.input_tokens, (*common, (names.GEN_AI_TOKEN_TYPE, "input")))
        self._metrics.tokens.add(usage.output_tokens, (*common, (names.GEN_AI_TOKEN_TYPE, "output")))
        cost = sum(one.estimated_cost_usd for one in answers)
        if cost:
            self._metrics.cost.add(cost, common)

    def _log(self, code: str, tenant: str, seconds: float) -> None:
        answer = self._answer
        usage = _total_usage([answer]) if answer is not None else chat_pb2.Usage()
        access_log.info(
            "request",
            door=self._door,
            call="stream" if self._stream else "unary",
            tenant=tenant,
            model=self._requested,
            answer_model=answer.model if answer is not None else "",
            provider=self._provider,
            code=code,
            latency_ms=round(seconds * 1000, 1),
            ttft_ms=round(self._first_token * 1000, 1) if self._first_token is not None else None,
            attempts=len(answer.attempts) if answer is not None else None,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=answer.estimated_cost_usd if answer is not None else 0.0,
        )


def _total_usage(answers: list[Any]) -> chat_pb2.Usage:
    total = chat_pb2.Usage()
    for answer in answers:
        total.input_tokens += answer.usage.input_tokens
        total.output_tokens += answer.usage.output_tokens
    return total


def _code_of(error: BaseException | None) -> str:
    if error is None:
        return "OK"
    code = getattr(error, "code", None)  # MeshError, and the HTTP door's client-gone error (CANCELLED)
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.INTERNAL.name

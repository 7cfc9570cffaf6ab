"""The router's instruments: request-level ones fed by served.py at both doors, and the engine's.

Each caller request (gRPC Chat, StreamChat and Embed; HTTP chat completions,
responses and embeddings) is one `Served` record (served.py) that writes
in-flight by door and call shape, duration, time to first token, outcome by
requested model, answering model, provider and code, tokens and cost per
tenant, and, when LLMMESH_ACCESS_LOG is on, one log line without content
into the `RouterMetrics` below. The engine's own tallies (attempts, fallbacks,
hedges) live in telemetry().instruments; this module exports them, the
breaker states, discovery freshness and the quota store's health, in the
router process only (`register`, from services/router/main.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from weakref import ref

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from services.common import telemetry_names as names
from services.common.telemetry import DURATION_HISTOGRAM, Tally, register_tally, telemetry

if TYPE_CHECKING:
    from services.common.discovery import Discovery
    from services.router.breakers import BreakerRegistry

_BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}


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
                description="Requests (chat and embeddings) as the router's callers see them, failures included.",
                **DURATION_HISTOGRAM,
            ),
            time_to_first_token=meter.create_histogram(
                names.METRIC_SERVER_TIME_TO_FIRST_TOKEN,
                description="Streamed chats: from the request to the first content chunk.",
                **DURATION_HISTOGRAM,
            ),
            access_log=access_log,
        )

    @classmethod
    def create_detached(cls) -> RouterMetrics:
        """Instruments that export nothing: before `register`, and for records outside a door."""
        return cls.create(metrics.NoOpMeter("llmmesh"))


_current = RouterMetrics.create_detached()


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
        (
            names.METRIC_ROUTER_REQUESTS,
            _current.requests,
            "{request}",
            "Caller requests by door, model, provider and code.",
            False,
        ),
        (names.METRIC_ROUTER_TOKENS, _current.tokens, "{token}", "Tokens of answered requests.", False),
        (names.METRIC_ROUTER_COST, _current.cost, "{USD}", "Estimated cost (routing price table).", False),
        (
            names.METRIC_ROUTER_IN_FLIGHT,
            _current.in_flight,
            "{request}",
            "Requests being served, by door and call shape.",
            True,
        ),
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

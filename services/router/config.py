"""The routing file: provider instances, models, aliases, fallback chains, prices.

Loaded once at start (LLMMESH_ROUTING_FILE, else the embedded
`defaults/routing.yaml`) and validated as a whole; a bad file stops the
router with file, line and problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.yamlconfig import ConfigProblem

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"

Strategy = Literal["fallback", "hedge", "fanout_first", "fanout_all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderInstance(_Strict):
    """A provider instance: an adapter kind found under one discovery service."""

    kind: Literal["openai", "anthropic", "google", "mock"] | None = None
    #: Discovery service name; defaults to llmmesh-provider-<instance name>.
    service: str = ""


class Price(_Strict):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)


class AttemptSettings(_Strict):
    """Per-model attempt behaviour; unset values come from `defaults`."""

    per_attempt_timeout_s: float | None = Field(None, gt=0, le=3600)
    strategy: Strategy | None = None
    hedge_delay_ms: float | None = Field(None, ge=0)
    max_retries: int | None = Field(None, ge=0, le=10)


class ModelRoute(AttemptSettings):
    """One model callers may ask for."""

    provider: str = Field(pattern=_NAME_PATTERN)
    #: The name the upstream knows it by; defaults to the routing name.
    upstream_model: str = ""
    aliases: list[str] = Field(default_factory=list)
    context_window: int = Field(0, ge=0)
    fallbacks: list[str] = Field(default_factory=list)
    price: Price = Field(default_factory=Price)
    description: str = ""


class Defaults(_Strict):
    """Values for every model that does not set its own."""

    per_attempt_timeout_s: float = Field(60.0, gt=0, le=3600)
    strategy: Strategy = "fallback"
    hedge_delay_ms: float = Field(500.0, ge=0)
    max_retries: int = Field(0, ge=0, le=10)
    #: No attempt starts with less time than this left.
    min_attempt_budget_ms: float = Field(50.0, ge=1)


class RoutingFile(_Strict):
    """The whole routing file."""

    providers: dict[str, ProviderInstance] = Field(min_length=1)
    models: dict[str, ModelRoute] = Field(min_length=1)
    defaults: Defaults = Field(default_factory=Defaults)

    @model_validator(mode="after")
    def _references_resolve(self) -> RoutingFile:
        for name, provider in self.providers.items():
            if provider.kind is None and name not in ("openai", "anthropic", "google", "mock"):
                raise ConfigProblem(("providers", name), "needs `kind` (openai, anthropic, google or mock)")
        seen: dict[str, str] = {name: name for name in self.models}
        for name, model in self.models.items():
            if model.provider not in self.providers:
                raise ConfigProblem(
                    ("models", name, "provider"),
                    f"provider {model.provider!r} is not under `providers` (known: {', '.join(sorted(self.providers))})",
                )
            for index, fallback in enumerate(model.fallbacks):
                if fallback not in self.models:
                    raise ConfigProblem(("models", name, "fallbacks", index), f"fallback {fallback!r} is not a model")
                if fallback == name:
                    raise ConfigProblem(("models", name, "fallbacks", index), "a model cannot fall back to itself")
            for index, alias in enumerate(model.aliases):
                if alias in seen:
                    raise ConfigProblem(
                        ("models", name, "aliases", index), f"alias {alias!r} is already used by {seen[alias]!r}"
                    )
                seen[alias] = name
        return self


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model resolved to everything an attempt needs."""

    name: str
    provider: str
    kind: str
    service: str
    upstream_model: str
    context_window: int
    price: Price
    per_attempt_timeout_s: float
    strategy: Strategy
    hedge_delay_ms: float
    max_retries: int

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int) -> float:
        cached_rate = self.price.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = self.price.input_per_mtok
        uncached = max(input_tokens - cached_input_tokens, 0)
        return (
            uncached * self.price.input_per_mtok
            + cached_input_tokens * cached_rate
            + output_tokens * self.price.output_per_mtok
        ) / 1_000_000


class RoutingTable:
    """Name → Candidate lookups built once from a RoutingFile."""

    def __init__(self, routing: RoutingFile) -> None:
        self.routing = routing
        self.defaults = routing.defaults
        self._candidates = {name: self._build(name, route) for name, route in routing.models.items()}
        self._aliases = {alias: name for name, route in routing.models.items() for alias in route.aliases}

    def _build(self, name: str, route: ModelRoute) -> Candidate:
        provider = self.routing.providers[route.provider]
        defaults = self.routing.defaults
        return Candidate(
            name=name,
            provider=route.provider,
            kind=provider.kind or route.provider,
            service=provider.service or f"llmmesh-provider-{route.provider}",
            upstream_model=route.upstream_model or name,
            context_window=route.context_window,
            price=route.price,
            per_attempt_timeout_s=route.per_attempt_timeout_s or defaults.per_attempt_timeout_s,
            strategy=route.strategy or defaults.strategy,
            hedge_delay_ms=route.hedge_delay_ms if route.hedge_delay_ms is not None else defaults.hedge_delay_ms,
            max_retries=route.max_retries if route.max_retries is not None else defaults.max_retries,
        )

    def lookup(self, name: str) -> Candidate | None:
        """The candidate for a model name or alias."""
        return self._candidates.get(self._aliases.get(name, name))

    def fallbacks_of(self, name: str) -> list[str]:
        return list(self.routing.models[name].fallbacks)

    def close_matches(self, name: str, limit: int = 3) -> list[str]:
        return difflib.get_close_matches(name, [*self._candidates, *self._aliases], n=limit, cutoff=0.4)

    def models(self) -> Iterable[tuple[str, ModelRoute, Candidate]]:
        for name, route in self.routing.models.items():
            yield name, route, self._candidates[name]

    def services(self) -> set[str]:
        """Every discovery service some model routes to."""
        return {candidate.service for candidate in self._candidates.values()}

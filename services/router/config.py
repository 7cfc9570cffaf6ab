"""The routing file: provider instances, models, aliases, fallback chains, prices.

Loaded once at start (LLMMESH_ROUTING_FILE, else the embedded
`defaults/routing.yaml`) and validated as a whole; a bad file stops the
router with file, line and problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.yamlconfig import ConfigProblem

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"

Strategy = Literal["fallback", "hedge", "fanout_first", "fanout_all"]
#: Adapter kinds that read `assistant_prefix` (Anthropic prefill, the mock); the others refuse it.
PREFIX_KINDS = ("anthropic", "mock")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderInstance(_Strict):
    """A provider instance: an adapter kind found under one discovery service."""

    kind: Literal["openai", "anthropic", "google", "mock"] | None = None
    #: Discovery service name; defaults to llmmesh-provider-<instance name>.
    service: str = ""
    #: Its adapter can continue an assistant prefix (ProviderService `assistant_prefix`):
    #: only such providers take over a stream that failed mid-answer.
    continues_prefix: bool = False


class Price(_Strict):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)
    #: Prompt tokens written to the provider's cache (Usage.cache_write_input_tokens); unset:
    #: the input rate. Anthropic charges 1.25x input for 5-minute entries, 2x for 1-hour ones.
    cache_write_per_mtok: float | None = Field(None, ge=0)


HedgeDelay = float | Literal["p95"]


class AttemptSettings(_Strict):
    """Per-model attempt behaviour; unset values come from `defaults`."""

    per_attempt_timeout_s: float | None = Field(None, gt=0, le=3600)
    strategy: Strategy | None = None
    #: Milliseconds, or "p95" for the model's observed 95th-percentile latency.
    hedge_delay_ms: HedgeDelay | None = None
    max_retries: int | None = Field(None, ge=0, le=10)


class Capabilities(_Strict):
    """What a model can do (routing file `capabilities:`); unset: see `resolved`.

    The router skips a candidate whose capability a request needs (tools,
    images, a JSON schema, reasoning, more output tokens) with
    UNSUPPORTED_FEATURE before any attempt; ListModels and GET /v1/models show
    the resolved values.
    """

    #: Image parts in user messages. Default true (the adapter refuses what it cannot read).
    vision: bool | None = None
    #: Document parts (DocumentPart: PDF, plain text) in user messages. Default true.
    documents: bool | None = None
    #: Audio parts (AudioPart) in user messages. Default true.
    audio: bool | None = None
    #: Tool calls; the older `supports_tools` says the same. Default true.
    tools: bool | None = None
    #: A JSON schema for the answer (response_format json_schema). Default true.
    json_schema: bool | None = None
    #: Reasoning; the older `reasoning` flag says the same. Default true.
    reasoning: bool | None = None
    #: Takes temperature and top_p. Default: true, except on anthropic providers, whose adapter
    #: sends them only to models marked `sampling: true` (the newest Claude models refuse them).
    sampling: bool | None = None
    #: Most output tokens per answer; 0: unknown. A request asking for more moves on.
    max_output_tokens: int = Field(0, ge=0)


@dataclass(frozen=True, slots=True)
class ResolvedCapabilities:
    """Capabilities with every default applied (what the router and ListModels use)."""

    vision: bool = True
    documents: bool = True
    audio: bool = True
    tools: bool = True
    json_schema: bool = True
    reasoning: bool = True
    sampling: bool = True
    context_window: int = 0
    max_output_tokens: int = 0


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
    #: False for models that cannot call tools; `auto` skips them when tools are sent.
    supports_tools: bool = True
    #: False for models that do not reason: a request asking for reasoning (an effort, or a
    #: budget above 0) is one they cannot serve, and the router moves on without calling them.
    reasoning: bool = True
    #: Vector length of an embedding model (0: a chat model). Embedding models serve Embed
    #: only, are priced by `price.input_per_mtok`, and fall back only to the same length.
    dimensions: int = Field(0, ge=0, le=65536)
    #: What the model can do; `supports_tools` and `reasoning` above are older spellings of
    #: `capabilities.tools` and `capabilities.reasoning` (set one or the other, or both alike).
    capabilities: Capabilities = Field(default_factory=Capabilities)

    def check_legacy_flags(self, name: str) -> None:
        """`supports_tools` / `reasoning` and their `capabilities` spellings must not disagree."""
        for legacy, new in (("supports_tools", "tools"), ("reasoning", "reasoning")):
            stated = getattr(self.capabilities, new)
            if legacy in self.model_fields_set and stated is not None and stated != getattr(self, legacy):
                raise ConfigProblem(
                    ("models", name, "capabilities", new),
                    f"says {str(stated).lower()} but `{legacy}` says {str(getattr(self, legacy)).lower()}; "
                    "keep one of them",
                )

    def resolved(self, kind: str) -> ResolvedCapabilities:
        """The capabilities with defaults: the older flags, then true (sampling: false on anthropic)."""
        caps = self.capabilities
        if self.dimensions:
            # An embedding model serves Embed only: none of the chat capabilities apply.
            return ResolvedCapabilities(
                vision=False,
                documents=False,
                audio=False,
                tools=False,
                json_schema=False,
                reasoning=False,
                sampling=False,
            )

        def pick(value: bool | None, default: bool) -> bool:
            return default if value is None else value

        return ResolvedCapabilities(
            vision=pick(caps.vision, True),
            documents=pick(caps.documents, True),
            audio=pick(caps.audio, True),
            tools=pick(caps.tools, self.supports_tools),
            json_schema=pick(caps.json_schema, True),
            reasoning=pick(caps.reasoning, self.reasoning),
            sampling=pick(caps.sampling, kind != "anthropic"),
            context_window=self.context_window,
            max_output_tokens=caps.max_output_tokens,
        )


class Budget(_Strict):
    """A share of requests over a sliding window, plus a floor per second.

    With ratio 0.2, at most one request in five may add an extra upstream
    call (a retry, or a hedge), so an outage cannot multiply load.
    """

    ratio: float = Field(0.2, ge=0, le=1)
    window_s: float = Field(10.0, gt=0, le=3600)
    min_per_second: float = Field(1.0, ge=0)


class Breaker(_Strict):
    """Circuit breaker thresholds, per provider instance and per (provider, model)."""

    consecutive_failures: int = Field(5, ge=1)
    #: Opens when this share of the last `window` calls failed (with at least `min_calls`).
    failure_rate: float = Field(0.5, gt=0, le=1)
    window: int = Field(20, ge=2)
    min_calls: int = Field(10, ge=1)
    #: Time an open breaker skips its candidate before letting one probe through.
    open_s: float = Field(30.0, gt=0)
    #: An open breaker's next open time doubles after a failed probe, up to this.
    max_open_s: float = Field(300.0, gt=0)


class Defaults(_Strict):
    """Values for every model that does not set its own."""

    per_attempt_timeout_s: float = Field(60.0, gt=0, le=3600)
    #: Streams: the longest wait for an attempt's first chunk (a request's
    #: `first_token_timeout`, else its `per_attempt_timeout`, comes first).
    first_token_timeout_s: float = Field(60.0, gt=0, le=3600)
    #: Streams: the longest gap between two chunks once the answer flows.
    stream_idle_timeout_s: float = Field(30.0, gt=0, le=3600)
    strategy: Strategy = "fallback"
    hedge_delay_ms: HedgeDelay = 500.0
    max_retries: int = Field(0, ge=0, le=10)
    #: No attempt starts with less time than this left.
    min_attempt_budget_ms: float = Field(50.0, ge=1)
    #: First retry backoff; doubles per retry, with full jitter, up to max_backoff_ms.
    base_backoff_ms: float = Field(50.0, ge=0)
    max_backoff_ms: float = Field(2000.0, ge=0)
    retry_budget: Budget = Field(default_factory=Budget)
    hedge_budget: Budget = Field(default_factory=lambda: Budget(ratio=0.1, min_per_second=0.5))
    #: Per (provider instance, model).
    breaker: Breaker = Field(default_factory=Breaker)
    #: Per provider instance, across its models: trips on provider-wide trouble,
    #: so it needs more evidence than one model's breaker.
    provider_breaker: Breaker = Field(default_factory=lambda: Breaker(consecutive_failures=10, window=40, min_calls=20))
    #: Steer away from a provider whose reported headroom is below this share of its limit.
    low_headroom_ratio: float = Field(0.05, ge=0, le=1)


class AutoTier(_Strict):
    """Models `auto:<tier>` may choose from, best first."""

    models: list[str] = Field(min_length=1)
    description: str = ""


class Auto(_Strict):
    """How `auto` chooses a model; see the README's routing section."""

    default_tier: str = "balanced"
    tiers: dict[str, AutoTier] = Field(default_factory=dict)
    #: Room kept for the answer when checking a prompt against context windows.
    reserve_output_tokens: int = Field(4096, ge=0)


class RoutingFile(_Strict):
    """The whole routing file."""

    providers: dict[str, ProviderInstance] = Field(min_length=1)
    models: dict[str, ModelRoute] = Field(min_length=1)
    defaults: Defaults = Field(default_factory=Defaults)
    auto: Auto = Field(default_factory=Auto)

    @model_validator(mode="after")
    def _references_resolve(self) -> RoutingFile:
        for name, provider in self.providers.items():
            if provider.kind is None and name not in ("openai", "anthropic", "google", "mock"):
                raise ConfigProblem(("providers", name), "needs `kind` (openai, anthropic, google or mock)")
            if provider.continues_prefix and (provider.kind or name) not in PREFIX_KINDS:
                raise ConfigProblem(
                    ("providers", name, "continues_prefix"),
                    f"only {' and '.join(PREFIX_KINDS)} adapters can continue an assistant prefix",
                )
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
                _check_same_dimensions(name, model, index, fallback, self.models[fallback])
            self._check_embeddings_provider(name, model)
            model.check_legacy_flags(name)
            for index, alias in enumerate(model.aliases):
                if alias in seen:
                    raise ConfigProblem(
                        ("models", name, "aliases", index), f"alias {alias!r} is already used by {seen[alias]!r}"
                    )
                seen[alias] = name
        for tier_name, tier in self.auto.tiers.items():
            for index, model_name in enumerate(tier.models):
                if model_name not in self.models:
                    raise ConfigProblem(("auto", "tiers", tier_name, "models", index), f"{model_name!r} is not a model")
                if self.models[model_name].dimensions:
                    raise ConfigProblem(
                        ("auto", "tiers", tier_name, "models", index),
                        f"{model_name!r} is an embedding model; `auto` chooses chat models only",
                    )
        if self.auto.tiers and self.auto.default_tier not in self.auto.tiers:
            raise ConfigProblem(("auto", "default_tier"), f"{self.auto.default_tier!r} is not under auto.tiers")
        reserved = {"auto"} | {f"auto:{tier}" for tier in self.auto.tiers}
        for name in reserved & set(seen):
            raise ConfigProblem(("models", seen[name]), f"{name!r} is reserved for automatic model choice")
        return self

    def _check_embeddings_provider(self, name: str, model: ModelRoute) -> None:
        kind = self.providers[model.provider].kind or model.provider
        if model.dimensions and kind == "anthropic":
            raise ConfigProblem(
                ("models", name, "dimensions"),
                "anthropic offers no embeddings; route embedding models to an openai, google or mock provider",
            )


def _check_same_dimensions(name: str, model: ModelRoute, index: int, fallback: str, other: ModelRoute) -> None:
    """Vectors of another length would not fit the caller's index: such a fallback is refused at load."""
    if model.dimensions == other.dimensions:
        return
    if not model.dimensions or not other.dimensions:
        kinds = ("an embedding", "a chat") if model.dimensions else ("a chat", "an embedding")
        problem = f"{name!r} is {kinds[0]} model and {fallback!r} {kinds[1]} model"
    else:
        problem = f"{fallback!r} has {other.dimensions} dimensions, {name!r} {model.dimensions}"
    raise ConfigProblem(
        ("models", name, "fallbacks", index), f"{problem}; an embedding model falls back only to the same dimensions"
    )


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
    hedge_delay_ms: HedgeDelay
    max_retries: int
    supports_tools: bool
    #: The model reasons (routing file `reasoning`); false: requests asking for it move on.
    reasoning: bool = True
    #: Vector length of an embedding model; 0 for chat models.
    dimensions: int = 0
    #: May take over a stream mid-answer (its provider is marked `continues_prefix`).
    continues_prefix: bool = False
    #: What the model can do (routing file `capabilities`, defaults applied).
    capabilities: ResolvedCapabilities = ResolvedCapabilities()

    def cost(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int, cache_write_input_tokens: int = 0
    ) -> float:
        """US dollars: cache reads and cache writes (both inside `input_tokens`) at their own rates."""
        price = self.price
        cached_rate = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
        write_rate = price.cache_write_per_mtok if price.cache_write_per_mtok is not None else price.input_per_mtok
        uncached = max(input_tokens - cached_input_tokens - cache_write_input_tokens, 0)
        return (
            uncached * price.input_per_mtok
            + cached_input_tokens * cached_rate
            + cache_write_input_tokens * write_rate
            + output_tokens * price.output_per_mtok
        ) / 1_000_000

    def usage_cost(self, usage: Any) -> float:
        """`cost` of a chat_pb2.Usage."""
        return self.cost(
            usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.cache_write_input_tokens
        )


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
        kind = provider.kind or route.provider
        capabilities = route.resolved(kind)
        return Candidate(
            name=name,
            provider=route.provider,
            kind=kind,
            service=provider.service or f"llmmesh-provider-{route.provider}",
            upstream_model=route.upstream_model or name,
            context_window=route.context_window,
            price=route.price,
            per_attempt_timeout_s=route.per_attempt_timeout_s or defaults.per_attempt_timeout_s,
            strategy=route.strategy or defaults.strategy,
            hedge_delay_ms=route.hedge_delay_ms if route.hedge_delay_ms is not None else defaults.hedge_delay_ms,
            max_retries=route.max_retries if route.max_retries is not None else defaults.max_retries,
            supports_tools=capabilities.tools,
            reasoning=capabilities.reasoning,
            dimensions=route.dimensions,
            continues_prefix=provider.continues_prefix,
            capabilities=capabilities,
        )

    def lookup(self, name: str) -> Candidate | None:
        """The candidate for a model name or alias."""
        return self._candidates.get(self._aliases.get(name, name))

    def fallbacks_of(self, name: str) -> list[str]:
        return list(self.routing.models[name].fallbacks)

    def close_matches(self, name: str, limit: int = 3) -> list[str]:
        return difflib.get_close_matches(name, [*self._candidates, *self._aliases], n=limit, cutoff=0.4)

    def aliases(self) -> Iterable[tuple[str, str]]:
        """(alias, model name) pairs."""
        return self._aliases.items()

    def models(self) -> Iterable[tuple[str, ModelRoute, Candidate]]:
        for name, route in self.routing.models.items():
            yield name, route, self._candidates[name]

    def services(self) -> set[str]:
        """Every discovery service some model routes to."""
        return {candidate.service for candidate in self._candidates.values()}

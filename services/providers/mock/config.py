"""Behaviour of the mock provider: models, latency, failures and scripts.

Read from the YAML file named by LLMMESH_MOCK_CONFIG, else the embedded
`default.yaml`. See that file for a commented example.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FailureCode = Literal[
    "CANCELLED",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "INTERNAL",
    "UNAVAILABLE",
    "UNAUTHENTICATED",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyBucket(_Strict):
    """A share of calls (`weight`) that take `ms` milliseconds."""

    weight: float = Field(gt=0)
    ms: float = Field(ge=0)


class Failure(_Strict):
    """A share of calls (`rate`) that fail with `code`."""

    code: FailureCode
    rate: float = Field(gt=0, le=1)
    message: str = ""
    reason: str = ""
    retry_after_s: float | None = Field(None, ge=0)


class MockModel(_Strict):
    """One served model and how it behaves."""

    name: str = Field(min_length=1)
    context_window: int = Field(128_000, gt=0)
    latency: list[LatencyBucket] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    stream_chunk_delay_ms: float = Field(0, ge=0)
    #: Plays `scripts` instead of echoing.
    scripted: bool = False
    #: Vector length when this is an embedding model (0: it is not); vectors are hash-seeded per text.
    dimensions: int = Field(0, ge=0, le=65536)
    #: Answers settings.reasoning with a deterministic thought; false refuses it (UNSUPPORTED_FEATURE).
    reasoning: bool = True

    @model_validator(mode="after")
    def _failure_rates_fit(self) -> MockModel:
        if sum(failure.rate for failure in self.failures) > 1:
            raise ValueError("failure rates add up to more than 1")
        return self

    def sample_latency(self, rng: random.Random) -> float:
        """Seconds this call should take."""
        if not self.latency:
            return 0.0
        bucket = rng.choices(self.latency, weights=[b.weight for b in self.latency])[0]
        return bucket.ms / 1000.0

    def sample_failure(self, rng: random.Random) -> Failure | None:
        draw = rng.random()
        for failure in self.failures:
            if draw < failure.rate:
                return failure
            draw -= failure.rate
        return None


class ScriptedToolCall(_Strict):
    """A tool call the scripted model makes."""

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptTurn(_Strict):
    """One assistant turn: text, tool calls, or both.

    `text` may use {tool_results} (results since the last assistant turn,
    joined by "; ") and {question} (the first user message).
    """

    text: str = ""
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> ScriptTurn:
        if not self.text and not self.tool_calls:
            raise ValueError("a turn needs text or tool_calls")
        return self


class Script(_Strict):
    """Turns played in order, chosen when the first user message contains `match`.

    The turn played is the number of assistant messages already in the
    conversation, so a script needs no state and works across instances.
    """

    match: str = ""
    turns: list[ScriptTurn] = Field(min_length=1)


class MockConfig(_Strict):
    """The whole mock configuration."""

    models: list[MockModel] = Field(min_length=1)
    scripts: list[Script] = Field(default_factory=list)
    seed: int | None = None

    @model_validator(mode="after")
    def _unique_models(self) -> MockConfig:
        names = [model.name for model in self.models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names appear twice: {', '.join(duplicates)}")
        return self

"""Circuit breakers per provider instance and per (provider instance, model).

closed ──(N consecutive failures, or failure rate over the window)──▶ open
open ──(open time passed)──▶ half-open: exactly one probe goes through
half-open ──probe succeeds──▶ closed;  probe fails ──▶ open, open time doubled
half-open, probe out past its budget ──▶ the probe is lost: the next call probes

A credential error (UNAUTHENTICATED / PERMISSION_DENIED) opens at once: no
call with that key can succeed until an operator fixes it. Callers' own
mistakes (INVALID_ARGUMENT, NOT_FOUND, content filters) never count; the
engine decides blame (services/router/attempts.py) and calls `release()`
for whatever was not the provider's doing.
Individual adapter pods are not tracked here: the balancer ejects those.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable

import grpc
import structlog

from services.router.config import Breaker

log = structlog.get_logger(__name__)

_FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
_OPEN_AT_ONCE = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
# A probe may stay out this long past its own budget (its deadline) before it is taken for lost.
PROBE_GRACE_SECONDS = 1.0


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One breaker; `allow()` before a call, `record()` after it."""

    def __init__(self, name: str, settings: Breaker, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._settings = settings
        self.state = State.CLOSED
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=settings.window)
        self._open_for = settings.open_s
        self._opened_at = 0.0
        self._probe_out = False
        self._probe_due_back = 0.0

    def allow(self, budget_s: float) -> bool:
        """True when a call with `budget_s` to run may go out now (in half-open: only the one probe)."""
        if self.state is State.CLOSED:
            return True
        now = self._clock()
        if self.state is State.OPEN:
            if now - self._opened_at < self._open_for:
                return False
            self._move(State.HALF_OPEN)
        if self._probe_out and now < self._probe_due_back:
            return False
        if self._probe_out:
            # Its attempt should have ended long ago; whatever kept it, it must not shut the way for good.
            log.warning("circuit breaker probe lost", breaker=self.name)
        self._probe_out = True
        self._probe_due_back = now + budget_s + PROBE_GRACE_SECONDS
        return True

    @property
    def probe_out(self) -> bool:
        """A half-open probe is out and not yet taken for lost."""
        return self._probe_out and self._clock() < self._probe_due_back

    def is_rejecting(self) -> bool:
        """Open and still within its open time; past it, the next allow() lets a probe through."""
        return self.state is State.OPEN and self._clock() - self._opened_at < self._open_for

    def release(self) -> None:
        """The allowed call never happened (e.g. its twin breaker said no)."""
        self._probe_out = False

    def record(self, code: grpc.StatusCode) -> None:
        if code == grpc.StatusCode.OK:
            self._on_success()
        elif code in _FAILURE_CODES:
            self._on_failure(code)
        else:
            self._probe_out = False  # not the provider's fault; a half-open probe may go again

    def _on_success(self) -> None:
        self._consecutive = 0
        self._outcomes.append(True)
        self._probe_out = False
        if self.state is not State.CLOSED:
            self._open_for = self._settings.open_s
            self._outcomes.clear()
            self._move(State.CLOSED)

    def _on_failure(self, code: grpc.StatusCode) -> None:
        self._consecutive += 1
        self._outcomes.append(False)
        self._probe_out = False
        if self.state is State.HALF_OPEN:
            self._open_for = min(self._open_for * 2, self._settings.max_open_s)
            self._open()
            return
        if self.state is State.OPEN:
            return
        failures = self._outcomes.count(False)
        rate_tripped = (
            len(self._outcomes) >= self._settings.min_calls
            and failures / len(self._outcomes) >= self._settings.failure_rate
        )
        if code in _OPEN_AT_ONCE or self._consecutive >= self._settings.consecutive_failures or rate_tripped:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(State.OPEN)

    def _move(self, state: State) -> None:
        if state is self.state:
            return
        log.warning(
            "circuit breaker",
            breaker=self.name,
            state=state.value,
            previous=self.state.value,
            open_for_s=self._open_for if state is State.OPEN else None,
        )
        self.state = state


class BreakerRegistry:
    """Breakers created on first use: one per provider instance and one per (provider, model)."""

    def __init__(self, model_settings: Breaker, provider_settings: Breaker) -> None:
        self._model_settings = model_settings
        self._provider_settings = provider_settings
        self._breakers: dict[str, CircuitBreaker] = {}

    def _get(self, name: str, settings: Breaker) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = CircuitBreaker(name, settings)
        return breaker

    def for_provider(self, provider: str) -> CircuitBreaker:
        return self._get(f"provider {provider}", self._provider_settings)

    def for_model(self, provider: str, model: str) -> CircuitBreaker:
        return self._get(f"{provider}/{model}", self._model_settings)

    def states(self) -> dict[str, str]:
        return {name: breaker.state.value for name, breaker in self._breakers.items()}

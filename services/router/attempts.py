"""One attempt's life, the same for unary, streaming, hedged and fan-out paths.

Rule: what an attempt's state may become, and how its outcome is judged,
lives in this file and nowhere else. The machine knows nothing of I/O: the
race (`race.py`) feeds it events and applies the effects of the outcome it
settles on (breakers, balancer, attempt list, span) exactly once.

    ADMITTED ──START──▶ RUNNING ──FIRST_CHUNK──▶ STREAMING
    RUNNING / STREAMING ──SUCCEED──▶ SUCCEEDED
    RUNNING / STREAMING ──FAIL──▶ FAILED
    ADMITTED / RUNNING / STREAMING ──CANCEL──▶ CANCELLED
    SUCCEEDED / FAILED / CANCELLED ──RELEASE──▶ RELEASED

ADMITTED: the breakers let it through and the balancer gave it an instance.
An attempt reaches RELEASED however it ends, cancellation included; an event
the table does not allow raises at once instead of being ignored.

Blame decides what the breakers see: only PROVIDER outcomes count; the
caller's deadline, cancel or bad input, the mesh's own misconfiguration and
a lost race are released without a mark.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import grpc

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.auth import REASON_NOT_ROUTER
from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_UNSUPPORTED_FEATURE,
    MeshError,
)
from services.router.config import Candidate


class State(enum.Enum):
    ADMITTED = "admitted"
    RUNNING = "running"
    STREAMING = "streaming"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASED = "released"


class Event(enum.Enum):
    START = "start"
    FIRST_CHUNK = "first_chunk"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    RELEASE = "release"


_ENDINGS = {Event.SUCCEED: State.SUCCEEDED, Event.FAIL: State.FAILED, Event.CANCEL: State.CANCELLED}
TRANSITIONS: dict[State, dict[Event, State]] = {
    State.ADMITTED: {Event.START: State.RUNNING, Event.CANCEL: State.CANCELLED},
    State.RUNNING: {Event.FIRST_CHUNK: State.STREAMING, **_ENDINGS},
    State.STREAMING: dict(_ENDINGS),
    State.SUCCEEDED: {Event.RELEASE: State.RELEASED},
    State.FAILED: {Event.RELEASE: State.RELEASED},
    State.CANCELLED: {Event.RELEASE: State.RELEASED},
    State.RELEASED: {},
}
#: States in which the outcome is known and the attempt still holds what it took.
SETTLED = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


class IllegalTransitionError(RuntimeError):
    """An event the transition table does not allow in the current state: a bug in the caller."""


class AttemptMachine:
    """The state of one attempt; `process(event)` is the only way it changes."""

    __slots__ = ("state", "streamed")

    def __init__(self) -> None:
        self.state = State.ADMITTED
        self.streamed = False  # it passed through STREAMING: part of its answer reached the caller

    def process(self, event: Event) -> State:
        following = TRANSITIONS[self.state].get(event)
        if following is None:
            raise IllegalTransitionError(f"{event.value} is not allowed in state {self.state.value}")
        self.state = following
        self.streamed = self.streamed or following is State.STREAMING
        return following

    @property
    def settled(self) -> bool:
        """The outcome is known (or the attempt is already released)."""
        return self.state in SETTLED or self.state is State.RELEASED

    @property
    def sent_output(self) -> bool:
        """Part of the answer reached the caller: no silent retry or fallback any more."""
        return self.state is State.STREAMING


class Blame(enum.Enum):
    """Who caused an outcome, which decides what the breakers see."""

    NONE = "none"  # a success, or a race lost to another attempt
    PROVIDER = "provider"  # counts on the breakers
    INSTANCE = "instance"  # one adapter pod unwell: the balancer's ejection, not the breakers
    CALLER = "caller"  # the caller's deadline, cancel or bad input
    MESH = "mesh"  # the mesh's own settings (an adapter refused the router)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one attempt ended, as the race records it."""

    event: Event
    outcome: int  # rpb.AttemptOutcome
    code: grpc.StatusCode
    blame: Blame
    error: MeshError | None = None
    message: str = ""


WON = Verdict(Event.SUCCEED, rpb.ATTEMPT_OUTCOME_SUCCEEDED, grpc.StatusCode.OK, Blame.NONE)
LOST_RACE = Verdict(
    Event.CANCEL,
    rpb.ATTEMPT_OUTCOME_CANCELLED,
    grpc.StatusCode.CANCELLED,
    Blame.NONE,
    message="cancelled: another attempt answered first",
)
CALLER_GONE = Verdict(
    Event.CANCEL,
    rpb.ATTEMPT_OUTCOME_CANCELLED,
    grpc.StatusCode.CANCELLED,
    Blame.CALLER,
    message="cancelled: the caller went away",
)
OUT_OF_TIME = Verdict(
    Event.CANCEL,
    rpb.ATTEMPT_OUTCOME_CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    Blame.CALLER,
    message="cancelled: the caller's deadline is reached",
)

# Codes that, from the provider, say the provider is in trouble (breakers count them).
_PROVIDER_FAULTS = frozenset(
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


def judge_error(error: MeshError, *, caller_time_spent: bool, pool_size: int) -> Verdict:
    """The verdict on a failed attempt.

    `caller_time_spent`: the attempt's budget was the caller's time left, not
    its own timeout, and that time is (about) used up, so a
    DEADLINE_EXCEEDED is the caller's impatience.
    A transport failure (no ErrorInfo: no adapter answered) on a pool of
    several instances is that instance's trouble, for the balancer to eject;
    counting it on the model's or provider's breaker would shut out the
    healthy instances too.
    """
    return Verdict(
        Event.FAIL, rpb.ATTEMPT_OUTCOME_FAILED, error.code, _blame(error, caller_time_spent, pool_size), error
    )


def _blame(error: MeshError, caller_time_spent: bool, pool_size: int) -> Blame:
    if error.reason == REASON_NOT_ROUTER:
        return Blame.MESH
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and caller_time_spent:
        return Blame.CALLER
    if error.code == grpc.StatusCode.UNAVAILABLE and not error.reason and pool_size > 1:
        return Blame.INSTANCE
    return Blame.PROVIDER if error.code in _PROVIDER_FAULTS else Blame.CALLER


def judge_exception(exception: BaseException, *, caller_time_spent: bool, pool_size: int) -> Verdict:
    """The verdict for whatever ended an attempt's await: an RPC error, a MeshError, or a cancellation."""
    if isinstance(exception, grpc.aio.AioRpcError):
        return judge_error(
            MeshError.from_rpc_error(exception), caller_time_spent=caller_time_spent, pool_size=pool_size
        )
    if isinstance(exception, MeshError):
        return judge_error(exception, caller_time_spent=caller_time_spent, pool_size=pool_size)
    if isinstance(exception, (asyncio.CancelledError, GeneratorExit)):
        return CALLER_GONE
    # A bug of ours (or an unexpected library error): not the provider's fault, and the caller sees INTERNAL.
    return Verdict(
        Event.CANCEL,
        rpb.ATTEMPT_OUTCOME_CANCELLED,
        grpc.StatusCode.INTERNAL,
        Blame.CALLER,
        message=f"router error ({type(exception).__name__})",
    )


def judge_answer(finish_reason: int, *, fallback_on_content_filter: bool) -> MeshError | None:
    """An answer the router must treat as a failed attempt, as an error; None to accept it.

    The one place where an answer (unary, or a stream's final before any
    delta) is turned into a failure: a 200 that ends in content filter, when
    the request's policy asks to fall back on content filters, fails as
    FAILED_PRECONDITION CONTENT_FILTERED, like a refused prompt (a model's
    refusal, FINISH_REASON_REFUSAL, likewise: it was a content filter before
    the contract told them apart, and another model may answer). The caller's
    policy, not the provider's fault: the breakers do not count it.
    """
    if finish_reason in _FILTERED and fallback_on_content_filter:
        return MeshError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "the answer ended in the provider's content filter"
            if finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER
            else "the model refused to answer",
            reason=REASON_CONTENT_FILTERED,
        )
    return None


#: Finish reasons `fallback_on_content_filter` falls back on.
_FILTERED = frozenset({chat_pb2.FINISH_REASON_CONTENT_FILTER, chat_pb2.FINISH_REASON_REFUSAL})

# Classes that let the router try another candidate (and, bar CANCELLED, retry).
MOVE_ON_CODES = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate limited or overloaded",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "attempt timed out",
    grpc.StatusCode.CANCELLED: "cancelled by the adapter",
}
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def move_on_reason(
    error: MeshError, failed: Candidate, candidate: Candidate, *, fallback_on_content_filter: bool
) -> str | None:
    """Why the router may try `candidate` after `failed` raised `error`; None when it may not."""
    if error.code in MOVE_ON_CODES:
        return MOVE_ON_CODES[error.code]
    if error.reason == REASON_NOT_ROUTER:
        return "the adapter refused the router (mesh misconfiguration)"
    if error.reason == REASON_CONTEXT_WINDOW_EXCEEDED:
        if candidate.context_window > failed.context_window:
            return "context window exceeded; trying a larger window"
        return None
    if error.reason == REASON_CONTENT_FILTERED and fallback_on_content_filter:
        return "content filtered; policy allows fallback"
    if error.reason == REASON_UNSUPPORTED_FEATURE:
        return f"{failed.provider} cannot serve {error.field or 'a requested feature'}"
    if error.code in AUTH_CODES and candidate.provider != failed.provider:
        return f"{failed.provider} rejected its credentials"
    return None


def retryable(error: MeshError) -> bool:
    """Whether the same candidate may be tried again for this error."""
    return error.code in MOVE_ON_CODES and error.code != grpc.StatusCode.CANCELLED

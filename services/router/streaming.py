"""The streaming path: attempts one after another, relayed chunk by chunk.

Before the first delta the stream falls back (and retries) freely; after it
the stream fails, or continues on the next candidate when the request allows
it. Each attempt runs inside `Race.attempt()`, so a reader that closes the
stream (GeneratorExit), a cancelled caller or an upstream error all settle
and release it. Streams are timed by time to first token and by the idle gap
between chunks, both inside the caller's deadline; no per-attempt timeout
caps a whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from opentelemetry import trace

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import REASON_STREAM_TRUNCATED, REASON_UPSTREAM_TIMEOUT, MeshError
from services.router.attempts import WON, Event, judge_answer
from services.router.race import Flight, Race
from services.router.race_errors import caller_error

if TYPE_CHECKING:
    from services.router.engine import Plan, RouterEngine, RouterRequest


class StreamRun:
    """One streaming request over its candidates."""

    def __init__(self, engine: RouterEngine, request: rpb.StreamChatRequest, plan: Plan, deadline: float) -> None:
        self.engine = engine
        self.race = Race(engine, plan, deadline, streaming=True)
        self._request = request
        self._current: RouterRequest = request
        self._partial: list[str] = []
        self._usage = chat_pb2.Usage()
        self._continued = False

    async def events(self) -> AsyncGenerator[rpb.StreamChatResponse, None]:
        with self.engine.margin.request():
            async for event in self._attempts():
                yield event

    async def _attempts(self) -> AsyncGenerator[rpb.StreamChatResponse, None]:
        while (flight := await self._next_flight()) is not None:
            with self.race.attempt(flight):
                async with contextlib.aclosing(self._relay(flight)) as relayed:
                    async for event in relayed:
                        yield event
            verdict = flight.verdict
            assert verdict is not None  # the attempt context always settles
            if verdict.event is Event.SUCCEED:
                return
            if not flight.machine.streamed:
                continue  # nothing reached the caller yet: fall back freely
            error = verdict.error or MeshError(verdict.code, verdict.message)
            yield self._continue_or_fail(flight, error)
        raise self.race.error()

    async def _next_flight(self) -> Flight | None:
        """The next admitted attempt, after waiting out a retry's backoff; None when none may start."""
        race = self.race
        while (flight := race.admit_next()) is None:
            due = race.next_due_at()
            if due is None or due <= race.now():
                return None
            wake_at = min(due, race.stop_at)
            await asyncio.sleep(wake_at - race.now())
            self.engine.margin.observe_lateness(race.now() - wake_at)
        return flight

    def _continue_or_fail(self, flight: Flight, error: MeshError) -> rpb.StreamChatResponse:
        """After partial output: a continuation notice for the next candidate, or the stream's error."""
        successor = self.race.peek_next()
        if not self.race.plan.allow_continuation or successor is None:
            # Part of the answer is already with the caller: a silent switch
            # would splice two answers, so the stream fails instead.
            message = f"stream failed after partial output from {flight.candidate.name}: {error.message}"
            raise caller_error(error, message)
        self._continued = True
        self._current = _with_assistant_prefix(self._request, "".join(self._partial))
        return rpb.StreamChatResponse(
            continuation=rpb.StreamContinuation(
                model=successor.name, provider=successor.provider, reason=f"{error.code.name}: {error.message}"
            )
        )

    async def _relay(self, flight: Flight) -> AsyncGenerator[rpb.StreamChatResponse, None]:
        """The attempt's deltas and, on its final message, the stream's final; errors end the attempt."""
        call = self._open(flight)
        try:
            while True:
                event = await self._read(call, flight)
                if event.HasField("delta"):
                    if not flight.machine.streamed:
                        self.race.first_chunk(flight)
                    self._partial.append(event.delta.text)
                    yield rpb.StreamChatResponse(delta=event.delta)
                    continue
                refusal = judge_answer(event.final.finish_reason)
                if refusal is not None:
                    raise refusal
                self.race.settle(flight, WON)
                yield rpb.StreamChatResponse(final=self._final(flight, event.final))
                return
        finally:
            call.cancel()

    def _open(self, flight: Flight) -> Any:
        from services.router.engine import provider_request

        # The attempt's span is current while the call starts: the adapter's span becomes its child.
        with trace.use_span(flight.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            return flight.instance.stub.StreamChat(
                provider_request(self._current, flight.candidate, ppb.ProviderServiceStreamChatRequest),
                timeout=flight.budget,
            )

    async def _read(self, call: Any, flight: Flight) -> ppb.ProviderServiceStreamChatResponse:
        """The next event, within the first-token or idle timeout and the caller's deadline."""
        first = not flight.machine.streamed
        limit = self.race.plan.first_token_timeout_s if first else self.race.plan.stream_idle_timeout_s
        left = self.race.stop_at - self.race.now()
        flight.capped_by_caller = left <= limit
        try:
            async with asyncio.timeout(min(limit, left)):
                event = await call.read()
        except TimeoutError:
            raise _stream_timeout(flight, limit, first=first) from None
        if event is grpc.aio.EOF:
            raise MeshError(
                grpc.StatusCode.UNAVAILABLE,
                f"{flight.candidate.provider} stream ended without a final message",
                reason=REASON_STREAM_TRUNCATED,
            )
        return event  # type: ignore[no-any-return]

    def _final(self, flight: Flight, final: ppb.ProviderStreamFinal) -> rpb.StreamChatFinal:
        candidate, usage = flight.candidate, self._usage
        self.engine.headroom.record(candidate.provider, final.headroom)
        _add_usage(usage, final.usage)
        return rpb.StreamChatFinal(
            finish_reason=final.finish_reason,
            usage=usage,
            model=candidate.name,
            provider=candidate.provider,
            response_model=final.response_model,
            attempts=self.race.attempts,
            estimated_cost_usd=candidate.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens),
            continued=self._continued,
        )


def _stream_timeout(flight: Flight, limit: float, *, first: bool) -> MeshError:
    if flight.capped_by_caller:
        what = "the deadline was reached while waiting for " + ("the first token" if first else "the next chunk")
    else:
        what = f"no first token within {limit:g}s" if first else f"no chunk for {limit:g}s"
    return MeshError(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"{flight.candidate.provider}: {what}", reason=REASON_UPSTREAM_TIMEOUT
    )


def _add_usage(total: chat_pb2.Usage, more: chat_pb2.Usage) -> None:
    total.input_tokens += more.input_tokens
    total.output_tokens += more.output_tokens
    total.cached_input_tokens += more.cached_input_tokens
    total.reasoning_tokens += more.reasoning_tokens


def _with_assistant_prefix(request: RouterRequest, prefix: str) -> RouterRequest:
    """The request plus the partial answer as an assistant prefix, marked as such."""
    continued = type(request)()
    continued.CopyFrom(request)
    message = continued.messages.add(role=chat_pb2.ROLE_ASSISTANT)
    message.content.add(text=prefix)
    json_format.ParseDict({"llmmesh": {"continuation_prefix": True}}, message.extensions)
    return continued

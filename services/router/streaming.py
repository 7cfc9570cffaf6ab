"""The streaming path: attempts one after another, relayed chunk by chunk.

Before the first delta the stream falls back (and retries) freely, a
content-filtered or refused final included when the policy says so (refusal
deltas before any other output are held until the final for that); after it the
stream fails, or, when the request allows it, continues on the next
candidate that can continue an assistant prefix (routing file:
`continues_prefix`), never after tool-call deltas. Each attempt runs inside `Race.attempt()`, so a reader that closes the
stream (GeneratorExit), a cancelled caller or an upstream error all settle
and release it. Streams are timed by time to first token and by the idle gap
between chunks, both inside the caller's deadline; no per-attempt timeout
caps a whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import REASON_STREAM_TRUNCATED, REASON_UPSTREAM_TIMEOUT, MeshError
from services.router.answers import answer_fields
from services.router.attempts import WON, Event, judge_answer
from services.router.config import Candidate
from services.router.race import Flight, Race
from services.router.race_errors import caller_error

if TYPE_CHECKING:
    from services.router.engine import Plan, RouterEngine

_CANNOT_CONTINUE = "cannot continue an assistant prefix (its provider is not marked continues_prefix)"


class StreamRun:
    """One streaming request over its candidates."""

    def __init__(self, engine: RouterEngine, request: rpb.StreamChatRequest, plan: Plan, deadline: float) -> None:
        self.engine = engine
        self.race = Race(engine, plan, deadline, streaming=True)
        self._request = request
        self._prefix = ""  # the text the caller has: what a continuation continues
        self._sent = False  # some delta reached the caller
        self._sent_tool_calls = False
        # Summed over every attempt that reported usage, each at its own model's price.
        self._usage = chat_pb2.Usage()
        self._cost = 0.0
        self._continued = False
        # A filtered or refused answer kept in case no candidate does better, with its held refusal deltas.
        self._filtered: tuple[Candidate, ppb.ProviderStreamFinal, list[chat_pb2.ChatDelta]] | None = None

    async def events(self) -> AsyncGenerator[rpb.StreamChatResponse, None]:
        with self.engine.margin.request():
            async for event in self._attempts():
                yield event

    async def _attempts(self) -> AsyncGenerator[rpb.StreamChatResponse, None]:
        flight = await self._next_flight()
        while flight is not None:
            with self.race.attempt(flight):
                async with contextlib.aclosing(self._relay(flight)) as relayed:
                    async for event in relayed:
                        yield event
            verdict = flight.verdict
            assert verdict is not None  # the attempt context always settles
            if verdict.event is Event.SUCCEED:
                return
            if not self._sent:
                flight = await self._next_flight()  # nothing reached the caller yet: fall back freely
                continue
            error = verdict.error or MeshError(verdict.code, verdict.message)
            flight = await self._successor(flight, error)
            yield self._notice(flight, error)
        if self._filtered is not None:
            # No candidate did better than the content filter: that answer is still the answer.
            candidate, final, held = self._filtered
            for delta in held:
                yield rpb.StreamChatResponse(delta=delta)
            yield rpb.StreamChatResponse(final=self._final(candidate, final))
            return
        raise self.race.error()

    async def _next_flight(self) -> Flight | None:
        """The next admitted attempt, after waiting out a retry's backoff; None when none may start."""
        race = self.race
        while True:
            looked_at = race.now()
            if (flight := race.admit_next()) is not None:
                return flight
            # Not due when admit_next looked (a backoff under a millisecond may be due by now): wait, look again.
            due = race.next_due_at()
            if due is None or due <= looked_at:
                return None
            wake_at = min(due, race.stop_at)
            await asyncio.sleep(max(wake_at - race.now(), 0.0))
            self.engine.margin.observe_lateness(race.now() - wake_at)

    async def _successor(self, failed: Flight, error: MeshError) -> Flight:
        """After partial output: the admitted attempt that continues the answer, or the stream's error.

        Only candidates that can continue an assistant prefix qualify, and the
        successor is admitted before the notice names it. Without one (or when
        tool-call deltas were sent: they are never spliced) the stream fails,
        since a silent switch would splice two answers.
        """
        message = f"stream failed after partial output from {failed.candidate.name}: {error.message}"
        if not self.race.plan.allow_continuation:
            raise caller_error(error, message)
        if self._sent_tool_calls:
            raise caller_error(error, f"{message} (not continued: tool-call deltas were sent)")
        self.race.keep_only(lambda candidate: candidate.continues_prefix, _CANNOT_CONTINUE)
        successor = await self._next_flight()
        if successor is None:
            raise caller_error(error, f"{message} (no candidate able to continue it is left)")
        return successor

    def _notice(self, successor: Flight, error: MeshError) -> rpb.StreamChatResponse:
        self._continued = True
        candidate = successor.candidate
        return rpb.StreamChatResponse(
            continuation=rpb.StreamContinuation(
                model=candidate.name, provider=candidate.provider, reason=f"{error.code.name}: {error.message}"
            )
        )

    async def _relay(self, flight: Flight) -> AsyncGenerator[rpb.StreamChatResponse, None]:
        """The attempt's deltas and, on its final message, the stream's final; errors end the attempt."""
        call = self._open(flight)
        # Refusal deltas before any other output wait for the final: a refused answer may still fall back.
        held: list[chat_pb2.ChatDelta] = []
        # A continuation's citations span its own text: moved past the prefix already sent.
        offset = len(self._prefix)
        try:
            while True:
                event = await self._read(call, flight)
                if event.HasField("delta"):
                    if not flight.machine.streamed:
                        self.race.first_chunk(flight)
                    if offset and event.delta.citations:
                        _shift_citations(event.delta.citations, offset)
                    if not self._sent and _refusal_only(event.delta):
                        held.append(event.delta)
                        continue
                    for delta in [*held, event.delta]:
                        self._record_sent(delta)
                        yield rpb.StreamChatResponse(delta=delta)
                    held.clear()
                    continue
                self._count(flight.candidate, event.final)
                if not self._sent:  # a filtered answer falls back only before the first delta
                    self._judge_final(flight.candidate, event.final, held)
                self.race.settle(flight, WON)
                for delta in held:
                    self._record_sent(delta)
                    yield rpb.StreamChatResponse(delta=delta)
                yield rpb.StreamChatResponse(final=self._final(flight.candidate, event.final))
                return
        finally:
            call.cancel()

    def _record_sent(self, delta: chat_pb2.ChatDelta) -> None:
        self._sent = True
        self._prefix += delta.text
        self._sent_tool_calls = self._sent_tool_calls or bool(delta.tool_calls)

    def _count(self, candidate: Candidate, final: ppb.ProviderStreamFinal) -> None:
        self.engine.headroom.record(candidate.provider, final.headroom)
        _add_usage(self._usage, final.usage)
        usage = final.usage
        self._cost += candidate.usage_cost(usage)

    def _judge_final(
        self, candidate: Candidate, final: ppb.ProviderStreamFinal, held: list[chat_pb2.ChatDelta]
    ) -> None:
        policy = self.race.plan.fallback_on_content_filter
        refusal = judge_answer(final.finish_reason, fallback_on_content_filter=policy)
        if refusal is not None:
            self._filtered = self._filtered or (candidate, final, held)
            raise refusal

    def _open(self, flight: Flight) -> Any:
        from services.router.engine import capability_metadata, provider_request

        # The attempt's span is current while the call starts: the adapter's span becomes its child.
        with trace.use_span(flight.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            return flight.instance.stub.StreamChat(
                provider_request(
                    self._request,
                    flight.candidate,
                    ppb.ProviderServiceStreamChatRequest,
                    assistant_prefix=self._prefix,
                ),
                timeout=flight.budget,
                metadata=capability_metadata(flight.candidate),
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

    def _final(self, candidate: Candidate, final: ppb.ProviderStreamFinal) -> rpb.StreamChatFinal:
        fields = answer_fields(candidate, final, self.race.attempts, usage=self._usage, cost_usd=self._cost)
        return rpb.StreamChatFinal(**fields, continued=self._continued)


def _stream_timeout(flight: Flight, limit: float, *, first: bool) -> MeshError:
    if flight.capped_by_caller:
        what = "the deadline was reached while waiting for " + ("the first token" if first else "the next chunk")
    else:
        what = f"no first token within {limit:g}s" if first else f"no chunk for {limit:g}s"
    return MeshError(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"{flight.candidate.provider}: {what}", reason=REASON_UPSTREAM_TIMEOUT
    )


def _shift_citations(citations: Iterable[chat_pb2.Citation], offset: int) -> None:
    for citation in citations:
        if citation.HasField("start_index"):
            citation.start_index += offset
        if citation.HasField("end_index"):
            citation.end_index += offset


def _refusal_only(delta: chat_pb2.ChatDelta) -> bool:
    return bool(delta.refusal) and not (delta.text or delta.tool_calls or delta.HasField("reasoning"))


def _add_usage(total: chat_pb2.Usage, more: chat_pb2.Usage) -> None:
    total.input_tokens += more.input_tokens
    total.output_tokens += more.output_tokens
    total.cached_input_tokens += more.cached_input_tokens
    total.reasoning_tokens += more.reasoning_tokens
    total.cache_write_input_tokens += more.cache_write_input_tokens

"""Deltas that are already read go to the router as one gRPC message.

Every gRPC message costs both hops a socket write, an HTTP/2 frame and an
event-loop wake-up, whatever it carries. An upstream often sends several
SSE events in one TCP read (a fast model, a busy adapter that read late), and
the adapter decodes them all at once. A pump task reads the adapter's events
into a queue while the previous message is being written. The writer takes
everything waiting and merges neighbouring deltas of the same kind into one.

No delta is held back: the writer sends as soon as anything is waiting. When
the upstream sends one chunk per read (a model's pace), each message still
carries one chunk. The queue is bounded, so a slow reader still holds back
the upstream read, as it would without the pump.

Deltas merge only when the result says the same as the pieces in order:
- text with text: text and logprobs joined (a delta with citations stays
  alone);
- a refusal with a refusal;
- reasoning with reasoning of the same part, before its signature;
- tool-call fragments with tool-call fragments: a call's arguments joined,
  a new call's fragment appended.
A final message is never merged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator
from typing import TypeAlias

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb

Event: TypeAlias = pb.ProviderServiceStreamChatResponse

# Events read ahead of the writer before the pump stops reading the upstream.
MAX_WAITING = 256

# Citations are left in their own delta: they are rare, and callers (the door's annotation events) rely on
# one arriving after the text it cites.
_TEXT_FIELDS = frozenset({"text", "logprobs"})


async def coalesced(events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    """`events`, with the deltas waiting at each write merged; errors surface after what came before them."""
    pump = _Pump(events)
    try:
        while True:
            batch = await pump.take()
            if not batch:
                pump.raise_if_failed()
                return
            for event in merge(batch):
                yield event
    finally:
        await pump.close()


class _Pump:
    """Reads the adapter's events on its own task; `take` hands over all that wait."""

    def __init__(self, events: AsyncGenerator[Event, None]) -> None:
        self._events = events
        self._waiting: collections.deque[Event] = collections.deque()
        self._failure: BaseException | None = None
        self._ended = False
        self._wake_reader: asyncio.Future[None] | None = None
        self._wake_pump: asyncio.Future[None] | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with contextlib.aclosing(self._events) as events:
                async for event in events:
                    self._waiting.append(event)
                    self._wake(self._wake_reader)
                    if len(self._waiting) >= MAX_WAITING:
                        self._wake_pump = asyncio.get_running_loop().create_future()
                        await self._wake_pump
        except Exception as error:  # noqa: BLE001 - handed to the reader, raised there
            self._failure = error
        finally:
            self._ended = True
            self._wake(self._wake_reader)

    async def take(self) -> list[Event]:
        """Everything waiting, once something is; empty when the adapter's stream has ended."""
        while not self._waiting and not self._ended:
            self._wake_reader = asyncio.get_running_loop().create_future()
            await self._wake_reader
        batch = list(self._waiting)
        self._waiting.clear()
        self._wake(self._wake_pump)
        return batch

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def close(self) -> None:
        """Stops the read now; a cancelled call closes the adapter's stream (and its HTTP request) before returning."""
        if not self._task.done():
            self._task.cancel()
        await asyncio.wait([self._task])

    @staticmethod
    def _wake(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)


def merge(batch: list[Event]) -> list[Event]:
    """The batch with each run of mergeable deltas as one delta, in order; the adapter's messages are not changed."""
    merged: list[Event] = []
    last_kind: str | None = None  # of merged[-1], when it is a delta that may take more
    owned = False  # merged[-1] is our copy, not the adapter's message
    for event in batch:
        kind = _kind(event.delta) if event.HasField("delta") else None
        if kind is not None and kind == last_kind and _fits(merged[-1].delta, event.delta, kind):
            if not owned:
                merged[-1], owned = _copy(merged[-1]), True
            _append(merged[-1].delta, event.delta, kind)
            continue
        merged.append(event)
        last_kind, owned = kind, False
    return merged


def _copy(event: Event) -> Event:
    copy = Event()
    copy.CopyFrom(event)
    return copy


def _fits(into: chat_pb2.ChatDelta, delta: chat_pb2.ChatDelta, kind: str) -> bool:
    """Whether `delta` may join `into`, both of `kind`: reasoning only within one part, before its signature."""
    if kind != "reasoning":
        return True
    last, piece = into.reasoning, delta.reasoning
    same_part = last.index == piece.index and last.provider == piece.provider
    return same_part and not (last.signature or last.redacted_data or piece.redacted_data)


def _append(into: chat_pb2.ChatDelta, delta: chat_pb2.ChatDelta, kind: str) -> None:
    if kind == "text":
        into.text += delta.text
        into.logprobs.extend(delta.logprobs)
    elif kind == "refusal":
        into.refusal += delta.refusal
    elif kind == "reasoning":
        into.reasoning.text += delta.reasoning.text
        into.reasoning.signature = delta.reasoning.signature
    else:
        _append_tool_calls(into.tool_calls, delta.tool_calls)


def _kind(delta: chat_pb2.ChatDelta) -> str | None:
    fields = {field.name for field, _ in delta.ListFields()}
    if fields <= _TEXT_FIELDS:
        return "text"
    if fields == {"refusal"}:
        return "refusal"
    if fields == {"reasoning"}:
        return "reasoning"
    if fields == {"tool_calls"}:
        return "tool_calls"
    return None


def _append_tool_calls(
    into: RepeatedCompositeFieldContainer[chat_pb2.ToolCallDelta],
    pieces: RepeatedCompositeFieldContainer[chat_pb2.ToolCallDelta],
) -> None:
    for piece in pieces:
        last = into[-1] if into else None
        if last is not None and _continues(last, piece):
            last.arguments_json_delta += piece.arguments_json_delta
        else:
            into.add().CopyFrom(piece)


def _continues(call: chat_pb2.ToolCallDelta, piece: chat_pb2.ToolCallDelta) -> bool:
    """`piece` only adds arguments to `call`: same index, and neither carries what starts or ends a call."""
    starts = piece.id or piece.name or piece.HasField("extensions")
    return call.index == piece.index and not call.HasField("extensions") and not starts

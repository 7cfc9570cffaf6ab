"""A Chat Completions stream read straight from its SSE bytes: one orjson decode per event.

The SDK's `AsyncStream` decodes every line to `str`, builds a
`ServerSentEvent` per event and parses it with the stdlib; this reader keeps
its rules and its exceptions, so the adapter's error mapping sees what it saw
before (docs/sdk-notes.md):

- events are split on blank lines (LF, CRLF or CR); `data:` lines join with
  "\\n"; comments and unknown fields are skipped; a block holding only
  `event:`, `id:` or `retry:` is an event with empty data, which fails to
  decode as JSON, as it does in the SDK;
- `[DONE]` ends the stream; on HTTP/1.1 the rest of the body is drained for
  at most 0.1 s first, so the connection goes back to the pool;
- an event whose JSON has a truthy `error` raises `openai.APIError` with
  that body; a read timeout raises `openai.APITimeoutError` and any other
  transport failure `openai.APIConnectionError`, from the raw error.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import anyio
import anyio.lowlevel
import httpx2
import openai
import orjson

_DONE = b"[DONE]"
_DRAIN_SECONDS = 0.1
_LINE_BREAKS = re.compile(rb"\r\n|\r|\n")
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream)
_DRAIN_ERRORS: tuple[type[Exception], ...] = (*_CONNECTION_ERRORS, httpx2.StreamConsumed)


async def chunks(response: httpx2.Response) -> AsyncIterator[Any]:
    """The decoded JSON of each event until `[DONE]` or the end of the body."""
    splitter = _Blocks()
    try:
        async for raw in response.aiter_bytes():
            for payload in splitter.feed(raw):
                if payload.startswith(_DONE):
                    await _drain(response)
                    return
                yield _decoded(payload, response)
        for payload in splitter.finish():
            if payload.startswith(_DONE):
                return
            yield _decoded(payload, response)
    except httpx2.TimeoutException as error:
        raise openai.APITimeoutError(request=response.request) from error
    except _CONNECTION_ERRORS as error:
        raise openai.APIConnectionError(request=response.request) from error


def _decoded(payload: bytes, response: httpx2.Response) -> Any:
    data = orjson.loads(payload)
    if isinstance(data, dict) and data.get("error"):
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else None
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        raise openai.APIError(message=message, request=response.request, body=error)
    return data


async def _drain(response: httpx2.Response) -> None:
    """What the SDK does after `[DONE]`: HTTP/2 closes the stream, HTTP/1.1 reads the rest (briefly) for reuse."""
    if response.http_version != "HTTP/1.1" or response.is_closed:
        return
    try:
        with anyio.move_on_after(_DRAIN_SECONDS):
            # The transport stream itself, as the SDK drains it: `aiter_raw()` would raise StreamConsumed
            # (aiter_bytes already started it), leaving the body unread and the connection unusable.
            async for _ in cast(AsyncIterator[bytes], response.stream):
                await anyio.lowlevel.checkpoint()
    except _DRAIN_ERRORS:
        pass  # the answer is complete: a failure while discarding the rest is not a failed request


class _Blocks:
    """Bytes in, the data payload of each complete event out (the SDK's SSEDecoder, on bytes)."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []
        self._event = self._retry = False
        #: SSE keeps the last event id across events: while one is set, every blank line ends an event.
        self._last_id = False

    def feed(self, raw: bytes) -> Iterator[bytes]:
        text = self._pending + raw
        # A CR at the very end may be the first half of a CRLF: it waits for the next bytes.
        cut = len(text) - 1 if text.endswith(b"\r") else len(text)
        lines = _LINE_BREAKS.split(text[:cut])
        self._pending = lines.pop() + text[cut:]
        return self._events(lines)

    def finish(self) -> Iterator[bytes]:
        """The body ended: a last line ended by a CR still counts; an event without its blank line never comes."""
        tail, self._pending = self._pending, b""
        return self._events([tail[:-1]]) if tail.endswith(b"\r") else iter(())

    def _events(self, lines: list[bytes]) -> Iterator[bytes]:
        for line in lines:
            if not line:
                if self._data or self._event or self._retry or self._last_id:
                    yield b"\n".join(self._data)
                self._data, self._event, self._retry = [], False, False
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = bool(value)
            elif name == b"id" and b"\0" not in value:
                self._last_id = bool(value)
            elif name == b"retry" and value.isdigit():
                self._retry = True
            # Anything else is a comment (":...") or a field SSE ignores.

"""The Messages API's answers as decoded JSON, without the SDK's pydantic models.

The adapter posts the body it already holds as plain data through the SDK's
low-level `post` (the SDK still adds auth, `anthropic-version`, its
`x-stainless-*` headers, the timeout and its status errors) and reads the
answer back as JSON: one orjson decode instead of the SDK's typed transform
and a model per answer or per streamed event.

`Fields` gives the decoded JSON the attribute access the mapping reads the
SDK's models with (`event.delta.text`, `message.usage.output_tokens`), so
streaming.py and responses.py take either. A key the answer lacks reads as
None, as an optional field of the SDK's models does; a tool call's `input`
stays a dict (a `Fields` is one).

`events` keeps the rules of the SDK's `AsyncStream` (docs/sdk-notes.md): the
SSE events come from the SDK's own decoder (`AsyncStream.raw_events`),
`ping` and unnamed events are skipped, an `error` event raises the SDK's
status error with its body, an event without data is skipped, a body that
is not JSON raises ValueError.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import orjson

MESSAGES_PATH = "/v1/messages"
_LONG_DIGITS = re.compile(rb"\d{19}")


class Fields(dict[str, Any]):
    """A decoded JSON object read by attribute; nested objects come back as `Fields` too.

    Attribute reads never shadow dict methods (`items`, `get`, ...): no field the adapter reads has such a name.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return wrap(self.get(name))

    def model_dump(self, *, exclude_none: bool = False) -> dict[str, Any]:
        """The object as plain data, as the SDK's `model_dump` gives it."""
        return _plain(self, exclude_none=exclude_none)


def wrap(value: Any) -> Any:
    """Objects as `Fields`, lists of them likewise; anything else as it is."""
    if type(value) is dict:
        return Fields(value)
    if type(value) is list:
        return [Fields(item) if type(item) is dict else item for item in value]
    return value


def _plain(value: Any, *, exclude_none: bool) -> Any:
    if isinstance(value, dict):
        return {
            key: _plain(item, exclude_none=exclude_none)
            for key, item in value.items()
            if not (exclude_none and item is None)
        }
    if isinstance(value, list):
        return [_plain(item, exclude_none=exclude_none) for item in value]
    return value


def loads(data: bytes | str) -> Any:
    """JSON as the stdlib reads it (the SDK's parser), at orjson's speed where orjson agrees.

    orjson reads an integer beyond 64 bits as a float, which would change a tool call's input: a body
    with a run of 19 digits or more (in a string too: then only slower) goes to the stdlib.
    """
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # NaN and Infinity: what only the stdlib accepts (and broken JSON, which it raises on as the SDK would).
        return json.loads(raw)


def options(timeout: float) -> anthropic.RequestOptions:
    """The request options `messages.create` would send (the adapter always passes its time left)."""
    return {"timeout": timeout}


def body_bytes(kwargs: dict[str, Any], *, stream: bool) -> bytes:
    """The request body: the create arguments as JSON, `stream` as create sends it."""
    return orjson.dumps({**kwargs, "stream": True} if stream else kwargs)


def message(response: httpx2.Response) -> Any:
    """The answer of a unary call, as `with_raw_response.create(...).parse()` reads it, decoded not modelled.

    A body under a non-JSON content type is still read as JSON when it is JSON, and otherwise comes back
    as its text (which the mapping then rejects as the wrong shape), as in the SDK.
    """
    content_type = response.headers.get("content-type", "*").split(";")[0]
    if content_type.lower().endswith("json"):
        return wrap(loads(response.content))
    try:
        return wrap(loads(response.content))
    except ValueError:
        return response.text


async def events(client: anthropic.AsyncAnthropic, response: httpx2.Response) -> AsyncIterator[Any]:
    """Each stream event's decoded data, in order, until the body ends."""
    async for sse in anthropic.AsyncStream.raw_events(response):
        name = sse.event
        if name == "ping" or name is None:
            continue
        if name == "error":
            body: Any = sse.data
            try:
                body = sse.json()
                message_text = f"{body}"
            except Exception:  # noqa: BLE001 - the SDK's own fallback for an error event that is not JSON
                message_text = sse.data or f"Error code: {response.status_code}"
            # The SDK's own factory, as AsyncStream raises it.
            raise client._make_status_error(message_text, body=body, response=response)
        if not sse.data:
            continue
        yield wrap(loads(sse.data))

"""Reasoning on the HTTP door: the effort in, reasoning parts out and back, on both OpenAI APIs.

Chat completions (no OpenAI field carries reasoning back, so the door
follows the OpenAI-compatible servers):

* `reasoning_effort` → `settings.reasoning.effort` with `include_thoughts`
  (the door has somewhere to put the thoughts);
* out: `reasoning_content` (the reasoning text, joined, as vLLM and DeepSeek
  send it on the message and on stream deltas) and `reasoning_details`, one
  entry per reasoning part with what a provider needs to continue
  (the shape OpenRouter uses, with the mesh's `provider` instead of its
  `format`): `{"type": "reasoning.text", "index", "text", "signature",
  "provider"}` or `{"type": "reasoning.encrypted", "index", "data",
  "provider"}`. Stream deltas carry the entries' pieces by `index`.
* in: an assistant turn's `reasoning_details` become its reasoning parts, in
  order; `reasoning_content` alone (a client of a vLLM-style server) is read
  as unsigned text of no provider, which every adapter leaves out.

Responses: `reasoning.effort` likewise; `reasoning` output items carry the
text as `summary` and, when `include` asks for `reasoning.encrypted_content`,
the provider, signature and redacted data packed into `encrypted_content`;
such an item sent back in `input` becomes the reasoning part again.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from llmmesh.v1 import chat_pb2
from services.common.errors import invalid_argument

_EFFORTS = {
    "minimal": chat_pb2.REASONING_EFFORT_MINIMAL,
    "low": chat_pb2.REASONING_EFFORT_LOW,
    "medium": chat_pb2.REASONING_EFFORT_MEDIUM,
    "high": chat_pb2.REASONING_EFFORT_HIGH,
}
ENCRYPTED_INCLUDE = "reasoning.encrypted_content"
#: Marks the door's own packing of encrypted_content (a version, should it ever change).
_PACKED_PREFIX = "llmmesh1."


def reasoning_settings(path: str, effort: str | None, *, include_thoughts: bool) -> chat_pb2.ReasoningSettings | None:
    """The shared settings for an OpenAI effort word; None when the caller sent none."""
    if effort is None:
        return None
    if effort not in _EFFORTS:
        raise invalid_argument(
            path,
            f"{effort!r} is not an effort the mesh maps on every provider; use minimal, low, medium or high "
            "(omit it for the model's default)",
        )
    return chat_pb2.ReasoningSettings(effort=_EFFORTS[effort], include_thoughts=include_thoughts)


def reasoning_parts(message: chat_pb2.Message) -> list[chat_pb2.ReasoningPart]:
    return [part.reasoning for part in message.content if part.WhichOneof("kind") == "reasoning"]


# -- chat completions -------------------------------------------------------------------------


def detail(index: int, part: chat_pb2.ReasoningPart | chat_pb2.ReasoningDelta) -> dict[str, Any]:
    """One `reasoning_details` entry (or a stream delta's piece of it)."""
    if part.redacted_data:
        return {"type": "reasoning.encrypted", "index": index, "data": part.redacted_data, "provider": part.provider}
    entry: dict[str, Any] = {"type": "reasoning.text", "index": index, "text": part.text, "provider": part.provider}
    if part.signature:
        entry["signature"] = part.signature
    return entry


def message_fields(message: chat_pb2.Message) -> dict[str, Any]:
    """`reasoning_content` and `reasoning_details` for an assistant message; nothing without reasoning."""
    parts = reasoning_parts(message)
    if not parts:
        return {}
    return {
        "reasoning_content": "".join(part.text for part in parts),
        "reasoning_details": [detail(index, part) for index, part in enumerate(parts)],
    }


def delta_fields(delta: chat_pb2.ReasoningDelta) -> dict[str, Any]:
    fields: dict[str, Any] = {"reasoning_details": [detail(delta.index, delta)]}
    if delta.text:
        fields["reasoning_content"] = delta.text
    return fields


def parts_from_details(path: str, details: list[Any] | None, content: str | None) -> list[chat_pb2.ContentPart]:
    """An assistant history turn's reasoning parts, from its `reasoning_details` (else `reasoning_content`)."""
    if details is None:
        return [chat_pb2.ContentPart(reasoning=chat_pb2.ReasoningPart(text=content))] if content else []
    return [_part_from_detail(f"{path}[{index}]", entry) for index, entry in enumerate(details)]


def _part_from_detail(path: str, entry: Any) -> chat_pb2.ContentPart:
    if not isinstance(entry, dict):
        raise invalid_argument(path, "must be a reasoning_details object, as the door returned it")
    kind = entry.get("type")
    provider = _text(entry, "provider", path)
    if kind == "reasoning.encrypted":
        part = chat_pb2.ReasoningPart(redacted_data=_text(entry, "data", path), provider=provider)
    elif kind == "reasoning.text":
        part = chat_pb2.ReasoningPart(
            text=_text(entry, "text", path), signature=_text(entry, "signature", path), provider=provider
        )
    else:
        raise invalid_argument(f"{path}.type", f"{kind!r} is not known; use 'reasoning.text' or 'reasoning.encrypted'")
    return chat_pb2.ContentPart(reasoning=part)


def _text(entry: dict[str, Any], key: str, path: str) -> str:
    value = entry.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_argument(f"{path}.{key}", "must be a string, as the door returned it")
    return value


# -- Responses --------------------------------------------------------------------------------


def pack(part: chat_pb2.ReasoningPart) -> str | None:
    """`encrypted_content` for a part: what its provider needs back, opaque to the caller; None if nothing."""
    if not (part.signature or part.redacted_data):
        return None
    fields = {"p": part.provider, "s": part.signature, "r": part.redacted_data}
    packed = json.dumps({key: value for key, value in fields.items() if value}, separators=(",", ":"))
    return _PACKED_PREFIX + base64.urlsafe_b64encode(packed.encode()).decode("ascii")


def unpack(path: str, summary_text: str, encrypted: object) -> chat_pb2.ReasoningPart:
    """A `reasoning` input item's part; its encrypted_content must be one the door made."""
    if encrypted is None:
        return chat_pb2.ReasoningPart(text=summary_text)
    if not isinstance(encrypted, str) or not encrypted.startswith(_PACKED_PREFIX):
        raise invalid_argument(path, "is not encrypted_content this door returned; send it back unchanged")
    try:
        fields = json.loads(base64.urlsafe_b64decode(encrypted[len(_PACKED_PREFIX) :].encode()))
    except (binascii.Error, ValueError):
        raise invalid_argument(path, "is damaged; send the encrypted_content back exactly as returned") from None
    if not isinstance(fields, dict) or not all(isinstance(value, str) for value in fields.values()):
        raise invalid_argument(path, "is damaged; send the encrypted_content back exactly as returned")
    return chat_pb2.ReasoningPart(
        text=summary_text,
        provider=fields.get("p", ""),
        signature=fields.get("s", ""),
        redacted_data=fields.get("r", ""),
    )

"""ListModels pages (AIP-158) and the capabilities each model shows: a page is the models after the one the token names, in the table's order.

The token is opaque to callers: URL-safe base64 of the last name served. A
routing-table reload that drops that model makes the token stale, which the
caller is told (start again without it) rather than sent a page that skips
or repeats models.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TypeVar

from llmmesh.v1 import chat_pb2
from services.common.errors import invalid_argument
from services.router.config import ResolvedCapabilities

MAX_PAGE_SIZE = 1000
_TOKEN_PREFIX = "after:"

Entry = TypeVar("Entry")


def page_of(entries: Sequence[Entry], names: Sequence[str], page_size: int, page_token: str) -> tuple[list[Entry], str]:
    """(the page's entries, the next token or "") for `names[i]` naming `entries[i]`."""
    if page_size < 0:
        raise invalid_argument(
            "page_size", f"page_size is {page_size}; send 0 for every model, or 1 to {MAX_PAGE_SIZE}"
        )
    if page_size > MAX_PAGE_SIZE:
        raise invalid_argument("page_size", f"page_size is {page_size}; the most is {MAX_PAGE_SIZE}")
    start = _start_after(names, page_token) if page_token else 0
    end = len(entries) if page_size == 0 else min(len(entries), start + page_size)
    token = _token_for(names[end - 1]) if end < len(entries) else ""
    return list(entries[start:end]), token


def capabilities_message(caps: ResolvedCapabilities) -> chat_pb2.ModelCapabilities:
    """ModelInfo.capabilities from the routing file's resolved capabilities."""
    return chat_pb2.ModelCapabilities(
        vision=caps.vision,
        documents=caps.documents,
        audio=caps.audio,
        tools=caps.tools,
        json_schema=caps.json_schema,
        reasoning=caps.reasoning,
        sampling=caps.sampling,
        context_window=caps.context_window,
        max_output_tokens=caps.max_output_tokens,
    )


def _token_for(name: str) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{name}".encode()).decode().rstrip("=")


def _start_after(names: Sequence[str], token: str) -> int:
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if not decoded.startswith(_TOKEN_PREFIX):
        raise invalid_argument("page_token", "page_token is not one this router gave; send next_page_token as it came")
    last = decoded.removeprefix(_TOKEN_PREFIX)
    if last not in names:
        raise invalid_argument(
            "page_token", "page_token is stale (the routing table changed since); list again without page_token"
        )
    return names.index(last) + 1

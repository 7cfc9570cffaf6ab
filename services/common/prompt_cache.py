"""Prompt-cache breakpoints and settings shared by the validation, the adapters and the mock.

A breakpoint (`cache_control` on a content part or a tool) is a hint: the
prompt up to it may be cached. Anthropic takes it per block; OpenAI and
Gemini cache prompt prefixes on their own and serve it as a no-op.
`settings.prompt_cache` carries OpenAI's `prompt_cache_key` and Gemini's
explicit `cached_content`.
"""

from __future__ import annotations

from typing import Any

from llmmesh.v1 import chat_pb2
from services.common.errors import invalid_argument

#: OpenAI's longest prompt_cache_key is not documented; the mesh keeps it to this many characters.
MAX_KEY_LENGTH = 1024
#: Gemini names explicit caches `cachedContents/<id>`.
CACHED_CONTENT_PREFIX = "cachedContents/"
#: The wire spelling of each TTL (Anthropic's CacheControlEphemeralParam.ttl).
TTL_NAMES = {chat_pb2.CACHE_TTL_5M: "5m", chat_pb2.CACHE_TTL_1H: "1h"}
TTL_VALUES = {name: value for value, name in TTL_NAMES.items()}


def ttl_name(control: chat_pb2.CacheControl) -> str | None:
    """The TTL's wire name (5m or 1h), or None for the provider's default."""
    return TTL_NAMES.get(control.ttl)


def validate_cache_control(path: str, control: chat_pb2.CacheControl) -> None:
    if control.ttl not in chat_pb2.CacheTtl.values():
        raise invalid_argument(f"{path}.ttl", f"{control.ttl} is not a known TTL; use CACHE_TTL_5M or CACHE_TTL_1H")


def validate_prompt_cache(prompt_cache: chat_pb2.PromptCache) -> None:
    if len(prompt_cache.key) > MAX_KEY_LENGTH:
        raise invalid_argument(
            "settings.prompt_cache.key", f"is {len(prompt_cache.key)} characters, above the limit of {MAX_KEY_LENGTH}"
        )
    name = prompt_cache.cached_content
    if name and (not name.startswith(CACHED_CONTENT_PREFIX) or name == CACHED_CONTENT_PREFIX):
        raise invalid_argument(
            "settings.prompt_cache.cached_content",
            f"{name!r} is not a cache name; use the name Gemini's caches API returned, like 'cachedContents/abc123'",
        )


def breakpoint_count(request: Any) -> int:
    """How many parts and tools of `request` carry a breakpoint."""
    parts = sum(1 for message in request.messages for part in message.content if part.HasField("cache_control"))
    return parts + sum(1 for tool in request.tools if tool.HasField("cache_control"))


def wire_cache_control(control: chat_pb2.CacheControl) -> dict[str, str]:
    """`{"type": "ephemeral"}` plus `ttl` when set: Anthropic's block field and the door's spelling."""
    mapped = {"type": "ephemeral"}
    ttl = ttl_name(control)
    if ttl is not None:
        mapped["ttl"] = ttl
    return mapped

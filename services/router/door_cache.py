"""Prompt caching at the HTTP door, in the OpenAI ecosystem's spelling.

Requests: `prompt_cache_key` (OpenAI's own field, chat completions and
Responses) → `settings.prompt_cache.key`; `cached_content` (LiteLLM's name
for a Gemini explicit cache) → `settings.prompt_cache.cached_content`;
`cache_control: {"type": "ephemeral", "ttl": "5m" | "1h"}` (the spelling
LiteLLM and OpenRouter put on OpenAI-shaped messages) on a content part, on
a whole message (its last part) or on a tool → the breakpoints of the
contract (a tool message's breakpoint rides its result's `parts`). Answers: `usage.prompt_tokens_details.cached_tokens` and
`.cache_write_tokens` (OpenAI's schema), plus `usage.cache_creation_input_tokens`
and `usage.cache_read_input_tokens` (LiteLLM's and Anthropic's names) in chat
completions; `usage.input_tokens_details.cached_tokens` and
`.cache_write_tokens` in Responses.
"""

from __future__ import annotations

from typing import Any

from llmmesh.v1 import chat_pb2
from services.common.errors import invalid_argument
from services.common.prompt_cache import TTL_VALUES

_SPELLING = '{"type": "ephemeral"} or {"type": "ephemeral", "ttl": "5m" | "1h"}'


def cache_control(path: str, value: object) -> chat_pb2.CacheControl:
    """A door `cache_control` object as the contract's CacheControl; INVALID_ARGUMENT naming `path` otherwise."""
    if not isinstance(value, dict):
        raise invalid_argument(path, f"must be an object: {_SPELLING}")
    unknown = sorted(set(value) - {"type", "ttl"})
    if unknown:
        raise invalid_argument(f"{path}.{unknown[0]}", f"is not a cache_control field; send {_SPELLING}")
    if value.get("type") != "ephemeral":
        raise invalid_argument(f"{path}.type", f"{value.get('type')!r} is not supported; use 'ephemeral'")
    ttl = value.get("ttl")
    if ttl is None:
        return chat_pb2.CacheControl()
    if ttl not in TTL_VALUES:
        raise invalid_argument(f"{path}.ttl", f"{ttl!r} is not a TTL the mesh takes; use '5m' or '1h'")
    return chat_pb2.CacheControl(ttl=TTL_VALUES[ttl])


def mark_last_part(path: str, message: chat_pb2.Message, value: object) -> None:
    """A message-level `cache_control`: the breakpoint goes on the message's last content part."""
    mark_last(path, message.content, value)


def mark_last(path: str, content: Any, value: object) -> None:
    """The breakpoint of `path`.cache_control on the last of `content`'s parts (reasoning parts left out)."""
    control = cache_control(f"{path}.cache_control", value)
    parts = [part for part in content if part.WhichOneof("kind") != "reasoning"]
    if not parts:
        raise invalid_argument(
            f"{path}.cache_control",
            "needs content to mark: a breakpoint on a tool call or tool result is not supported; "
            "put it on the next message with text",
        )
    parts[-1].cache_control.CopyFrom(control)


def refuse_breakpoint(path: str, value: object, what: str = "a tool result") -> None:
    """A breakpoint where the contract has no place for one yet (ToolResult, a tool call, a refusal)."""
    if value is not None:
        raise invalid_argument(
            path,
            f"is not supported on {what}; put the breakpoint on a part of the next user message, "
            "or on the system prompt",
        )


def apply_prompt_cache(settings: chat_pb2.GenerationSettings, key: str | None, cached_content: str | None) -> None:
    if key:
        settings.prompt_cache.key = key
    if cached_content:
        settings.prompt_cache.cached_content = cached_content


def chat_usage_fields(usage: chat_pb2.Usage) -> dict[str, Any]:
    """The cache counts of a chat-completions `usage` beside prompt_tokens_details."""
    return {
        "cache_creation_input_tokens": usage.cache_write_input_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
    }

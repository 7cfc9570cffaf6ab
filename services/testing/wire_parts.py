"""Checks of a chat request's content parts against each vendor SDK's own types.

The fakes (fake_openai, fake_anthropic, fake_google) call these when built
with `check_parts=True` and answer 400 with the problem, as the real API
would: a part the adapter maps must be one the SDK itself can type. Only
message content is checked (user, tool and assistant content, Anthropic
tool_result blocks, Gemini parts and function responses); the rest of the
body is the golden files' business.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pydantic
from anthropic.types import ContentBlockParam, ToolResultBlockParam
from google.genai import types as gemini
from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionContentPartTextParam


@functools.cache
def _adapter(kind: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(kind)


def _problem(kind: Any, value: Any, where: str) -> str | None:
    try:
        _adapter(kind).validate_python(value)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        return f"{where}: not the SDK's type: {'.'.join(map(str, first['loc']))}: {first['msg']}"
    return None


def openai_problem(body: Any) -> str | None:
    """Chat Completions: user content parts as ChatCompletionContentPartParam, tool content as text parts."""
    for index, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        kind = ChatCompletionContentPartParam if message.get("role") == "user" else ChatCompletionContentPartTextParam
        for part_index, part in enumerate(content):
            found = _problem(kind, part, f"messages[{index}].content[{part_index}]")
            if found is not None:
                return found
    return None


def anthropic_problem(body: Any) -> str | None:
    """Messages API: every content block as ContentBlockParam (tool results as ToolResultBlockParam)."""
    for index, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block_index, block in enumerate(content):
            where = f"messages.{index}.content.{block_index}"
            kind = ToolResultBlockParam if block.get("type") == "tool_result" else ContentBlockParam
            found = _problem(kind, block, where)
            if found is not None:
                return found
            if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                # Iterable[...] validates lazily in pydantic: each nested block on its own.
                for inner_index, inner in enumerate(block["content"]):
                    found = _problem(ContentBlockParam, inner, f"{where}.content.{inner_index}")
                    if found is not None:
                        return found
    return None


def gemini_problem(body: Any) -> str | None:
    """generateContent: each content as google-genai's Content (camelCase JSON, base64 bytes)."""
    for index, content in enumerate(body.get("contents") or []):
        try:
            gemini.Content.model_validate_json(json.dumps(content))
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            return f"contents[{index}]: not a Content: {'.'.join(map(str, first['loc']))}: {first['msg']}"
    return None

"""Anthropic responses → unified proto types: messages, usage, finish reasons, extensions."""

from __future__ import annotations

import json
from typing import Any

import grpc
from anthropic.types import Message
from google.protobuf import struct_pb2

from llmmesh.v1 import chat_pb2
from services.common.errors import REASON_STREAM_TRUNCATED, MeshError
from services.providers.anthropic.citations import block_citations
from services.providers.anthropic.mapping import JSON_OBJECT_TOOL, PROVIDER

_FINISH_REASONS = {
    "end_turn": chat_pb2.FINISH_REASON_STOP,
    "stop_sequence": chat_pb2.FINISH_REASON_STOP,
    "max_tokens": chat_pb2.FINISH_REASON_LENGTH,
    # Output stopped because the context filled up: the answer is cut, like max_tokens.
    "model_context_window_exceeded": chat_pb2.FINISH_REASON_LENGTH,
    "tool_use": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "refusal": chat_pb2.FINISH_REASON_REFUSAL,
    "pause_turn": chat_pb2.FINISH_REASON_OTHER,
}


def finish_reason(stop_reason: str | None, *, json_tool: bool = False) -> chat_pb2.FinishReason.ValueType:
    """The unified finish reason; no stop reason means the answer was cut short.

    With `json_tool` (JSON-object mode), the forced tool's call is the answer:
    it ends like any finished answer.
    """
    if json_tool and stop_reason == "tool_use":
        return chat_pb2.FINISH_REASON_STOP
    if stop_reason is None:
        raise MeshError(
            grpc.StatusCode.UNAVAILABLE,
            "anthropic: upstream answer ended without a stop_reason; the answer is truncated",
            reason=REASON_STREAM_TRUNCATED,
        )
    return _FINISH_REASONS.get(stop_reason, chat_pb2.FINISH_REASON_OTHER)


def usage_of(
    *,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_creation: int | None,
    thinking_tokens: int | None,
) -> chat_pb2.Usage:
    """Anthropic counts cached prompt tokens (read and written) apart; the unified input count includes them."""
    return chat_pb2.Usage(
        input_tokens=(input_tokens or 0) + (cache_read or 0) + (cache_creation or 0),
        output_tokens=output_tokens or 0,
        cached_input_tokens=cache_read or 0,
        reasoning_tokens=thinking_tokens or 0,
        cache_write_input_tokens=cache_creation or 0,
    )


def message_usage(message: Message) -> chat_pb2.Usage:
    usage = message.usage
    details = usage.output_tokens_details
    return usage_of(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read=usage.cache_read_input_tokens,
        cache_creation=usage.cache_creation_input_tokens,
        thinking_tokens=details.thinking_tokens if details is not None else None,
    )


def refusal_text(stop_reason: str | None, stop_details: Any) -> str:
    """`Message.refusal` for a stop_reason "refusal": Anthropic's explanation, else a sentence naming it.

    Anthropic sends no words of refusal (the text so far stays the answer's
    text); callers, and OpenAI clients at the door, still need one to see it.
    """
    if stop_reason != "refusal":
        return ""
    explanation = getattr(stop_details, "explanation", None)
    if explanation:
        return str(explanation)
    category = getattr(stop_details, "category", None)
    return "Anthropic declined to answer (stop_reason refusal" + (f", category {category})" if category else ")")


def assistant_message(message: Message, *, json_tool: bool = False) -> chat_pb2.Message:
    """Reasoning parts (thinking blocks, with their signatures, for the round trip), text parts, tool calls
    and the text blocks' citations, each spanning its block in the joined text.

    With `json_tool` (JSON-object mode), the forced tool's input is the answer's text.
    """
    result = chat_pb2.Message(
        role=chat_pb2.ROLE_ASSISTANT, refusal=refusal_text(message.stop_reason, message.stop_details)
    )
    chars = 0
    for block in message.content:
        if block.type == "text":
            result.content.add(text=block.text)
            result.citations.extend(block_citations(block, start=chars, end=chars + len(block.text)))
            chars += len(block.text)
        elif block.type == "tool_use" and json_tool and block.name == JSON_OBJECT_TOOL:
            result.content.add(text=json.dumps(block.input))
            chars += len(result.content[-1].text)
        elif block.type == "tool_use":
            result.tool_calls.add(id=block.id, name=block.name, arguments_json=json.dumps(block.input))
        elif block.type == "thinking":
            result.content.add(
                reasoning=chat_pb2.ReasoningPart(text=block.thinking, signature=block.signature, provider=PROVIDER)
            )
        elif block.type == "redacted_thinking":
            result.content.add(reasoning=chat_pb2.ReasoningPart(redacted_data=block.data, provider=PROVIDER))
        # Server-tool blocks cannot occur: the adapter sends client tools only.
    return result


def response_extension(
    *,
    stop_reason: str | None,
    stop_sequence: str | None,
    stop_details: Any,
    ignored: list[str],
) -> dict[str, Any]:
    """What goes to the response's extensions["anthropic"]."""
    extension: dict[str, Any] = {"stop_reason": stop_reason or ""}
    if stop_sequence:
        extension["stop_sequence"] = stop_sequence
    if stop_details is not None:
        extension["stop_details"] = stop_details.model_dump(exclude_none=True)
    if ignored:
        extension["ignored_settings"] = ignored
    return extension


def set_extension(target: struct_pb2.Struct, value: dict[str, Any]) -> None:
    """Stores `value` under target["anthropic"]."""
    target.update({PROVIDER: value})

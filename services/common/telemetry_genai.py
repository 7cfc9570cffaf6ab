"""GenAI attributes on chat spans, shared by the router, the adapters and the agent.

Everything here checks `span.is_recording()` first: with tracing off or a
request not sampled, a chat costs no attribute building at all. Prompt and
completion text go on spans only when LLMMESH_CAPTURE_CONTENT=true, as
`gen_ai.input.messages` / `gen_ai.output.messages` JSON in the GenAI message
schema ({"role", "parts": [{"type": "text", "content"}, ...]}).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import grpc
from opentelemetry.trace import Span, Status, StatusCode

from llmmesh.v1 import chat_pb2
from services.common import telemetry_names as names

_ROLES = {
    chat_pb2.ROLE_SYSTEM: "system",
    chat_pb2.ROLE_USER: "user",
    chat_pb2.ROLE_ASSISTANT: "assistant",
    chat_pb2.ROLE_TOOL: "tool",
}
# GenAI finish reasons: stop, length, tool_call, content_filter, error.
_FINISH = {
    chat_pb2.FINISH_REASON_STOP: "stop",
    chat_pb2.FINISH_REASON_LENGTH: "length",
    chat_pb2.FINISH_REASON_TOOL_CALLS: "tool_call",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    chat_pb2.FINISH_REASON_OTHER: "other",
}
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def finish_reason_name(reason: int) -> str:
    return _FINISH.get(reason, "unspecified")  # type: ignore[call-overload]


def code_name(number: int) -> str:
    return _CODE_NAMES.get(number, str(number))


def start_chat(span: Span, model: str, *, provider: str = "", stream: bool = False, settings: Any = None) -> None:
    """Names the span `chat {model}` and sets the request side of the GenAI attributes."""
    if not span.is_recording():
        return
    span.update_name(names.SPAN_CHAT.format(model=model))
    attributes: dict[str, Any] = {names.GEN_AI_OPERATION_NAME: names.OPERATION_CHAT, names.GEN_AI_REQUEST_MODEL: model}
    if provider:
        attributes[names.GEN_AI_PROVIDER_NAME] = provider
    if stream:
        attributes[names.GEN_AI_REQUEST_STREAM] = True
    if settings is not None:
        if settings.HasField("max_output_tokens"):
            attributes[names.GEN_AI_REQUEST_MAX_TOKENS] = settings.max_output_tokens
        if settings.HasField("temperature"):
            attributes[names.GEN_AI_REQUEST_TEMPERATURE] = settings.temperature
    span.set_attributes(attributes)


def start_embeddings(span: Span, model: str, *, provider: str = "", dimensions: int | None = None) -> None:
    """Names the span `embeddings {model}` (GenAI semconv) and sets the request attributes."""
    if not span.is_recording():
        return
    span.update_name(names.SPAN_EMBEDDINGS.format(model=model))
    attributes: dict[str, Any] = {
        names.GEN_AI_OPERATION_NAME: names.OPERATION_EMBEDDINGS,
        names.GEN_AI_REQUEST_MODEL: model,
    }
    if provider:
        attributes[names.GEN_AI_PROVIDER_NAME] = provider
    if dimensions:
        attributes[names.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dimensions
    span.set_attributes(attributes)


def record_embeddings(
    span: Span, *, input_tokens: int, dimensions: int, response_model: str = "", extra: dict[str, Any] | None = None
) -> None:
    """The response side of an embeddings call: usage, vector length, model."""
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {
        names.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
        names.GEN_AI_EMBEDDINGS_DIMENSION_COUNT: dimensions,
    }
    if response_model:
        attributes[names.GEN_AI_RESPONSE_MODEL] = response_model
    if extra:
        attributes.update(extra)
    span.set_attributes(attributes)


def record_answer(
    span: Span,
    *,
    usage: chat_pb2.Usage,
    finish_reason: int,
    response_model: str = "",
    response_id: str = "",
    provider: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    """The response side: model, id, finish reasons, token usage (and `extra`), in one call."""
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {
        names.GEN_AI_RESPONSE_FINISH_REASONS: (finish_reason_name(finish_reason),),
        names.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
        names.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
    }
    if response_model:
        attributes[names.GEN_AI_RESPONSE_MODEL] = response_model
    if response_id:
        attributes[names.GEN_AI_RESPONSE_ID] = response_id
    if provider:
        attributes[names.GEN_AI_PROVIDER_NAME] = provider
    if usage.cached_input_tokens:
        attributes[names.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
    if usage.cache_write_input_tokens:
        attributes[names.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_input_tokens
    if usage.reasoning_tokens:
        attributes[names.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
    if extra:
        attributes.update(extra)
    span.set_attributes(attributes)


def record_error(span: Span, code: grpc.StatusCode, message: str = "") -> None:
    if not span.is_recording():
        return
    span.set_attribute(names.ERROR_TYPE, code.name)
    span.set_status(Status(StatusCode.ERROR, f"{code.name}: {message}"[:300] if message else code.name))


def record_input(span: Span, messages: Iterable[chat_pb2.Message]) -> None:
    """Prompt text (call only when content capture is on)."""
    if span.is_recording():
        span.set_attribute(names.GEN_AI_INPUT_MESSAGES, json.dumps([_message(m) for m in messages]))


def record_output(span: Span, message: chat_pb2.Message, finish_reason: int) -> None:
    """Completion text (call only when content capture is on)."""
    if span.is_recording():
        entry = _message(message)
        entry["finish_reason"] = finish_reason_name(finish_reason)
        span.set_attribute(names.GEN_AI_OUTPUT_MESSAGES, json.dumps([entry]))


def _message(message: chat_pb2.Message) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.WhichOneof("kind") == "text":
            parts.append({"type": "text", "content": part.text})
        else:
            parts.append({"type": part.WhichOneof("kind") or "unknown"})  # images: never the bytes
    for call in message.tool_calls:
        parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments_json})
    if message.HasField("tool_result"):
        result = message.tool_result
        texts = [part.text for part in result.parts if part.WhichOneof("kind") == "text"]
        response = (
            "\n".join([result.content, *texts]) if result.content and texts else result.content or "\n".join(texts)
        )
        parts.append({"type": "tool_call_response", "id": result.tool_call_id, "response": response})
    return {"role": _ROLES.get(message.role, "unspecified"), "parts": parts}  # type: ignore[call-overload]

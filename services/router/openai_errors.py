"""MeshError → OpenAI's error format and the HTTP status OpenAI clients expect.

`{"error": {"message", "type", "param", "code"}}` with the status that makes
the OpenAI SDKs raise the matching exception and retry only what is worth
retrying: 429 and 503 carry Retry-After (and retry-after-ms, which the SDKs
read first) from RetryInfo; a provider's rejected key is 502 with
`x-should-retry: false`, since no retry of the same request can fix it.
`param` names the caller's field (`max_tokens`, `tools[0].function.name`),
translated from the router's field path, and so does a message that starts
with a field path. Messages are in the door's terms: HTTP headers and
endpoints rather than gRPC metadata and RPCs, and context-window errors in
OpenAI's own wording ("This model's maximum context length is N tokens"),
which LiteLLM and LangChain match to classify them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_MODEL_NOT_FOUND,
    REASON_PROVIDER_AUTH,
    REASON_RATE_LIMITED,
    MeshError,
)
from services.common.tenants import REASON_MALFORMED_CREDENTIALS, REASON_MISSING_CREDENTIALS
from services.router.openai_request import FALLBACK_HEADER, BodyFields

_BY_CODE: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (408, "timeout_error"),
    grpc.StatusCode.ABORTED: (409, "conflict_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "cancelled_error"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "server_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable_error"),
}
_BY_REASON: dict[str, tuple[int, str]] = {
    # Our credentials with a provider, not the caller's: a gateway failure, and not retryable.
    REASON_PROVIDER_AUTH: (502, "upstream_auth_error"),
}
# OpenAI's own codes, which clients (LangChain, LiteLLM, ...) branch on.
_OPENAI_CODES = {
    REASON_CONTEXT_WINDOW_EXCEEDED: "context_length_exceeded",
    REASON_MODEL_NOT_FOUND: "model_not_found",
    REASON_RATE_LIMITED: "rate_limit_exceeded",
    REASON_CONTENT_FILTERED: "content_filter",
}
_NOT_RETRYABLE_REASONS = {REASON_PROVIDER_AUTH}


@dataclass(frozen=True, slots=True)
class HttpError:
    """An error response: status, OpenAI error body and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


ParamOf = Callable[[str, BodyFields | None], str]
"""Router field path → the caller's field, per operation (chat completions, Responses)."""


def http_error(error: MeshError, fields: BodyFields | None = None, *, param_of: ParamOf | None = None) -> HttpError:
    """The HTTP response for a MeshError."""
    status, kind = _BY_REASON.get(error.reason) or _BY_CODE.get(error.code, (500, "server_error"))
    headers: dict[str, str] = {}
    if error.retry_after is not None and status in (429, 503):
        # Whole seconds, rounded up and at least 1: a Retry-After of 0 invites an immediate retry storm.
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
        headers["retry-after-ms"] = str(max(0, round(error.retry_after * 1000)))
    if error.reason in _NOT_RETRYABLE_REASONS:
        headers["x-should-retry"] = "false"
    if error.reason:
        headers["x-llmmesh-error-reason"] = error.reason
    return HttpError(status, error_body(error, fields, kind=kind, param_of=param_of), headers)


def error_body(
    error: MeshError, fields: BodyFields | None = None, *, kind: str | None = None, param_of: ParamOf | None = None
) -> dict[str, Any]:
    """`{"error": {...}}` as OpenAI sends it (also the payload of an SSE error event)."""
    if kind is None:
        kind = (_BY_REASON.get(error.reason) or _BY_CODE.get(error.code, (500, "server_error")))[1]
    translate = param_of or openai_param
    param = translate(error.field, fields) if error.field else None
    if param is None and error.code == grpc.StatusCode.NOT_FOUND and error.reason == REASON_MODEL_NOT_FOUND:
        param = "model"
    message = error.message
    leading = _LEADING_FIELD.match(message)
    if error.field and param and message.startswith(f"{error.field}: "):
        # Validation messages start with the router's field path; name the caller's field instead.
        message = f"{param}: {message.removeprefix(f'{error.field}: ')}"
    elif leading is not None:
        # Messages start with the router's field path (`routing.fallback_models[0]: ...`); name the caller's.
        named = translate(leading.group(1), fields)
        message = f"{named}: {message[leading.end() :]}"
        if param is None and named != leading.group(1):
            param = named
    message = door_wording(error, message)
    code = _OPENAI_CODES.get(error.reason) or (error.reason.lower() if error.reason else error.code.name.lower())
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


_LEADING_FIELD = re.compile(r"^((?:settings|routing|extensions|tools|tool_choice|messages|caller)(?:\.\w+|\[\d+\])*): ")
# The router names its gRPC RPCs and metadata; the door's callers know HTTP endpoints and headers.
_HTTP_WORDING = {
    REASON_MISSING_CREDENTIALS: "no credentials: send an 'Authorization: Bearer <api key>' header",
    REASON_MALFORMED_CREDENTIALS: "the Authorization header is not of the form 'Bearer <api key>'",
}
# The router's messages name protobuf enums and RPCs; the door's callers know JSON values and HTTP endpoints.
_RPC_NAMES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\bListModels\b"), "GET /v1/models"),
    (re.compile(r"\bcall Embed \(/v1/embeddings\)"), "call POST /v1/embeddings"),
    (re.compile(r"\bROLE_(SYSTEM|USER|ASSISTANT|TOOL) messages\b"), lambda match: f"{match.group(1).lower()} messages"),
    (re.compile(r"\becho the ToolCall\.id\b"), "echo the id of the assistant's tool call"),
    (re.compile(r"\bRESPONSE_FORMAT_TYPE_JSON_SCHEMA\b"), "type json_schema"),
]


_OPENAI_CONTEXT = "This model's maximum context length is"


def door_wording(error: MeshError, message: str) -> str:
    """`message` in HTTP terms, and a context-window error in OpenAI's wording."""
    if error.reason in _HTTP_WORDING:
        return _HTTP_WORDING[error.reason]
    for pattern, replacement in _RPC_NAMES:
        message = pattern.sub(replacement, message)
    if error.reason == REASON_CONTEXT_WINDOW_EXCEEDED:
        message = _context_window_message(error, message)
    return message


def _context_window_message(error: MeshError, detail: str) -> str:
    """OpenAI's sentence and code, then the mesh's own detail.

    LiteLLM matches "This model's maximum context length is"; langchain-openai
    looks for "context_length_exceeded" in the exception's text, which the
    openai SDK builds from the message alone, so the code is in it too.
    """
    if _OPENAI_CONTEXT in detail:
        return (
            detail if _OPENAI_CODES[REASON_CONTEXT_WINDOW_EXCEEDED] in detail else f"{detail} (context_length_exceeded)"
        )
    window = error.metadata.get("context_window", "")
    prompt = error.metadata.get("prompt_tokens", "")
    if window.isdigit() and prompt.isdigit():
        opening = (
            f"This model's maximum context length is {window} tokens. "
            f"However, your messages resulted in {prompt} tokens. Please reduce the length of the messages."
        )
    else:
        opening = "This model's maximum context length is smaller than this request. Please reduce the length of the messages."
    return f"{opening} (context_length_exceeded: {detail})"


_Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str], BodyFields], str]]


def _rule(pattern: str, replacement: str | Callable[[re.Match[str], BodyFields], str]) -> _Rule:
    return re.compile(pattern), replacement


def _content(match: re.Match[str], fields: BodyFields) -> str:
    index = int(match.group(1))
    # A string content was mapped to one text part: name the string, not a part of it.
    rest = match.group(3) or ""
    if index in fields.string_content and match.group(2) == "0":
        # A breakpoint on a string content came from the message's own cache_control.
        return f"messages[{index}].cache_control" if rest.startswith(".cache_control") else f"messages[{index}].content"
    return f"messages[{index}].content[{match.group(2)}]{rest}"


def _fallbacks(match: re.Match[str], fields: BodyFields) -> str:
    return FALLBACK_HEADER if fields.fallbacks_from_header else f"llmmesh.fallback_models{match.group(1)}"


_RULES: list[_Rule] = [
    _rule(r"^settings\.max_output_tokens$", lambda _m, fields: fields.max_tokens_field),
    _rule(r"^settings\.response_format\.json_schema$", "response_format.json_schema.schema"),
    _rule(r"^settings\.reasoning(\..*)?$", "reasoning_effort"),
    _rule(r"^settings\.prompt_cache\.key$", "prompt_cache_key"),
    _rule(r"^settings\.prompt_cache\.cached_content$", "cached_content"),
    _rule(r"^settings\.(.+)$", r"\1"),
    _rule(r"^tools\[(\d+)\]\.(name|description|parameters)$", r"tools[\1].function.\2"),
    _rule(r"^tool_choice\.name$", "tool_choice.function.name"),
    _rule(r"^tool_choice\.allowed_tools(.*)$", r"tool_choice.allowed_tools.tools\1"),
    _rule(r"^tool_choice\.parallel_tool_calls$", "parallel_tool_calls"),
    _rule(r"^messages\[(\d+)\]\.tool_result\.tool_call_id$", r"messages[\1].tool_call_id"),
    _rule(r"^messages\[(\d+)\]\.tool_result\.parts\[(\d+)\]\.image\.url$", r"messages[\1].content[\2].image_url.url"),
    _rule(
        r"^messages\[(\d+)\]\.tool_result\.parts\[(\d+)\]\.image\.detail$", r"messages[\1].content[\2].image_url.detail"
    ),
    _rule(r"^messages\[(\d+)\]\.tool_result\.parts\[(\d+)\].*$", r"messages[\1].content[\2]"),
    _rule(r"^messages\[(\d+)\]\.tool_result.*$", r"messages[\1].content"),
    _rule(r"^messages\[(\d+)\]\.tool_calls\[(\d+)\]\.name$", r"messages[\1].tool_calls[\2].function.name"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.image\.url$", r"messages[\1].content[\2].image_url.url"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.image\.detail$", r"messages[\1].content[\2].image_url.detail"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.document\.(file_id|filename)$", r"messages[\1].content[\2].file.\3"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.document(?:\..*)?$", r"messages[\1].content[\2].file.file_data"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.audio\.data$", r"messages[\1].content[\2].input_audio.data"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.audio(?:\..*)?$", r"messages[\1].content[\2].input_audio.format"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.image(?:\..*)?$", r"messages[\1].content[\2].image_url"),
    # Reasoning parts lead an assistant turn's content, in reasoning_details order.
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\]\.reasoning(.*)$", r"messages[\1].reasoning_details[\2]\3"),
    _rule(r"^messages\[(\d+)\]\.content\[(\d+)\](.*)$", _content),
    _rule(r"^routing\.fallback_models(.*)$", _fallbacks),
    _rule(r"^routing\.per_attempt_timeout$", "llmmesh.per_attempt_timeout_ms"),
    _rule(r"^routing\.hedge_delay$", "llmmesh.hedge_delay_ms"),
    _rule(r"^routing\.(.+)$", r"llmmesh.\1"),
    _rule(r"^extensions\.(.+)$", r"llmmesh.extensions.\1"),
    _rule(r"^caller\.user$", lambda _m, fields: fields.user_field),
    _rule(r"^caller\.labels(.*)$", r"metadata\1"),
]


_LEGACY_RULES: list[_Rule] = [
    _rule(r"^tools\[(\d+)\]\.(name|description|parameters)$", r"functions[\1].\2"),
    _rule(r"^tools(.*)$", r"functions\1"),
    _rule(r"^tool_choice.*$", "function_call"),
]
_MESSAGE_INDEX = re.compile(r"^messages\[(\d+)\]")


def openai_param(path: str, fields: BodyFields | None = None) -> str:
    """The OpenAI request field for a router field path (`settings.top_p` → `top_p`)."""
    fields = fields or BodyFields()
    rules = [*_LEGACY_RULES, *_RULES] if fields.legacy_functions else _RULES
    for pattern, replacement in rules:
        match = pattern.match(path)
        if match is None:
            continue
        if isinstance(replacement, str):
            return _caller_index(match.expand(replacement), fields)
        return _caller_index(replacement(match, fields), fields)
    return _caller_index(path, fields)


def _caller_index(param: str, fields: BodyFields) -> str:
    """`messages[i]` of the router request → the caller's index (turns that said nothing were left out)."""
    match = _MESSAGE_INDEX.match(param)
    if match is None or not fields.message_indices:
        return param
    index = int(match.group(1))
    if index >= len(fields.message_indices):
        return param
    return f"messages[{fields.message_indices[index]}]{param[match.end() :]}"

"""OpenAI SDK failures → MeshError, per the table in docs/errors.md.

Besides the SDK's own classes this covers what escapes them (docs/sdk-notes.md):
an in-stream error event is a bare `openai.APIError` without a status, and
raw httpx2 / anyio / JSON errors can surface while a body is read or parsed.
Upstream text is kept as the upstream sent it here; ProviderServicer redacts
every error with the adapter's Redactor (OpenAI echoes a masked key in its
401 text).
"""

from __future__ import annotations

import difflib
import json
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import grpc
import httpx2
import openai
import pydantic

from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_RATE_LIMITED,
    REASON_UPSTREAM_TIMEOUT,
    REASON_UPSTREAM_UNAVAILABLE,
    MeshError,
)
from services.providers.upstream_errors import error_for_status, malformed_response

PROVIDER = "openai"

_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
_RATE_LIMIT_CODES = frozenset({"rate_limit_exceeded", "insufficient_quota", "rate_limit_error"})
_RATE_LIMIT_TYPES = frozenset({"rate_limit_error", "requests", "tokens", "insufficient_quota"})

#: Exceptions that can escape the SDK's own classes while a body is read or parsed.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx2.HTTPError,
    httpx2.StreamError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ssl.SSLError,
    ConnectionError,
)
#: A 200 whose body is not what the API promises (proxy pages, broken servers).
MALFORMED_ERRORS: tuple[type[Exception], ...] = (json.JSONDecodeError, pydantic.ValidationError)

#: Everything the adapter catches around SDK calls; anything else is our bug (INTERNAL).
UPSTREAM_ERRORS: tuple[type[Exception], ...] = (openai.OpenAIError, *TRANSPORT_ERRORS, *MALFORMED_ERRORS)


def mesh_error(error: BaseException, *, model: str = "", served_models: Iterable[str] = ()) -> MeshError:
    """The MeshError for any failure raised while talking to the upstream."""
    if isinstance(error, MeshError):
        return error
    if isinstance(error, (openai.APITimeoutError, httpx2.TimeoutException)):
        return MeshError(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"{PROVIDER}: upstream timed out", reason=REASON_UPSTREAM_TIMEOUT
        )
    if isinstance(error, openai.APIStatusError):
        return _status_error(error, model=model, served_models=served_models)
    if isinstance(error, openai.APIConnectionError):
        cause = type(error.__cause__).__name__ if error.__cause__ else "connection error"
        return MeshError(
            grpc.StatusCode.UNAVAILABLE,
            f"{PROVIDER}: cannot reach the upstream ({cause})",
            reason=REASON_UPSTREAM_UNAVAILABLE,
        )
    if isinstance(error, openai.APIError):
        # An error event inside a 200 stream: no status, only the body.
        return _stream_error(error)
    if isinstance(error, TRANSPORT_ERRORS):
        return MeshError(
            grpc.StatusCode.UNAVAILABLE,
            f"{PROVIDER}: upstream connection failed ({type(error).__name__})",
            reason=REASON_UPSTREAM_UNAVAILABLE,
        )
    if isinstance(error, MALFORMED_ERRORS):
        return malformed(f"unreadable upstream response ({type(error).__name__})")
    if isinstance(error, openai.OpenAIError):
        return MeshError(grpc.StatusCode.UNAVAILABLE, f"{PROVIDER}: {error}", reason=REASON_UPSTREAM_UNAVAILABLE)
    raise TypeError(f"not an upstream error: {type(error).__name__}") from error


def malformed(what: str) -> MeshError:
    """A 200 we cannot use: the upstream is broken, which a retry elsewhere may fix."""
    return malformed_response(PROVIDER, what)


def _status_error(error: openai.APIStatusError, *, model: str, served_models: Iterable[str]) -> MeshError:
    body = error.body if isinstance(error.body, Mapping) else {}
    message = _body_message(body) or error.message
    code = (error.code or "").lower()
    result = error_for_status(
        error.status_code,
        message,
        provider=PROVIDER,
        headers=dict(error.response.headers),
        reason=_reason_for(code, str(body.get("type") or "")),
    )
    if error.status_code == 404:
        result.message += _close_matches(model, served_models)
    result.metadata.update(_metadata(error.status_code, body, error.request_id))
    return result


def _stream_error(error: openai.APIError) -> MeshError:
    body = error.body if isinstance(error.body, Mapping) else {}
    message = _body_message(body) or error.message
    code = (error.code or "").lower()
    reason = _reason_for(code, str(body.get("type") or ""))
    # Status 0 means "no HTTP status": UNAVAILABLE unless the body says better.
    result = error_for_status(0, f"error event in stream: {message}", provider=PROVIDER, reason=reason)
    result.metadata.update(_metadata(0, body, None))
    return result


def _reason_for(code: str, error_type: str) -> str:
    if code in _CONTEXT_CODES:
        return REASON_CONTEXT_WINDOW_EXCEEDED
    if code in _CONTENT_FILTER_CODES:
        return REASON_CONTENT_FILTERED
    if code in _RATE_LIMIT_CODES or error_type in _RATE_LIMIT_TYPES:
        return REASON_RATE_LIMITED
    return ""


def _body_message(body: Mapping[str, Any]) -> str:
    message = body.get("message")
    return message if isinstance(message, str) else ""


def _metadata(status: int, body: Mapping[str, Any], request_id: str | None) -> dict[str, str]:
    metadata = {"provider": PROVIDER}
    if status:
        metadata["upstream_status"] = str(status)
    for key in ("code", "type", "param"):
        value = body.get(key)
        if isinstance(value, str) and value:
            metadata[f"upstream_{key}"] = value[:128]
    if request_id:
        metadata["upstream_request_id"] = request_id
    return metadata


def _close_matches(model: str, served_models: Iterable[str]) -> str:
    served = [name for name in served_models if name != model]
    if not served:
        return ""
    matches = difflib.get_close_matches(model, served, n=3, cutoff=0.5)
    if matches:
        return f" (close matches served here: {', '.join(matches)})"
    return f" (served here: {', '.join(served[:5])})"

"""google-genai failures → MeshError, per the table in docs/errors.md.

The SDK raises `errors.ClientError` / `errors.ServerError` with `.code` (the
HTTP status, or the code of an in-stream error event) and the JSON error
body in `.details`. Some faults escape those classes: httpx2 timeouts and
dropped connections come through raw. Gemini sends no Retry-After header;
its retry delay is a google.rpc.RetryInfo detail in the error body.
"""

from __future__ import annotations

import difflib
import json
import re
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import httpx2
import pydantic
from google.genai import errors

from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_PROVIDER_AUTH,
    REASON_UPSTREAM_TIMEOUT,
    REASON_UPSTREAM_UNAVAILABLE,
    MeshError,
)
from services.providers.upstream_errors import SHAPE_ERRORS, error_for_status, malformed_response

PROVIDER = "google"
#: What the SDK call may raise for an upstream fault; anything else is our bug.
UPSTREAM_ERRORS: tuple[type[Exception], ...] = (
    errors.APIError,
    errors.UnknownApiResponseError,
    httpx2.HTTPError,
    json.JSONDecodeError,
    pydantic.ValidationError,
)
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
# Gemini answers a bad key with 400 INVALID_ARGUMENT and one of these ErrorInfo reasons.
_BAD_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
# google-genai's converters of response bodies (models.py, _common.py).
_CONVERTS_RESPONSE = re.compile(r"_from_mldev$|_from_vertex$|^_from_response$")


def map_sdk_error(error: Exception, *, served_models: Sequence[str] = (), model: str = "") -> MeshError:
    """The MeshError for one of UPSTREAM_ERRORS raised by the SDK call."""
    if isinstance(error, errors.APIError):
        return _api_error(error, served_models=served_models, model=model)
    if isinstance(error, httpx2.TimeoutException):
        return MeshError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{PROVIDER}: upstream did not answer in time ({type(error).__name__})",
            reason=REASON_UPSTREAM_TIMEOUT,
        )
    if isinstance(error, httpx2.HTTPError):
        return MeshError(
            grpc.StatusCode.UNAVAILABLE,
            f"{PROVIDER}: connection to upstream failed ({type(error).__name__}: {error})",
            reason=REASON_UPSTREAM_UNAVAILABLE,
        )
    # A body the SDK could not parse (UnknownApiResponseError, JSON or pydantic errors).
    return malformed_response(PROVIDER, f"upstream sent a response the SDK could not read ({type(error).__name__})")


def is_codeless_stream_error(error: Exception) -> bool:
    """The SDK's TypeError on an in-stream error event that has no numeric `code`.

    google-genai compares the event's code with 400 (`400 <= None`) and fails
    inside its own errors module; that is still an upstream fault.
    """
    if not isinstance(error, TypeError):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.replace("\\", "/").endswith("google/genai/errors.py")


def is_response_shape_error(error: Exception) -> bool:
    """A shape error the SDK raised while converting a response body (`*_from_mldev`, `_from_response`).

    google-genai walks the JSON before validating it, so a body of the wrong
    shape (`"candidates": 5`) fails there with a TypeError or AttributeError,
    not with a pydantic error. Raised in those converters, it is the
    upstream's fault; anywhere else (our request mapping) it stays a bug.
    """
    if not isinstance(error, SHAPE_ERRORS):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return any(
        "/google/genai/" in frame.filename.replace("\\", "/") and _CONVERTS_RESPONSE.search(frame.name)
        for frame in frames
    )


def escaped_sdk_error(error: Exception) -> Exception:
    """For an exception outside UPSTREAM_ERRORS: the MeshError when it is still the upstream's fault, else itself."""
    if is_codeless_stream_error(error):
        return codeless_stream_error()
    if is_response_shape_error(error):
        return malformed_response(PROVIDER, f"upstream sent a response of the wrong shape ({type(error).__name__})")
    return error


def codeless_stream_error() -> MeshError:
    return MeshError(
        grpc.StatusCode.UNAVAILABLE,
        f"{PROVIDER}: upstream sent an error event without a code in the stream",
        reason=REASON_UPSTREAM_UNAVAILABLE,
    )


def prompt_blocked(block_reason: str, message: str) -> MeshError:
    """Gemini refused the prompt itself (prompt_feedback.block_reason)."""
    detail = f": {message}" if message else ""
    return MeshError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"{PROVIDER}: prompt blocked by content policy ({block_reason}){detail}",
        reason=REASON_CONTENT_FILTERED,
        metadata={"block_reason": block_reason},
    )


def _api_error(error: errors.APIError, *, served_models: Sequence[str], model: str) -> MeshError:
    status = int(error.code or 0)
    body = error.details if isinstance(error.details, Mapping) else {}
    detail_list = _details(body)
    message = str(error.message or error.status or "")
    headers = _headers(error)
    retry_delay = _retry_delay(detail_list)
    if retry_delay is not None and "retry-after" not in {key.lower() for key in headers}:
        headers["retry-after"] = str(retry_delay)
    if status == 400 and _error_reasons(detail_list) & _BAD_KEY_REASONS:
        return MeshError(grpc.StatusCode.UNAUTHENTICATED, f"{PROVIDER}: {message}", reason=REASON_PROVIDER_AUTH)
    if status == 404 and served_models:
        close = difflib.get_close_matches(model, served_models, n=3, cutoff=0.5)
        if close:
            message = f"{message} (close matches: {', '.join(close)})"
    return error_for_status(status, message, provider=PROVIDER, headers=headers)


def _details(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    inner = body.get("error", body)
    details = inner.get("details") if isinstance(inner, Mapping) else None
    return [item for item in details or [] if isinstance(item, Mapping)]


def _error_reasons(details: list[Mapping[str, Any]]) -> set[str]:
    return {str(item.get("reason", "")) for item in details if item.get("@type") == _ERROR_INFO}


def _retry_delay(details: list[Mapping[str, Any]]) -> float | None:
    """Seconds from a RetryInfo detail ("retryDelay": "27s", protobuf JSON Duration)."""
    for item in details:
        if item.get("@type") != _RETRY_INFO:
            continue
        match = _DURATION.match(str(item.get("retryDelay", "")).strip())
        if match:
            return float(match.group(1))
    return None


def _headers(error: errors.APIError) -> dict[str, str]:
    response = getattr(error, "response", None)
    raw = getattr(response, "headers", None)
    if raw is None:
        return {}
    # Only what error_for_status reads: never copy request or auth headers around.
    return {key: value for key, value in raw.items() if key.lower() in ("retry-after", "retry-after-ms")}

"""Anthropic SDK failures → MeshError, and rate-limit headers → headroom.

Besides the SDK's own classes this knows the faults that escape them (see
docs/sdk-notes.md): an in-stream `error` event arrives as a plain APIStatusError
with status 200 (mapped by its error type), and a connection cut mid-stream
arrives as a raw httpx2 exception, not wrapped in an Anthropic error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import anthropic
import grpc
import httpx2

from llmmesh.v1 import chat_pb2
from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_UPSTREAM_TIMEOUT,
    REASON_UPSTREAM_UNAVAILABLE,
    MeshError,
)
from services.providers.anthropic.mapping import PROVIDER
from services.providers.upstream_errors import error_for_status, headroom_from_headers, malformed_response

# Anthropic error types (types/shared/error_type.py) → the HTTP status they come with,
# for errors that arrive inside a 200 stream.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "api_error": 500,
    "overloaded_error": 529,
}
_POLICY_HINTS = re.compile(r"usage polic|content polic|violat", re.IGNORECASE)


def map_error(error: BaseException) -> MeshError:
    """The MeshError for any upstream failure; never UNKNOWN or INTERNAL."""
    if isinstance(error, anthropic.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return MeshError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "anthropic: upstream did not answer within the time left",
            reason=REASON_UPSTREAM_TIMEOUT,
        )
    if isinstance(error, anthropic.APIStatusError):
        return _status_error(error)
    if isinstance(error, anthropic.APIConnectionError | httpx2.HTTPError):
        # httpx2.HTTPError covers RemoteProtocolError / ReadError raised mid-stream, unwrapped.
        return MeshError(
            grpc.StatusCode.UNAVAILABLE,
            f"anthropic: connection to upstream failed ({type(error).__name__})",
            reason=REASON_UPSTREAM_UNAVAILABLE,
        )
    # APIResponseValidationError, undecodable stream events: the upstream sent garbage.
    return malformed_response(PROVIDER, f"upstream sent a response the SDK could not read ({type(error).__name__})")


def _status_error(error: anthropic.APIStatusError) -> MeshError:
    status = error.status_code
    if status < 400:
        # An `error` event inside a 200 stream: classify by its error type.
        status = _STATUS_OF_TYPE.get(error.type or "", 500)
    if status == 402:
        # Billing problems are the key's account, like a bad key: never retried, breaker opens.
        status = 403
    message = error.api_message or f"HTTP {error.status_code}"
    if error.type:
        message = f"{error.type}: {message}"
    reason = REASON_CONTENT_FILTERED if status == 400 and _POLICY_HINTS.search(message) else ""
    return error_for_status(status, message, provider=PROVIDER, headers=error.response.headers, reason=reason)


def headroom(headers: Mapping[str, str]) -> chat_pb2.RateLimitHeadroom:
    """Anthropic's rate-limit headers; reset times are RFC 3339."""
    return headroom_from_headers(
        headers,
        remaining_requests="anthropic-ratelimit-requests-remaining",
        limit_requests="anthropic-ratelimit-requests-limit",
        remaining_tokens="anthropic-ratelimit-tokens-remaining",
        limit_tokens="anthropic-ratelimit-tokens-limit",
        requests_reset="anthropic-ratelimit-requests-reset",
        tokens_reset="anthropic-ratelimit-tokens-reset",
    )

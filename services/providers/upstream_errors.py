"""Upstream HTTP facts → llmmesh errors and headroom, shared by the SDK adapters.

Adapters identify the SDK exception, then call `error_for_status` with the
HTTP status, the provider's message and headers; the docs/errors.md table lives
here once instead of once per provider. A 200 whose body cannot be used
(broken JSON, a foreign content type, the wrong shape) is `malformed_response`:
UNAVAILABLE, so the router retries or falls back. `reading_body` wraps the
code that maps a body, because the SDKs build response objects without
validating them and a field of the wrong type fails only when it is read.
Redaction of the text is not done here: ProviderServicer applies the
adapter's Redactor to every error that leaves the adapter.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import re
import time
import traceback
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import grpc
import structlog

from llmmesh.v1 import chat_pb2
from services.common.errors import (
    REASON_CONTENT_FILTERED,
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_INVALID_REQUEST,
    REASON_MODEL_NOT_FOUND,
    REASON_PROVIDER_AUTH,
    REASON_RATE_LIMITED,
    REASON_UPSTREAM_MALFORMED,
    REASON_UPSTREAM_TIMEOUT,
    REASON_UPSTREAM_UNAVAILABLE,
    MeshError,
)

log = structlog.get_logger(__name__)

#: What reading a body of the wrong shape raises in mapping code (a list where an
#: object was promised, a number for a string, a missing key).
SHAPE_ERRORS: tuple[type[Exception], ...] = (AttributeError, TypeError, KeyError, IndexError, ValueError)

_CONTEXT_WINDOW_HINTS = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long|"
    r"input token count .* exceeds|exceeds the maximum number of tokens",
    re.IGNORECASE,
)


def looks_like_context_window(message: str) -> bool:
    """Providers say "context window exceeded" in prose; this knows their phrasings."""
    return bool(_CONTEXT_WINDOW_HINTS.search(message))


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    reason: str = "",
) -> MeshError:
    """Maps an upstream HTTP status (plus a known reason) to a MeshError.

    `reason` may pre-classify what the status alone cannot tell, e.g.
    REASON_CONTEXT_WINDOW_EXCEEDED or REASON_CONTENT_FILTERED for a 400.
    """
    text = f"{provider}: {message}" if message else f"{provider}: HTTP {status}"
    retry_after = parse_retry_after(headers or {})
    if reason == REASON_CONTEXT_WINDOW_EXCEEDED or (status in (400, 413) and looks_like_context_window(message)):
        return MeshError(grpc.StatusCode.INVALID_ARGUMENT, text, reason=REASON_CONTEXT_WINDOW_EXCEEDED)
    if reason == REASON_CONTENT_FILTERED:
        return MeshError(grpc.StatusCode.FAILED_PRECONDITION, text, reason=REASON_CONTENT_FILTERED)
    if status == 401:
        return MeshError(grpc.StatusCode.UNAUTHENTICATED, text, reason=REASON_PROVIDER_AUTH)
    if status == 403:
        return MeshError(grpc.StatusCode.PERMISSION_DENIED, text, reason=REASON_PROVIDER_AUTH)
    if status == 404:
        return MeshError(grpc.StatusCode.NOT_FOUND, text, reason=REASON_MODEL_NOT_FOUND)
    if status in (408, 504):
        return MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, text, reason=REASON_UPSTREAM_TIMEOUT)
    if status == 429 or status == 529 or reason == REASON_RATE_LIMITED:
        return MeshError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, text, reason=reason or REASON_RATE_LIMITED, retry_after=retry_after
        )
    if status >= 500 or status == 0:
        return MeshError(
            grpc.StatusCode.UNAVAILABLE, text, reason=reason or REASON_UPSTREAM_UNAVAILABLE, retry_after=retry_after
        )
    return MeshError(grpc.StatusCode.INVALID_ARGUMENT, text, reason=reason or REASON_INVALID_REQUEST)


def malformed_response(provider: str, what: str) -> MeshError:
    """A 200 we cannot use: the upstream (or a proxy before it) is broken; another candidate may answer."""
    return MeshError(grpc.StatusCode.UNAVAILABLE, f"{provider}: {what}", reason=REASON_UPSTREAM_MALFORMED)


@contextlib.contextmanager
def reading_body(provider: str) -> Iterator[None]:
    """Turns a shape error raised while mapping a 200 body into `malformed_response`.

    Wrap only the mapping of upstream data, never a `yield` to the caller.
    The log names the exception type and where it was raised (our bugs stay
    findable), never the body.
    """
    try:
        yield
    except MeshError:
        raise
    except SHAPE_ERRORS as error:
        log.warning(
            "upstream body of the wrong shape", provider=provider, error_type=type(error).__name__, at=_raised_at(error)
        )
        raise malformed_response(
            provider, f"upstream sent a response of the wrong shape ({type(error).__name__})"
        ) from None


def check_event_stream(provider: str, headers: Mapping[str, str]) -> None:
    """A streaming request answered 200 with something other than SSE (a proxy's page, a JSON body)."""
    content_type = next((value for key, value in headers.items() if key.lower() == "content-type"), "")
    if content_type and "event-stream" not in content_type.lower():
        kind = content_type.split(";")[0].strip()[:64]
        raise malformed_response(provider, f"upstream answered a streaming request with {kind}, not an event stream")


def _raised_at(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


#: A longer Retry-After is clamped: nobody waits a day inside one request, and
#: a huge value must not overflow the RetryInfo duration.
MAX_RETRY_AFTER_SECONDS = 3600.0


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (delta seconds or HTTP date); None when unreadable.

    Providers and proxies send garbage (`30s`, prose, `inf`, `nan`, dates that
    are not dates): an unreadable value is ignored, a negative one is 0 and a
    huge one is clamped, so the error keeps its own code and never becomes
    INTERNAL.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    from_ms = _delay_seconds(lowered.get("retry-after-ms", ""), scale=0.001)
    if from_ms is not None:
        return from_ms
    raw = lowered.get("retry-after", "").strip()
    if not raw:
        return None
    seconds = _delay_seconds(raw, scale=1.0)
    if seconds is None:
        seconds = _http_date_delay(raw)
    return seconds


def _delay_seconds(raw: str, *, scale: float) -> float | None:
    try:
        value = float(raw) * scale
    except ValueError:
        return None
    return _clamped(value)


def _http_date_delay(raw: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
        seconds = parsed.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _clamped(seconds)


def _clamped(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str) -> float | None:
    """OpenAI-style reset durations ("1s", "6m0s", "120ms") or RFC 3339 times, in seconds."""
    value = value.strip()
    if not value:
        return None
    parts = _DURATION_PART.findall(value)
    if parts and "".join(f"{n}{u}" for n, u in parts) == value:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(number) * scale[unit] for number, unit in parts)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - time.time(), 0.0)
    except ValueError:
        return None


def headroom_from_headers(
    headers: Mapping[str, str],
    *,
    remaining_requests: str,
    limit_requests: str,
    remaining_tokens: str,
    limit_tokens: str,
    requests_reset: str,
    tokens_reset: str,
) -> chat_pb2.RateLimitHeadroom:
    """Reads a provider's rate-limit headers (names given per provider)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    headroom = chat_pb2.RateLimitHeadroom()
    for field, header in (
        ("remaining_requests", remaining_requests),
        ("limit_requests", limit_requests),
        ("remaining_tokens", remaining_tokens),
        ("limit_tokens", limit_tokens),
    ):
        raw = lowered.get(header)
        if raw is not None and raw.strip().isdigit():
            setattr(headroom, field, int(raw))
    for field, header in (("requests_reset", requests_reset), ("tokens_reset", tokens_reset)):
        seconds = parse_reset(lowered.get(header, ""))
        if seconds is not None:
            getattr(headroom, field).FromNanoseconds(int(seconds * 1e9))
    return headroom

"""Rich gRPC errors: one exception type, mapped to and from google.rpc.Status.

Every llmmesh service raises `MeshError` for anything a caller should see;
`handle_errors` turns it into a status with ErrorInfo / RetryInfo / BadRequest
details, and turns anything unexpected into INTERNAL (never UNKNOWN).
`MeshError.from_rpc_error` reads those details back on the calling side.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "llmmesh.dev"
# Far below google.protobuf.Duration's limit; a day is more than any caller waits.
_MAX_RETRY_DELAY_SECONDS = 86400.0
_DETAILS_KEY = "grpc-status-details-bin"

log = structlog.get_logger(__name__)

# Stable ErrorInfo reasons callers and the router may branch on.
REASON_CONTEXT_WINDOW_EXCEEDED = "CONTEXT_WINDOW_EXCEEDED"
REASON_CONTENT_FILTERED = "CONTENT_FILTERED"
REASON_RATE_LIMITED = "RATE_LIMITED"
REASON_PROVIDER_AUTH = "PROVIDER_AUTH_FAILED"
REASON_MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
REASON_INVALID_REQUEST = "INVALID_REQUEST"
# The candidate cannot serve a feature the request uses; another candidate may.
REASON_UNSUPPORTED_FEATURE = "UNSUPPORTED_FEATURE"
REASON_UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
REASON_UPSTREAM_MALFORMED = "UPSTREAM_MALFORMED_RESPONSE"
REASON_UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
REASON_STREAM_TRUNCATED = "STREAM_TRUNCATED"
REASON_OVERLOADED = "ADAPTER_OVERLOADED"
REASON_NO_INSTANCE = "NO_HEALTHY_INSTANCE"
REASON_INTERNAL = "INTERNAL"
# The provider (or the model) offers no embeddings.
REASON_EMBEDDINGS_UNSUPPORTED = "EMBEDDINGS_UNSUPPORTED"


class MeshError(Exception):
    """An error with a gRPC code and the rich details of docs/errors.md."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.field = field

    def __repr__(self) -> str:
        return f"MeshError({self.code.name}, {self.message!r}, reason={self.reason!r})"

    def to_status(self) -> grpc.Status:
        details: list[Any] = []
        if self.reason:
            details.append(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata))
        # A delay that is not a finite number of seconds is no delay at all (it must not crash the status).
        if self.retry_after is not None and math.isfinite(self.retry_after):
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(min(max(self.retry_after, 0.0), _MAX_RETRY_DELAY_SECONDS) * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        if self.field is not None:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)
                    ]
                )
            )
        packed = []
        for detail in details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=self.message, details=packed))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> MeshError:
        """Rebuilds a MeshError, details included, from a failed call."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        result = cls(code or grpc.StatusCode.UNKNOWN, message or "")
        trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        for key, value in trailers or ():
            if key != _DETAILS_KEY:
                continue
            status = status_pb2.Status.FromString(value)
            for holder in status.details:
                if holder.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    holder.Unpack(info)
                    result.reason = info.reason
                    result.metadata = dict(info.metadata)
                elif holder.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry = error_details_pb2.RetryInfo()
                    holder.Unpack(retry)
                    result.retry_after = retry.retry_delay.ToNanoseconds() / 1e9
                elif holder.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    holder.Unpack(bad)
                    if bad.field_violations:
                        result.field = bad.field_violations[0].field
        return result


def invalid_argument(field: str, message: str) -> MeshError:
    """INVALID_ARGUMENT naming `field`; `message` should say how to fix it."""
    return MeshError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{field}: {message}",
        reason=REASON_INVALID_REQUEST,
        field=field,
    )


def unsupported_feature(field: str, message: str) -> MeshError:
    """INVALID_ARGUMENT (UNSUPPORTED_FEATURE) naming `field`: this provider lacks it, another may have it.

    The router moves on to the next candidate; the caller sees it only when
    no candidate could serve the request.
    """
    return MeshError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{field}: {message}",
        reason=REASON_UNSUPPORTED_FEATURE,
        field=field,
    )


def code_from_number(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode for a google.rpc.Code number."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
assert grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] == code_pb2.RESOURCE_EXHAUSTED

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def handle_errors(method: _Handler) -> _Handler:
    """Servicer decorator: MeshError → rich status; anything else → INTERNAL.

    Works for unary methods (coroutines) and server-streaming methods (async
    generators). Cancellation passes through untouched.
    """
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except MeshError as error:
                await context.abort_with_status(error.to_status())
            except Exception as error:  # noqa: BLE001 - last line of defence; logged, never UNKNOWN
                await _abort_internal(context, method.__qualname__, error)

        return cast(_Handler, streaming)

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await cast(Callable[..., Awaitable[Any]], method)(self, request, context)
        except MeshError as error:
            await context.abort_with_status(error.to_status())
        except Exception as error:  # noqa: BLE001 - last line of defence; logged, never UNKNOWN
            await _abort_internal(context, method.__qualname__, error)

    return cast(_Handler, unary)


async def _abort_internal(context: grpc.aio.ServicerContext, where: str, error: Exception) -> None:
    if isinstance(error, grpc.aio.AbortError):
        raise error
    log.error("unhandled error", where=where, error_type=type(error).__name__, exc_info=error)
    status = MeshError(
        grpc.StatusCode.INTERNAL,
        f"internal error in {where} ({type(error).__name__}); see the service log",
        reason=REASON_INTERNAL,
    ).to_status()
    await context.abort_with_status(status)

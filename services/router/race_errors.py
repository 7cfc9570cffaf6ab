"""The errors a race hands to callers, and how an attempt reads in one."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from llmmesh.v1 import router_service_pb2 as rpb
from services.common.auth import REASON_NOT_ROUTER
from services.common.errors import (
    REASON_INTERNAL,
    REASON_PROVIDER_AUTH,
    REASON_UPSTREAM_TIMEOUT,
    REASON_UPSTREAM_UNAVAILABLE,
    MeshError,
    code_from_number,
)
from services.router.attempts import AUTH_CODES

# An adapter refused the router itself (token or client certificate): the mesh's settings are wrong.
REASON_MESH_MISCONFIGURED = "MESH_MISCONFIGURED"

_DEFAULT_REASONS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: REASON_UPSTREAM_TIMEOUT,
    grpc.StatusCode.UNAVAILABLE: REASON_UPSTREAM_UNAVAILABLE,
    grpc.StatusCode.CANCELLED: REASON_UPSTREAM_UNAVAILABLE,
}


def caller_error(error: MeshError, message: str, extra: Mapping[str, str] | None = None) -> MeshError:
    """The error as callers see it, always with a reason; `extra` joins its ErrorInfo metadata.

    A provider's credential problem is the operator's to fix, not the
    caller's: FAILED_PRECONDITION. A transport failure between router and
    adapter (no ErrorInfo) gets the reason of its class.
    """
    metadata = {**error.metadata, **(extra or {})}
    if error.reason == REASON_NOT_ROUTER:
        return MeshError(grpc.StatusCode.FAILED_PRECONDITION, message, reason=REASON_MESH_MISCONFIGURED, metadata=extra)
    if error.code in AUTH_CODES:
        return MeshError(grpc.StatusCode.FAILED_PRECONDITION, message, reason=REASON_PROVIDER_AUTH, metadata=extra)
    return MeshError(
        error.code,
        message,
        reason=error.reason or _DEFAULT_REASONS.get(error.code, REASON_INTERNAL),
        metadata=metadata,
        retry_after=error.retry_after,
        field=error.field,
    )


def describe(attempt: rpb.Attempt) -> str:
    """One attempt as a line of an error message."""
    outcome = rpb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
    where = f"{attempt.model}@{attempt.provider}" + (f" {attempt.instance}" if attempt.instance else "")
    code = f" {code_from_number(attempt.code).name}" if attempt.outcome == rpb.ATTEMPT_OUTCOME_FAILED else ""
    return (
        f"{where}: {outcome}{code}"
        + (f" ({attempt.message})" if attempt.message else "")
        + (f" -> {attempt.moved_on_because}" if attempt.moved_on_because else "")
    )

"""One caller request's telemetry, the same at both doors: `Served`.

Every request the router answers or refuses, at either door, is one record:
gRPC Chat, StreamChat and Embed open it in `RequestTelemetryInterceptor`
(before caller auth, so refused keys count too); the HTTP door opens it when
a chat, responses or embeddings request arrives. Admission (admission.py)
names the request's model, call shape and tenant on it; the door notes the
answer (or stream events, for time to first token) and finishes it once,
with the code that ended the request. The record writes in-flight, duration,
TTFT, the request counter, tokens and cost (metrics.py) and, when
LLMMESH_ACCESS_LOG is on, one `request` log line without content.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc
import structlog
from opentelemetry import trace

from llmmesh.v1 import router_service_pb2 as rpb
from services.common import telemetry_genai as genai
from services.common import telemetry_names as names
from services.common.auth import current_tenant
from services.common.errors import MeshError
from services.common.tenants import Tenant
from services.router import auto
from services.router.config import RoutingTable
from services.router.metrics import RouterMetrics, router_metrics

access_log = structlog.get_logger("llmmesh.access")

DOOR_GRPC = "grpc"
# The caller's correlation id, as gRPC metadata and as an HTTP header (the HTTP door answers with its own id).
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
DOOR_HTTP = "http"
Answer: TypeAlias = rpb.ChatResponse | rpb.StreamChatFinal

# RouterService methods that are caller requests: (operation, streamed).
_RECORDED = {
    "/llmmesh.v1.RouterService/Chat": (names.OPERATION_CHAT, False),
    "/llmmesh.v1.RouterService/StreamChat": (names.OPERATION_CHAT, True),
    "/llmmesh.v1.RouterService/Embed": (names.OPERATION_EMBEDDINGS, False),
}

_current: ContextVar[Served | None] = ContextVar("llmmesh_served", default=None)


def requested_model(table: RoutingTable, model: str) -> tuple[str, str]:
    """The requested model as the routing table names it and its provider; bounded label values."""
    if auto.is_auto(model):
        return "auto", ""
    candidate = table.lookup(model)
    if candidate is None:
        return names.MODEL_UNKNOWN, ""
    return candidate.name, candidate.provider


def served(table: RoutingTable, *, door: str, operation: str = names.OPERATION_CHAT, route: str = "") -> Served:
    """Opens the record of one caller request at `door` (grpc or http); `route` is the HTTP path."""
    return Served(router_metrics(), table, door=door, operation=operation, route=route)


def current_served(table: RoutingTable) -> Served:
    """The gRPC request's record (opened by the interceptor); a detached one, exporting nothing, without it."""
    record = _current.get()
    if record is None:
        record = Served(RouterMetrics.create_detached(), table, door=DOOR_GRPC, operation=names.OPERATION_CHAT)
    return record


class Served:
    """One caller request: in-flight, duration, TTFT, outcome, tokens, cost, span attributes, access log."""

    def __init__(
        self, current: RouterMetrics, table: RoutingTable, *, door: str, operation: str, route: str = ""
    ) -> None:
        self._metrics = current
        self._table = table
        self._span = trace.get_current_span()
        self._door = door
        self._operation = operation
        self._route = route
        self._started = time.perf_counter()
        # Empty until the request is read: HTTP refusals before the body (auth, bad JSON) name no model.
        self._requested = ""
        self._provider = ""  # the requested model's until an answer names its own: failures carry one too
        self._stream = False
        self._in_flight: tuple[tuple[str, str], ...] | None = None
        self._tenant: str | None = None
        self._answer: Answer | rpb.EmbedResponse | None = None
        self._paid: float | None = None  # embeddings: the cost of every answer paid for (fan-out)
        self._first_token: float | None = None
        self._failure: tuple[grpc.StatusCode, str] | None = None
        self._finished = False
        self._request_id = ""
        self._caller_labels: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        return self._finished

    def request(self, model: str, *, stream: bool, tenant: Tenant | None = None) -> None:
        """The requested model and call shape (and tenant, once known); counts the request in flight once."""
        self._requested, self._provider = requested_model(self._table, model)
        self._stream = stream
        if tenant is not None:
            self._tenant = tenant.name
        if self._in_flight is None and not self._finished:
            self._in_flight = ((names.DOOR, self._door), (names.CALL, self._call))
            self._metrics.in_flight.add(1, self._in_flight)

    def identify(self, request_id: str | None) -> None:
        """The caller's request id (`x-request-id`), for the access log and the span; one that could forge a
        log line or flood it (not 1 to 128 of [A-Za-z0-9._:-]) is left out."""
        if request_id and _REQUEST_ID.match(request_id):
            self._request_id = request_id
            self._span.set_attribute("llmmesh.request_id", request_id)

    def attribute(self, labels: Mapping[str, str]) -> None:
        """The caller's labels (CallerContext.labels, already validated), for the access log and the span."""
        self._caller_labels = dict(sorted(labels.items()))
        for key, value in self._caller_labels.items():
            self._span.set_attribute(f"llmmesh.label.{key}", value)

    @property
    def _call(self) -> str:
        return "stream" if self._stream else "unary"

    def event(self, event: rpb.StreamChatResponse) -> None:
        """A stream event: the first delta is the first token; the final one is the answer."""
        if self._first_token is None and event.HasField("delta"):
            self._first_token = time.perf_counter() - self._started
        elif event.HasField("final"):
            self.answered(event.final)

    def answered(self, answer: Answer) -> None:
        self._answer = answer
        self._provider = answer.provider
        genai.record_answer(
            self._span,
            usage=answer.usage,
            finish_reason=answer.finish_reason,
            response_model=answer.response_model,
            provider=answer.provider,
            extra={
                names.ROUTER_MODEL: answer.model,
                names.ROUTER_ATTEMPTS: len(answer.attempts),
                names.ROUTER_ESTIMATED_COST: answer.estimated_cost_usd,
            },
        )

    def embedded(self, response: rpb.EmbedResponse, paid: float) -> None:
        """An embeddings answer and the cost of every answer paid for."""
        self._answer = response
        self._provider = response.provider
        self._paid = paid
        genai.record_embeddings(
            self._span,
            input_tokens=response.usage.input_tokens,
            dimensions=response.dimensions,
            response_model=response.response_model,
            extra={
                names.GEN_AI_PROVIDER_NAME: response.provider,
                names.ROUTER_MODEL: response.model,
                names.ROUTER_ATTEMPTS: len(response.attempts),
                names.ROUTER_ESTIMATED_COST: response.estimated_cost_usd,
            },
        )

    def fail(self, error: BaseException) -> None:
        """What will end the request (the first failure wins), for a door that answers it with a response."""
        if self._failure is None:
            self._failure = outcome_of(error)

    def finish(self, error: BaseException | None = None, *, http_status: int | None = None) -> None:
        """Records the request's end (`error` or an earlier `fail`, else OK); later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        if error is not None:
            self.fail(error)
        code, message = self._failure or (grpc.StatusCode.OK, "")
        self._end(code, message, http_status)

    def finish_grpc(self, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
        """The gRPC end: the status the call was aborted with (handle_errors turns MeshError into an abort)."""
        if self._finished:
            return
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            self.finish(error)
            return
        code = _context_code(context)
        if code is not None and code != grpc.StatusCode.OK:
            self._failure = (code, _context_details(context))
        self.finish(error)

    def _end(self, code: grpc.StatusCode, message: str, http_status: int | None) -> None:
        seconds = time.perf_counter() - self._started
        if self._in_flight is not None:
            self._metrics.in_flight.add(-1, self._in_flight)
        if code != grpc.StatusCode.OK:
            genai.record_error(self._span, code, message)
        if self._tenant is None:
            tenant = current_tenant.get()
            self._tenant = tenant.name if tenant is not None else ""
        labels = self._labels(code.name)
        self._metrics.duration.record(seconds, labels)
        if self._first_token is not None:
            self._metrics.time_to_first_token.record(self._first_token, labels)
        self._count(code.name)
        if self._metrics.access_log:
            self._log(code.name, seconds, http_status)

    def _answered_model(self) -> str:
        return self._answer.model if self._answer is not None else ""

    def _labels(self, code: str) -> dict[str, str]:
        labels = {
            names.GEN_AI_OPERATION_NAME: self._operation,
            names.GEN_AI_REQUEST_MODEL: self._requested,
            names.GEN_AI_RESPONSE_MODEL: self._answered_model(),
            names.GEN_AI_PROVIDER_NAME: self._provider,
            names.DOOR: self._door,
            names.CALL: self._call,
            names.CODE: code,
        }
        if code != "OK":
            labels[names.ERROR_TYPE] = code
        return labels

    def _common(self) -> tuple[tuple[str, str], ...]:
        return (
            (names.GEN_AI_REQUEST_MODEL, self._requested),
            (names.GEN_AI_RESPONSE_MODEL, self._answered_model()),
            (names.GEN_AI_PROVIDER_NAME, self._provider),
            (names.TENANT, self._tenant or ""),
            (names.GEN_AI_OPERATION_NAME, self._operation),
        )

    def _count(self, code: str) -> None:
        common = self._common()
        self._metrics.requests.add(1, (*common, (names.DOOR, self._door), (names.CODE, code)))
        input_tokens, output_tokens, cost = self._usage()
        if self._answer is None:
            return
        self._metrics.tokens.add(input_tokens, (*common, (names.GEN_AI_TOKEN_TYPE, "input")))
        if self._operation == names.OPERATION_CHAT:
            self._metrics.tokens.add(output_tokens, (*common, (names.GEN_AI_TOKEN_TYPE, "output")))
        if cost:
            self._metrics.cost.add(cost, common)

    def _usage(self) -> tuple[int, int, float]:
        """Input and output tokens and cost of every answer paid for (a fan-out's alternatives too)."""
        answer = self._answer
        if answer is None:
            return 0, 0, 0.0
        if isinstance(answer, rpb.EmbedResponse):
            return answer.usage.input_tokens, 0, self._paid if self._paid is not None else answer.estimated_cost_usd
        answers: list[Any] = [answer, *answer.alternatives] if isinstance(answer, rpb.ChatResponse) else [answer]
        return (
            sum(one.usage.input_tokens for one in answers),
            sum(one.usage.output_tokens for one in answers),
            sum(one.estimated_cost_usd for one in answers),
        )

    def _log(self, code: str, seconds: float, http_status: int | None) -> None:
        input_tokens, output_tokens, cost = self._usage()
        fields: dict[str, Any] = {
            "door": self._door,
            "operation": self._operation,
            "call": self._call,
            "tenant": self._tenant or "",
            "model": self._requested,
            "answer_model": self._answered_model(),
            "provider": self._provider,
            "code": code,
            "latency_ms": round(seconds * 1000, 1),
            "ttft_ms": round(self._first_token * 1000, 1) if self._first_token is not None else None,
            "attempts": len(self._answer.attempts) if self._answer is not None else None,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost,
        }
        if self._route:
            fields["route"] = self._route
        if self._request_id:
            fields["request_id"] = self._request_id
        if self._caller_labels:
            fields["labels"] = self._caller_labels
        if http_status is not None:
            fields["http_status"] = http_status
        access_log.info("request", **fields)


def outcome_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code (and message, for the span) a request ended with."""
    if isinstance(error, MeshError):
        return error.code, error.message
    code = getattr(error, "code", None)  # the HTTP door's client-gone error (CANCELLED)
    if isinstance(code, grpc.StatusCode):
        return code, ""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED, "the caller went away"
    return grpc.StatusCode.INTERNAL, type(error).__name__


def _context_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    code = context.code()
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return code


def _context_details(context: grpc.aio.ServicerContext) -> str:
    details = context.details()
    return details.decode(errors="replace") if isinstance(details, bytes) else str(details or "")


class RequestTelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Opens a `Served` record around RouterService's caller requests, outside caller auth.

    It runs inside the tracing interceptor (the record names the server span)
    and outside auth and decoding checks, so refused calls are counted with
    the code they were refused with.
    """

    def __init__(self, table: RoutingTable) -> None:
        self._table = table

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        shape = _RECORDED.get(handler_call_details.method)  # type: ignore[attr-defined]
        if handler is None or shape is None:
            return handler
        operation, stream = shape
        if stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, operation))  # type: ignore[attr-defined]
        return handler._replace(unary_unary=self._unary(handler.unary_unary, operation))  # type: ignore[attr-defined]

    def _open(self, request: Any, context: grpc.aio.ServicerContext, operation: str, *, stream: bool) -> Served:
        record = served(self._table, door=DOOR_GRPC, operation=operation)
        record.identify(dict(context.invocation_metadata() or ()).get(REQUEST_ID_HEADER))
        # An undecodable request has no model: refused by DecodeGuardInterceptor, counted without one.
        model = getattr(request, "model", None)
        if isinstance(model, str):
            record.request(model, stream=stream)
        return record

    def _unary(self, behavior: Any, operation: str) -> Any:
        async def recorded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            record = self._open(request, context, operation, stream=False)
            token = _current.set(record)
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as caught:
                error = caught
                raise
            finally:
                _current.reset(token)
                record.finish_grpc(context, error)

        return recorded

    def _stream(self, behavior: Any, operation: str) -> Any:
        async def recorded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            record = self._open(request, context, operation, stream=True)
            token = _current.set(record)
            error: BaseException | None = None
            try:
                async for event in behavior(request, context):
                    yield event
            except BaseException as caught:
                error = caught
                raise
            finally:
                # ValueError: closed from another context (the generator finalised elsewhere).
                with contextlib.suppress(ValueError):
                    _current.reset(token)
                record.finish_grpc(context, error)

        return recorded

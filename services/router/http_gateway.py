"""The router's OpenAI-compatible HTTP front door.

Clients of the OpenAI API use the mesh by changing their base URL to
`http://<router>:<LLMMESH_HTTP_PORT>/v1`. Requests take the same path as
RouterService: the body becomes a router ChatRequest, goes through the same
validation, and runs on the same RouterEngine (resolution, fallbacks,
hedging, retries, breakers) with a deadline from `x-llmmesh-timeout`, else
the OpenAI SDK's own timeout for non-streaming calls, else the router
default. Errors come back in OpenAI's format and status codes
(openai_errors.py); streams are OpenAI SSE chunks that end in `[DONE]` only
when the router's stream ended with its final message — a failure after
output ends with an error event instead.

The server is uvicorn (httptools parser) serving Starlette, run as a task in
the router's own event loop; the router process keeps its signal handling
and stops it in MeshServer's shutdown (`begin_shutdown` before gRPC stops,
`wait_stopped` after).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import grpc
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmmesh.v1 import router_service_pb2 as rpb
from services.common.auth import current_tenant
from services.common.errors import (
    REASON_INTERNAL,
    REASON_STREAM_TRUNCATED,
    MeshError,
    invalid_argument,
)
from services.common.json_depth import too_deep
from services.common.settings import listen_error
from services.common.telemetry_names import OPERATION_EMBEDDINGS
from services.common.tenants import Tenant
from services.common.validation import MAX_REQUEST_BYTES
from services.router import embeddings_door, openai_response
from services.router.admission import Admission
from services.router.balancer import Balancer
from services.router.cors import CorsSettings, cors_middleware
from services.router.door_wire import ChatCompletionsWire, DoorWire, StreamWriter, error_response
from services.router.embeddings import EmbeddingRouter
from services.router.engine import RouterEngine
from services.router.http_limits import HttpDoorLimits, LimitedHttpToolsProtocol
from services.router.openai_errors import http_error
from services.router.openai_request import FALLBACK_HEADER, MAX_BODY_DEPTH, ParsedChat
from services.router.responses_api import ResponsesWire
from services.router.served import DOOR_HTTP, REQUEST_ID_HEADER, Served, served
from services.router.sse_keepalive import DEFAULT_KEEPALIVE, StreamKeepaliveSettings, until_settled

log = structlog.get_logger(__name__)

TIMEOUT_HEADER = "x-llmmesh-timeout"
# The OpenAI SDKs send their read timeout; for a non-streaming call that is how long the client waits.
SDK_TIMEOUT_HEADER = "x-stainless-read-timeout"
MAX_TIMEOUT_SECONDS = 86_400.0
# JSON and base64 images take more room than the protobuf request the router limits.
MAX_BODY_BYTES = 2 * MAX_REQUEST_BYTES
_STARTUP_SECONDS = 10.0

Authorize = Callable[[Request], Awaitable[None]]
"""The caller-auth seam: raise MeshError(UNAUTHENTICATED or PERMISSION_DENIED) to refuse a request.

Caller auth does not exist yet (its own issue); when it lands, the same check
the gRPC interceptor makes plugs in here, reading the Authorization header.
"""

_T = TypeVar("_T")


class _ClientGoneError(Exception):
    """The HTTP client disconnected before the answer was ready."""

    code = grpc.StatusCode.CANCELLED  # how the request's record (served.py) counts it


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the router's loop: the router owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpGateway:
    """OpenAI-compatible endpoints over a RouterEngine."""

    def __init__(
        self,
        engine: RouterEngine,
        balancer: Balancer,
        *,
        default_deadline_seconds: float,
        grace_seconds: float = 10.0,
        drain_seconds: float = 0.0,
        authorize: Authorize | None = None,
        cors: CorsSettings | None = None,
        keepalive: StreamKeepaliveSettings = DEFAULT_KEEPALIVE,
        limits: HttpDoorLimits | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._engine = engine
        self._embedder = EmbeddingRouter(engine)
        # The same admission as RouterService: input limits, policy checks, model names, quotas, usage.
        self._admission = admission or Admission(engine.table)
        self._limits = limits or HttpDoorLimits.model_construct()
        self._balancer = balancer
        self._default_deadline = default_deadline_seconds
        self._grace = grace_seconds
        self._drain = drain_seconds
        self._authorize = authorize
        self._keepalive = keepalive
        self._draining = False
        self._server: _EmbeddedServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self._retrieve_model, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_exception},
            middleware=cors_middleware(cors),
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Binds `host:port` (0: a free port) and serves in the running loop; returns the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=1024)
        except OSError as error:
            raise listen_error(f"{host}:{port}", error, "LLMMESH_HTTP_PORT", "LLMMESH_HTTP_HOST") from None
        self.port = sock.getsockname()[1]
        limits = self._limits
        # uvicorn's own limits where it has them; the rest in LimitedHttpToolsProtocol (http_limits.py).
        protocol = type("GatewayHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
        config = uvicorn.Config(
            self.app,
            http=protocol,
            # Counts this connection too: the same cap as the protocol's connection limit.
            limit_concurrency=limits.http_max_connections + 1,
            timeout_keep_alive=limits.http_keep_alive_seconds,
            ws="none",
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(math.ceil(self._grace), 1),
        )
        self._server = _EmbeddedServer(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-gateway")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _STARTUP_SECONDS
        while not self._server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
                raise OSError(f"HTTP gateway on {host}:{self.port} stopped during startup")
            if loop.time() > give_up:
                raise OSError(f"HTTP gateway on {host}:{self.port} did not start within {_STARTUP_SECONDS}s")
            await asyncio.sleep(0.005)
        log.info("http gateway serving", address=f"{host}:{self.port}", port=self.port)
        return self.port

    async def begin_shutdown(self) -> None:
        """MeshServer before_stop: health says draining; after the drain delay, stop accepting.

        In-flight requests then get the grace period, alongside the gRPC ones.
        """
        self._draining = True
        if self._stopping is None and self._server is not None:
            self._stopping = asyncio.create_task(self._shutdown(), name="http-gateway-shutdown")

    async def _shutdown(self) -> None:
        if self._drain:
            await asyncio.sleep(self._drain)
        assert self._server is not None
        assert self._serving is not None
        self._server.should_exit = True
        await self._serving

    async def wait_stopped(self) -> None:
        """MeshServer after_stop: waits for in-flight HTTP requests (bounded by the grace period)."""
        await self.begin_shutdown()
        if self._stopping is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stopping), self._drain + self._grace + 5.0)
        except TimeoutError:
            log.warning("http gateway did not stop in time; closing connections")
            assert self._server is not None
            self._server.force_exit = True
        log.info("http gateway stopped")

    # -- endpoints -------------------------------------------------------------------------

    async def _chat_completions(self, request: Request) -> Response:
        return await self._serve_chat(request, ChatCompletionsWire())

    async def _responses(self, request: Request) -> Response:
        return await self._serve_chat(request, ResponsesWire())

    async def _serve_chat(self, request: Request, wire: DoorWire) -> Response:
        """The one path of every chat-shaped operation: auth, parse, validate, deadline, engine."""
        record = served(self._engine.table, door=DOOR_HTTP, route=request.url.path)
        record.identify(request.headers.get(REQUEST_ID_HEADER))
        return _settled(record, await _recording(record, self._chat(request, wire, record)))

    async def _chat(self, request: Request, wire: DoorWire, record: Served) -> Response:
        try:
            if self._authorize is not None:
                await self._authorize(request)
            parsed = wire.parse(await _read_json(request), request.headers.get(FALLBACK_HEADER))
            deadline = self._deadline(request, stream=parsed.stream)
            tenant = await self._admission.admit(parsed.request, record)
            if parsed.stream:
                return await self._stream(request, parsed, deadline, wire, tenant, record)
            assert isinstance(parsed.request, rpb.ChatRequest)
            answer = await _unless_disconnected(request, self._engine.chat(parsed.request, deadline))
            record.answered(answer)
            # Fan-out answers all cost money, not only the one returned first.
            await self._admission.record(tenant, [answer, *answer.alternatives])
        except Exception as error:  # noqa: BLE001 - every failure is recorded and answered in OpenAI's format
            return _failed(record, error, wire.error)
        return wire.answer(answer)

    async def _embeddings(self, request: Request) -> Response:
        """POST /v1/embeddings: the same auth, admission, deadline and engine path as gRPC Embed."""
        record = served(self._engine.table, door=DOOR_HTTP, operation=OPERATION_EMBEDDINGS, route=request.url.path)
        record.identify(request.headers.get(REQUEST_ID_HEADER))
        return _settled(record, await _recording(record, self._embed(request, record)))

    async def _embed(self, request: Request, record: Served) -> Response:
        parsed: embeddings_door.ParsedEmbed | None = None
        try:
            if self._authorize is not None:
                await self._authorize(request)
            parsed = embeddings_door.parse(await _read_json(request))
            deadline = self._deadline(request, stream=False)
            tenant = await self._admission.admit_embed(parsed.request, listing="GET /v1/models", served=record)
            response, paid = await _unless_disconnected(request, self._embedder.embed(parsed.request, deadline))
            record.embedded(response, paid)
            await self._admission.record_embed(tenant, response.usage.input_tokens, paid)
        except Exception as error:  # noqa: BLE001 - every failure is recorded and answered in OpenAI's format
            return _failed(record, error, lambda failure: embeddings_door.error(failure, parsed))
        return embeddings_door.answer(response, parsed.encoding)

    async def _stream(
        self,
        request: Request,
        parsed: ParsedChat,
        deadline: float,
        wire: DoorWire,
        tenant: Tenant | None,
        record: Served,
    ) -> Response:
        """Waits (boundedly) for the first event, so that failures before any output get a real HTTP status."""
        assert isinstance(parsed.request, rpb.StreamChatRequest)
        # stream_chat is an async generator; its annotation says AsyncIterator.
        events = cast(AsyncGenerator[rpb.StreamChatResponse, None], self._engine.stream_chat(parsed.request, deadline))
        pending = asyncio.ensure_future(anext(events))
        try:
            await _unless_disconnected(
                request, asyncio.wait({pending}, timeout=self._keepalive.http_stream_commit_seconds)
            )
            if pending.done():
                pending.result()  # a failure before the commit: raised here, answered with its status
        except BaseException as error:
            await _abandon(pending, events)
            if isinstance(error, StopAsyncIteration):
                raise _truncated() from None
            raise
        # Until the final message says who answered, events name the requested model, resolved from an alias.
        routed = self._engine.table.lookup(parsed.request.model)
        writer, headers = wire.stream(routed.name if routed is not None else parsed.request.model)

        async def on_final(final: rpb.StreamChatFinal) -> None:
            await self._admission.record(tenant, [final])

        body = _sse(pending, events, writer, self._keepalive.http_stream_keepalive_seconds, on_final, record)
        return _RecordedStream(record, body, media_type="text/event-stream", headers=headers)

    async def _list_models(self, request: Request) -> Response:
        try:
            if self._authorize is not None:
                await self._authorize(request)
        except MeshError as error:
            return _error_response(error)
        data = [
            openai_response.model_entry(name, route, candidate, self._balancer)
            for name, route, candidate in self._admission.visible_models(current_tenant.get())
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _retrieve_model(self, request: Request) -> Response:
        name = request.path_params["model"]
        try:
            if self._authorize is not None:
                await self._authorize(request)
            tenant = current_tenant.get()
            candidate = self._engine.table.lookup(name)
            visible = {model: (route, routed) for model, route, routed in self._admission.visible_models(tenant)}
            # A model the tenant may not use is as unknown to it as one that does not exist.
            if candidate is None or candidate.name not in visible:
                raise self._admission.not_found(name, tenant, "GET /v1/models")
        except MeshError as error:
            return _error_response(error)
        route, routed = visible[candidate.name]
        return JSONResponse(openai_response.model_entry(candidate.name, route, routed, self._balancer))

    async def _health(self, request: Request) -> Response:
        if self._draining:
            return JSONResponse({"status": "NOT_SERVING"}, status_code=503)
        return JSONResponse({"status": "SERVING"})

    def _deadline(self, request: Request, *, stream: bool) -> float:
        """The loop-clock deadline: x-llmmesh-timeout, else the SDK's timeout (unary only), else the default.

        The SDK's read timeout bounds each read, not a whole stream, so
        streams do not take it as their deadline.
        """
        seconds = self._default_deadline
        explicit = request.headers.get(TIMEOUT_HEADER)
        if explicit is not None:
            seconds = _timeout_seconds(explicit)
        elif not stream and (sdk := request.headers.get(SDK_TIMEOUT_HEADER)):
            with contextlib.suppress(MeshError):
                seconds = _timeout_seconds(sdk)
        return asyncio.get_running_loop().time() + seconds


async def _sse(
    pending: asyncio.Future[rpb.StreamChatResponse],
    events: AsyncGenerator[rpb.StreamChatResponse, None],
    writer: StreamWriter,
    keepalive_seconds: float,
    on_final: Callable[[rpb.StreamChatFinal], Awaitable[None]],
    record: Served,
) -> AsyncIterator[bytes]:
    """The SSE body: keepalives until the first event, the writer's events, then its end or its failure."""
    async with contextlib.aclosing(events):
        try:
            async for comment in until_settled(pending, keepalive_seconds):
                yield comment
            event = pending.result()
            for data in writer.opening():
                yield data
            while True:
                record.event(event)
                if event.WhichOneof("event") == "final":
                    await on_final(event.final)  # counted before the client sees the end, as on gRPC
                for data in writer.event(event):
                    yield data
                if event.WhichOneof("event") == "final":
                    break
                event = await anext(events)
        except StopAsyncIteration:
            failure = _truncated()
        except MeshError as error:
            failure = error
        except Exception as error:  # noqa: BLE001 - the stream must end with an error event, never silently
            failure = _internal(error)
        else:
            for data in writer.done():
                yield data
            record.finish()
            return
        finally:
            # The client went away during the keepalives: stop waiting for the model before the generator closes.
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    record.fail(failure)
    for data in writer.failed(failure):
        yield data
    record.finish()


class _RecordedStream(StreamingResponse):
    """A stream whose request record ends with it: a client gone mid-stream is CANCELLED, counted once."""

    def __init__(self, record: Served, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._record = record

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Starlette cancels the body when the client disconnects; the body finished the record otherwise.
            self._record.finish(_ClientGoneError(), http_status=self.status_code)


async def _recording(record: Served, answering: Awaitable[Response]) -> Response:
    """The door's response; a request cancelled under it (server shutdown) still ends its record."""
    try:
        return await answering
    except BaseException as error:
        record.finish(error)
        raise


def _settled(record: Served, response: Response) -> Response:
    """Ends the record of a request answered in one response (a stream's record ends with its body)."""
    if not isinstance(response, _RecordedStream):
        record.finish(http_status=response.status_code)
    return response


async def _abandon(pending: asyncio.Future[rpb.StreamChatResponse], events: AsyncGenerator[Any, None]) -> None:
    """Stops a stream that will not be answered: the first-event wait, then the generator (end to end)."""
    if not pending.done():
        pending.cancel()
    with contextlib.suppress(BaseException):
        await pending
    await events.aclose()


async def _read_json(request: Request) -> object:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large(len(body))
    try:
        return json.loads(body)
    except ValueError as error:
        raise invalid_argument("body", f"is not valid JSON ({error}); send a JSON object") from None
    except RecursionError:
        # The C decoder stops at Python's recursion limit, long before the body runs out.
        raise too_deep("body", MAX_BODY_DEPTH, "a request body") from None


def _too_large(size: int) -> MeshError:
    return invalid_argument(
        "body",
        f"is {size} bytes, above the {MAX_BODY_BYTES}-byte limit; send images and documents by URL instead of inline data",
    )


def _timeout_seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:  # also false for NaN
        raise invalid_argument(TIMEOUT_HEADER, f"{raw!r} is not a number of seconds in (0, {MAX_TIMEOUT_SECONDS:g}]")
    return seconds


async def _unless_disconnected(request: Request, work: Awaitable[_T]) -> _T:
    """Awaits `work`, cancelling it (end to end) if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        raise _ClientGoneError
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error_response(error: MeshError) -> Response:
    _log_failure(error)
    return error_response(error)


def _failed(record: Served, error: Exception, answer: Callable[[MeshError], Response]) -> Response:
    """A failed request's record and answer: 499 for a client gone, else the error in the door's format."""
    if isinstance(error, (_ClientGoneError, ClientDisconnect)):
        record.fail(_ClientGoneError())
        return Response(status_code=499)
    if isinstance(error, MeshError):
        _log_failure(error)
        failure = error
    else:
        failure = _internal(error)  # last line of defence: logged with its traceback
    record.fail(failure)
    return answer(failure)


def _log_failure(error: MeshError) -> None:
    if http_error(error).status >= 500:
        log.warning("http request failed", code=error.code.name, reason=error.reason)


def _internal(error: BaseException) -> MeshError:
    log.error("unhandled error in http gateway", error_type=type(error).__name__, exc_info=error)
    return MeshError(
        grpc.StatusCode.INTERNAL,
        f"internal error in the HTTP gateway ({type(error).__name__}); see the router log",
        reason=REASON_INTERNAL,
    )


def _truncated() -> MeshError:
    return MeshError(
        grpc.StatusCode.UNAVAILABLE, "the router stream ended without a final message", reason=REASON_STREAM_TRUNCATED
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods, in OpenAI's error format."""
    assert isinstance(exc, HTTPException)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 404:
        message += (
            "; the gateway serves POST /v1/chat/completions, POST /v1/responses, POST /v1/embeddings, GET /v1/models"
            " and GET /v1/models/{model}"
        )
    body: dict[str, Any] = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

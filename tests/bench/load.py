"""The load generator: a closed loop of N concurrent calls in its own process.

`LoadWorker` keeps one spawned process (grpc.aio on uvloop) and runs one
`LoadSpec` at a time in it: a fresh channel per spec (one channel per
process, as a real caller has), `concurrency` tasks each sending the next
request as soon as the last one answered, a warm-up that is not recorded,
then a measured window bounded in time (and optionally in count). Requests
and responses travel as bytes (pre-serialised), so the generator spends its
CPU on gRPC, not on protobuf, and costs the same for every target.

`protocol="http"` sends the same closed loop over HTTP/1.1 instead (httpx2,
one pooled client, `concurrency` connections): the request is a JSON body
POSTed to the target URL, a stream is read as SSE lines. Every HTTP target
(the fake upstream directly, the mesh's HTTP door, LiteLLM's proxy) gets the
same client, so its cost is the same on each side of a ratio.

`lag=True` reads the fake upstream's send stamps (tests.bench.fake_upstream)
out of each streamed message's text and records each chunk's lag: the time
from the upstream writing it to this process receiving it. `one_call_each`
makes each task send exactly one call, all measured (no warm-up): the slow
streams scenario holds N streams open at once that way.

The worker also reads the CPU time of the server processes it is told to
watch at the start and the end of the measured window, so the figure is CPU
per measured request of each server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc

from tests.bench.procstat import cpu_seconds
from tests.bench.stamps import STAMP_PREFIX, lags_s

# Per-request outcomes kept for scenarios that look at each request (failover, hedging).
RECORD_NONE = ""
RECORD_ATTEMPTS = "attempts"


@dataclass(frozen=True)
class LoadSpec:
    """One load run against one target."""

    target: str
    method: str
    request: bytes
    concurrency: int
    duration_s: float
    warmup_s: float
    streaming: bool = False
    timeout_s: float = 10.0
    #: Stop the measured window after this many requests (0: time only).
    max_requests: int = 0
    #: Server processes whose CPU time is read at the window's start and end.
    watch_pids: dict[str, int] = field(default_factory=dict)
    #: RECORD_ATTEMPTS: parse each router ChatResponse and keep its attempts.
    record: str = RECORD_NONE
    #: Spread the tasks' first calls over this long, so c=256 does not open with a burst.
    ramp_s: float = 0.0
    #: "grpc" (target host:port, method, request bytes) or "http" (target URL, JSON body bytes).
    protocol: str = "grpc"
    #: Streams: record each chunk's lag from the fake upstream's stamps.
    lag: bool = False
    #: Each task sends one call, all measured: N streams open at once.
    one_call_each: bool = False


@dataclass
class RequestRecord:
    """One measured request (kept only when the spec asks for records)."""

    started: float  # time.monotonic(), comparable across processes on Linux
    latency_s: float
    code: str
    #: The status details of a failed request (the router lists its attempts there).
    detail: str = ""
    #: (instance, outcome name, hedged) of each attempt, from the router's response.
    attempts: list[tuple[str, str, bool]] = field(default_factory=list)


@dataclass
class LoadResult:
    """What one load run measured."""

    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    #: Streaming only: time to the first message of each OK stream.
    first_chunk_s: list[float] = field(default_factory=list)
    window_s: float = 0.0
    #: Every call sent, warm-up and drain included (to compare with what reached upstream).
    issued_total: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    records: list[RequestRecord] = field(default_factory=list)
    window_started: float = 0.0
    #: Streams with `lag`: seconds from the upstream writing each chunk to its arrival here.
    lags_s: list[float] = field(default_factory=list)
    #: Streams: messages (gRPC) or data events (HTTP) received in measured calls.
    chunks: int = 0

    @property
    def measured(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def rps(self) -> float:
        return self.measured / self.window_s if self.window_s else 0.0

    def cpu_us_per_request(self) -> dict[str, float]:
        return {name: seconds / self.measured * 1e6 if self.measured else 0.0 for name, seconds in self.cpu_s.items()}


class LoadWorker:
    """A long-lived load-generator process; `run` sends it a spec and waits for the result."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="llmmesh-bench-load", daemon=True)
        self._process.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def submit(self, spec: LoadSpec) -> None:
        """Starts a run; collect it with `result`."""
        self._conn.send(spec)

    def result(self, spec: LoadSpec) -> LoadResult:
        limit = spec.warmup_s + spec.ramp_s + spec.duration_s + spec.timeout_s + 30.0
        if not self._conn.poll(limit):
            raise TimeoutError(f"load run against {spec.target} gave no result within {limit:.0f}s")
        answer = self._conn.recv()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def run(self, spec: LoadSpec) -> LoadResult:
        self.submit(spec)
        return self.result(spec)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send(None)
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    def __enter__(self) -> LoadWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _serve(conn: Connection) -> None:
    """The worker process: run specs until told to stop (None) or the parent goes away."""
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    while True:
        try:
            spec = conn.recv()
        except EOFError:
            return
        if spec is None:
            return
        try:
            conn.send(runner(_drive(spec)))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(RuntimeError(f"load run failed: {error!r}"))


# What one call reports: code name, time to first message (streams), the response bytes or the
# error's details, chunk lags (seconds) and chunks received.
Outcome = tuple[str, float | None, bytes | str, list[float], int]
Caller = Callable[[], Any]


@contextlib.asynccontextmanager
async def _grpc_caller(spec: LoadSpec) -> AsyncIterator[Caller]:
    async with grpc.aio.insecure_channel(spec.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        call_stream = channel.unary_stream(spec.method)
        call_unary = channel.unary_unary(spec.method)
        text_of = _delta_text_parser() if spec.lag else None

        async def one_call() -> Outcome:
            try:
                if spec.streaming:
                    first: float | None = None
                    lags: list[float] = []
                    chunks = 0
                    began = time.monotonic()
                    async for message in call_stream(spec.request, timeout=spec.timeout_s):
                        if first is None:
                            first = time.monotonic() - began
                        chunks += 1
                        if text_of is not None:
                            lags += lags_s(text_of(message), time.monotonic_ns())
                    return "OK", first, b"", lags, chunks
                response = await call_unary(spec.request, timeout=spec.timeout_s)
                return "OK", None, response, [], 0
            except grpc.aio.AioRpcError as error:
                return error.code().name, None, error.details() or "", [], 0

        yield one_call


@contextlib.asynccontextmanager
async def _http_caller(spec: LoadSpec) -> AsyncIterator[Caller]:
    import httpx2

    limits = httpx2.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench-not-a-real-key"}
    async with httpx2.AsyncClient(limits=limits, timeout=spec.timeout_s, headers=headers) as client:

        async def one_call() -> Outcome:
            try:
                if spec.streaming:
                    return await _http_stream(client, spec)
                response = await client.post(spec.target, content=spec.request)
                if response.status_code != 200:
                    return f"HTTP_{response.status_code}", None, response.text[:200], [], 0
                return "OK", None, response.content, [], 0
            except httpx2.HTTPError as error:
                return type(error).__name__, None, str(error)[:200], [], 0

        yield one_call


async def _http_stream(client: Any, spec: LoadSpec) -> Outcome:
    first: float | None = None
    lags: list[float] = []
    chunks = 0
    began = time.monotonic()
    async with client.stream("POST", spec.target, content=spec.request) as response:
        if response.status_code != 200:
            await response.aread()
            return f"HTTP_{response.status_code}", None, response.text[:200], [], 0
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            if first is None:
                first = time.monotonic() - began
            chunks += 1
            if spec.lag:
                lags += lags_s(_sse_text(data), time.monotonic_ns())
    return "OK", first, b"", lags, chunks


def _sse_text(data: str) -> str:
    """The delta text of one OpenAI chunk (an error event has none)."""
    if STAMP_PREFIX not in data:
        return ""
    body = json.loads(data)
    return "".join((choice.get("delta") or {}).get("content") or "" for choice in body.get("choices") or ())


async def _drive(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    parse = _attempt_parser() if spec.record == RECORD_ATTEMPTS else None
    opened = _http_caller(spec) if spec.protocol == "http" else _grpc_caller(spec)
    async with opened as one_call:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        window_start = started + spec.warmup_s + spec.ramp_s
        window_end = window_start + spec.duration_s
        if spec.one_call_each:
            # Every call is measured, from the first: the window opens now; the ramp only spreads starts.
            window_start, window_end = started, started + spec.ramp_s + spec.duration_s
        cpu_before: dict[str, float] = {}
        stop = asyncio.Event()
        stopped_at: list[float] = []
        cpu_timer = loop.call_at(
            loop.time() + (window_start - time.monotonic()),
            lambda: cpu_before.update(_cpu_of(spec.watch_pids)),
        )

        async def client(index: int) -> None:
            if spec.ramp_s:
                await asyncio.sleep(spec.ramp_s * index / spec.concurrency)
            while not stop.is_set():
                began = time.monotonic()
                if began >= window_end:
                    return
                result.issued_total += 1
                code, first, response, lags, chunks = await one_call()
                if began < window_start and not spec.one_call_each:
                    continue
                latency = time.monotonic() - began
                result.lags_s += lags
                result.chunks += chunks
                if code == "OK":
                    result.ok += 1
                    result.latencies_s.append(latency)
                    if first is not None:
                        result.first_chunk_s.append(first)
                else:
                    result.errors[code] = result.errors.get(code, 0) + 1
                if parse is not None:
                    if isinstance(response, bytes):
                        result.records.append(RequestRecord(began, latency, code, attempts=parse(response)))
                    else:
                        result.records.append(RequestRecord(began, latency, code, detail=response))
                if spec.max_requests and result.measured >= spec.max_requests and not stop.is_set():
                    stop.set()
                    stopped_at.append(time.monotonic())
                if spec.one_call_each:
                    return

        await asyncio.gather(*(client(index) for index in range(spec.concurrency)))
        cpu_timer.cancel()
        finished = time.monotonic()
        cpu_after = _cpu_of(spec.watch_pids)
        result.window_started = window_start
        # One call each: the window is the whole run (the calls outlast the nominal window).
        ended = finished if spec.one_call_each else min(finished, window_end, *stopped_at)
        result.window_s = max(ended - window_start, 1e-9)
        result.cpu_s = {name: cpu_after[name] - cpu_before.get(name, cpu_after[name]) for name in cpu_after}
    return result


def _cpu_of(pids: dict[str, int]) -> dict[str, float]:
    readings: dict[str, float] = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            readings[name] = cpu_seconds(pid)
    return readings


def _delta_text_parser() -> Callable[[bytes], str]:
    """The delta text of a router StreamChatResponse, from its bytes (lag is read on router streams)."""
    from llmmesh.v1 import router_service_pb2 as rpb

    def text_of(data: bytes) -> str:
        message = rpb.StreamChatResponse.FromString(data)
        return message.delta.text if message.WhichOneof("event") == "delta" else ""

    return text_of


def _attempt_parser() -> Callable[[bytes], list[tuple[str, str, bool]]]:
    from llmmesh.v1 import router_service_pb2 as rpb

    def parse(data: bytes) -> list[tuple[str, str, bool]]:
        response = rpb.ChatResponse.FromString(data)
        return [
            (attempt.instance, rpb.AttemptOutcome.Name(attempt.outcome), attempt.hedged)
            for attempt in response.attempts
        ]

    return parse

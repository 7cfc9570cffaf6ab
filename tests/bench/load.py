"""The load generator: a closed loop of N concurrent calls in its own process.

`LoadWorker` keeps one spawned process (grpc.aio on uvloop) and runs one
`LoadSpec` at a time in it: a fresh channel per spec (one channel per
process, as a real caller has), `concurrency` tasks each sending the next
request as soon as the last one answered, a warm-up that is not recorded,
then a measured window bounded in time (and optionally in count). Requests
and responses travel as bytes (pre-serialised), so the generator spends its
CPU on gRPC, not on protobuf, and costs the same for every target.

The worker also reads the CPU time of the server processes it is told to
watch at the start and the end of the measured window, so the figure is CPU
per measured request of each server.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc

from tests.bench.procstat import cpu_seconds

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


async def _drive(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    parse = _attempt_parser() if spec.record == RECORD_ATTEMPTS else None
    async with grpc.aio.insecure_channel(spec.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        if spec.streaming:
            call_stream = channel.unary_stream(spec.method)
        else:
            call_unary = channel.unary_unary(spec.method)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        window_start = started + spec.warmup_s + spec.ramp_s
        window_end = window_start + spec.duration_s
        cpu_before: dict[str, float] = {}
        stop = asyncio.Event()
        stopped_at: list[float] = []
        cpu_timer = loop.call_at(
            loop.time() + (window_start - time.monotonic()),
            lambda: cpu_before.update(_cpu_of(spec.watch_pids)),
        )

        async def one_call() -> tuple[str, float | None, bytes | str]:
            """Code name, time to first message (streams), the response bytes or the error's details."""
            try:
                if spec.streaming:
                    first: float | None = None
                    began = time.monotonic()
                    async for _ in call_stream(spec.request, timeout=spec.timeout_s):
                        if first is None:
                            first = time.monotonic() - began
                    return "OK", first, b""
                response = await call_unary(spec.request, timeout=spec.timeout_s)
                return "OK", None, response
            except grpc.aio.AioRpcError as error:
                return error.code().name, None, error.details() or ""

        async def client(index: int) -> None:
            if spec.ramp_s:
                await asyncio.sleep(spec.ramp_s * index / spec.concurrency)
            while not stop.is_set():
                began = time.monotonic()
                if began >= window_end:
                    return
                result.issued_total += 1
                code, first, response = await one_call()
                if began < window_start:
                    continue
                latency = time.monotonic() - began
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

        await asyncio.gather(*(client(index) for index in range(spec.concurrency)))
        cpu_timer.cancel()
        finished = time.monotonic()
        cpu_after = _cpu_of(spec.watch_pids)
        result.window_started = window_start
        result.window_s = max(min(finished, window_end, *stopped_at) - window_start, 1e-9)
        result.cpu_s = {name: cpu_after[name] - cpu_before.get(name, cpu_after[name]) for name in cpu_after}
    return result


def _cpu_of(pids: dict[str, int]) -> dict[str, float]:
    readings: dict[str, float] = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            readings[name] = cpu_seconds(pid)
    return readings


def _attempt_parser() -> Callable[[bytes], list[tuple[str, str, bool]]]:
    from llmmesh.v1 import router_service_pb2 as rpb

    def parse(data: bytes) -> list[tuple[str, str, bool]]:
        response = rpb.ChatResponse.FromString(data)
        return [
            (attempt.instance, rpb.AttemptOutcome.Name(attempt.outcome), attempt.hedged)
            for attempt in response.attempts
        ]

    return parse

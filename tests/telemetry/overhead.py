"""Router throughput with telemetry off and on: `python -m tests.telemetry.overhead`.

Starts a mock adapter + router four times (no telemetry; OTLP export at the
default sampling, 10% of new traces; every request traced; nothing sampled),
sends the same bounded load through each (CONCURRENCY callers, REQUESTS in
all, capped at MAX_SECONDS), and prints requests/s side by side.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import grpc

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.testing.mesh import MockMesh

REQUESTS = int(os.environ.get("OVERHEAD_REQUESTS", "3000"))
CONCURRENCY = 16
MAX_SECONDS = 60.0
ROUNDS = 3


async def _load(address: str) -> float:
    request = rpb.ChatRequest(
        model="mock-small",
        messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="ping")])],
    )
    async with grpc.aio.insecure_channel(address) as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        for _ in range(50):  # warm-up: channels, breakers, caches
            await stub.Chat(request, timeout=10)
        sent = 0
        started = time.perf_counter()
        stop_at = started + MAX_SECONDS

        async def caller() -> None:
            nonlocal sent
            while sent < REQUESTS and time.perf_counter() < stop_at:
                sent += 1
                await stub.Chat(request, timeout=10)

        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        return sent / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(env: dict[str, str]) -> tuple[float, float]:
    """Best requests/s over the rounds, and the router's CPU microseconds per request (robust on a busy host)."""
    with MockMesh(env=env) as mesh:
        assert mesh.router is not None
        best = 0.0
        cpu_before = _cpu_seconds(mesh.router.pid)
        for _ in range(ROUNDS):
            best = max(best, asyncio.run(_load(mesh.router_address)))
        cpu = _cpu_seconds(mesh.router.pid) - cpu_before
        return best, cpu / (ROUNDS * (REQUESTS + 50)) * 1e6


def main() -> None:
    base = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    os.environ.clear()
    os.environ.update(base)
    # The collector runs in its own process, as a real one would: decoding exports
    # in the load generator's process would slow the callers, not the router.
    port = _free_port()
    collector = subprocess.Popen(
        [sys.executable, "-m", "services.common.otlp_receiver", "--port", str(port), "--discard"],
        stdout=subprocess.DEVNULL,
    )
    try:
        exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        results = {
            "telemetry off (no endpoint)": _measure({}),
            "OTLP on, default sampling": _measure(exporting),
            "OTLP on, every request traced": _measure({**exporting, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
            "OTLP on, always_off sampler": _measure({**exporting, "OTEL_TRACES_SAMPLER": "always_off"}),
        }
    finally:
        collector.terminate()
        collector.wait(10)
    off, off_cpu = results["telemetry off (no endpoint)"]
    for name, (rate, cpu) in results.items():
        print(
            f"{name:<30} {rate:8.0f} req/s ({rate / off * 100:5.1f}% of off)"
            f"   router CPU {cpu:6.0f} us/request ({cpu / off_cpu * 100:5.1f}% of off)"
        )
    print(f"({REQUESTS} requests x {ROUNDS} rounds, {CONCURRENCY} concurrent; best round)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

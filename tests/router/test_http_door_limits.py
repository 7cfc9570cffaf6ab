"""The HTTP door under attack: huge headers, slowloris, too many connections (issue 21, finding 1).

A real router (HTTP door on, gRPC on the same event loop) and a mock
adapter run as processes; attackers are plain sockets in threads, so the
test process's own event loop is not what gets measured. During each attack
a gRPC caller keeps calling Chat; its p50/p99 are printed next to the quiet
figures (`-s` shows them) and asserted only against a generous bound: the
machine is shared and noisy. What is asserted exactly: the attacker's
connection gets the right status and is closed, gRPC keeps answering, and
the router's memory comes back near its baseline.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from llmmesh.v1 import chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.testing.mesh import MockMesh
from tests.router.test_http_gateway import http_port_of

HEADER_TIMEOUT = 2.0
MAX_CONNECTIONS = 120
ENV = {
    "LLMMESH_HTTP_PORT": "0",
    "LLMMESH_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "LLMMESH_HTTP_BODY_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "LLMMESH_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}
BIG_HEADER = 64 * 1024 * 1024
_CHAT = rpb.ChatRequest(
    model="mock-small",
    messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="hi")])],
)


class Door:
    """The router's two doors: HTTP port, gRPC stub, and the router's memory."""

    def __init__(self, mesh: MockMesh) -> None:
        self.mesh = mesh
        self.port = http_port_of(mesh)
        self.channel = grpc.insecure_channel(mesh.router_address)
        self.stub = router_service_pb2_grpc.RouterServiceStub(self.channel)

    def rss_mib(self) -> float:
        assert self.mesh.router is not None
        for line in Path(f"/proc/{self.mesh.router.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def latencies(self, until: Callable[[], bool], at_most: int = 5000, seconds: float = 60.0) -> list[float]:
        """Sequential gRPC Chat calls until `until()` (bounded in count and time); their latencies in ms."""
        took: list[float] = []
        give_up = time.monotonic() + seconds
        while len(took) < at_most and time.monotonic() < give_up:
            started = time.perf_counter()
            self.stub.Chat(_CHAT, timeout=30)
            took.append((time.perf_counter() - started) * 1000)
            if until():
                break
        return took


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    with MockMesh(env=ENV, workdir=tmp_path_factory.mktemp("door-limits")) as mesh:
        door = Door(mesh)
        door.latencies(lambda: False, at_most=20)  # warm up channels and caches
        yield door
        door.channel.close()


@pytest.fixture(scope="module")
def quiet(door: Door) -> tuple[float, float]:
    return _p50_p99(door.latencies(lambda: False, at_most=150))


def _p50_p99(took: list[float]) -> tuple[float, float]:
    ordered = sorted(took)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _report(name: str, quiet: tuple[float, float], during: list[float]) -> tuple[float, float]:
    p50, p99 = _p50_p99(during)
    print(
        f"\n[{name}] gRPC Chat quiet p50 {quiet[0]:.1f} ms p99 {quiet[1]:.1f} ms; "
        f"during attack p50 {p50:.1f} ms p99 {p99:.1f} ms max {max(during):.0f} ms ({len(during)} calls)"
    )
    return p50, p99


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.settimeout(30)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after the answer counts as the close)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def _big_header_attack(port: int, results: list[bytes], repeat: int = 3) -> None:
    """`repeat` requests to /health, each with a 64 MiB header; keeps what the server answers to each."""
    for _ in range(repeat):
        _one_big_header(port, results)


def _one_big_header(port: int, results: list[bytes]) -> None:
    sock = _connect(port)
    reader = threading.Thread(target=lambda: results.append(_read_all(sock)))
    reader.start()
    chunk = b"a" * (1024 * 1024)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: ")
        for _ in range(BIG_HEADER // len(chunk)):
            sock.sendall(chunk)
    except OSError:
        pass  # the server stopped reading and closed: expected
    reader.join(timeout=30)
    sock.close()


def _run_attack(door: Door, attackers: list[threading.Thread]) -> list[float]:
    for attacker in attackers:
        attacker.start()
    took = door.latencies(lambda: not any(a.is_alive() for a in attackers))
    for attacker in attackers:
        attacker.join(timeout=60)
    return took


def _settle_rss(door: Door, ceiling: float) -> float:
    """The router's RSS once it is at or below `ceiling`, or after 10 s."""
    give_up = time.monotonic() + 10
    rss = door.rss_mib()
    while rss > ceiling and time.monotonic() < give_up:
        time.sleep(0.2)
        rss = door.rss_mib()
    return rss


class TestHugeHeaders:
    def test_one_64_mib_header(self, door: Door, quiet: tuple[float, float]) -> None:
        """A 64 MiB header gets 431 and a close; gRPC keeps answering; memory stays near baseline."""
        before = door.rss_mib()
        results: list[bytes] = []
        took = _run_attack(door, [threading.Thread(target=_big_header_attack, args=(door.port, results))])
        _, p99 = _report("one 64 MiB header", quiet, took)
        assert len(results) == 3
        assert all(result.startswith(b"HTTP/1.1 431 ") for result in results), [r[:40] for r in results]
        assert b"connection: close" in results[0]
        after = _settle_rss(door, before + 32)
        print(f"[one 64 MiB header] router RSS before {before:.0f} MiB, after {after:.0f} MiB")
        assert after < before + 32
        assert p99 < max(20 * quiet[1], 2000)  # generous: the machine is shared; the attack cost seconds before

    def test_parallel_big_headers(self, door: Door, quiet: tuple[float, float]) -> None:
        """Four 64 MiB headers at once: each gets 431; gRPC keeps answering; memory back near baseline."""
        before = door.rss_mib()
        results: list[bytes] = []
        attackers = [threading.Thread(target=_big_header_attack, args=(door.port, results)) for _ in range(4)]
        took = _run_attack(door, attackers)
        _, p99 = _report("four 64 MiB headers in parallel", quiet, took)
        assert len(results) == 12
        assert all(result.startswith(b"HTTP/1.1 431 ") for result in results), [r[:40] for r in results]
        after = _settle_rss(door, before + 32)
        print(f"[four 64 MiB headers] router RSS before {before:.0f} MiB, after {after:.0f} MiB")
        assert after < before + 32
        assert p99 < max(20 * quiet[1], 2000)

    def test_many_headers(self, door: Door) -> None:
        """More header fields than LLMMESH_HTTP_MAX_HEADERS (100) within the byte limit: 431."""
        sock = _connect(door.port)
        sock.sendall(b"GET /health HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % n for n in range(150)) + b"\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 431 ")
        sock.close()

    def test_long_request_line(self, door: Door) -> None:
        """A request target above LLMMESH_HTTP_MAX_REQUEST_LINE_BYTES: 414."""
        sock = _connect(door.port)
        sock.sendall(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 414 ")
        sock.close()


class TestSlowClients:
    def test_slowloris_and_connection_cap(self, door: Door, quiet: tuple[float, float]) -> None:
        """130 sockets trickling headers: those past the cap get 503 at once, the rest 408 after the timeout."""
        sockets = [_connect(door.port) for _ in range(MAX_CONNECTIONS + 10)]
        answers: dict[int, bytes] = {}
        started = time.monotonic()

        def trickle(index: int, sock: socket.socket) -> None:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
                for n in range(100):  # a header line every 0.5 s, never the blank line
                    sock.sendall(b"x-%d: 1\r\n" % n)
                    if _readable(sock):
                        break
                    time.sleep(0.5)
            except OSError:
                pass
            answers[index] = _read_all(sock)

        attackers = [threading.Thread(target=trickle, args=item) for item in enumerate(sockets)]
        took = _run_attack(door, attackers)
        elapsed = time.monotonic() - started
        _report(f"{len(sockets)} slowloris sockets", quiet, took)
        statuses = sorted(answer[9:12].decode() for answer in answers.values())
        counts = {status: statuses.count(status) for status in set(statuses)}
        print(f"[slowloris] statuses {counts}; all closed in {elapsed:.1f} s")
        assert len(answers) == len(sockets)
        assert set(statuses) <= {"408", "503"}
        assert statuses.count("503") >= 10 - 1  # the cap, give or take the gRPC caller's own timing
        assert statuses.count("408") >= MAX_CONNECTIONS - 10
        assert elapsed < 30  # all closed by the header timeout (2 s) plus linger, not after 50 s of trickle
        for sock in sockets:
            sock.close()

    def test_slow_body(self, door: Door) -> None:
        """A body that never finishes: 408 after the body timeout, connection closed."""
        sock = _connect(door.port)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
        started = time.monotonic()
        answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
        assert time.monotonic() - started < 15
        sock.close()

    def test_door_still_serves(self, door: Door) -> None:
        """After the attacks a normal request is answered."""
        sock = _connect(door.port)
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 200 ")
        sock.close()


def _readable(sock: socket.socket) -> bool:
    """True once the server has answered (or closed): stop trickling."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(30)

"""A mock adapter, a router (gRPC and HTTP doors) and an agent, each serving /metrics.

For tests and tools that read what operators scrape: `ScrapedMesh.scrape(name)`
parses a process's Prometheus endpoint, `load()` sends a little bounded,
varied traffic (answers, fallbacks, failures, streams, an agent run).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import agent_service_pb2_grpc, chat_pb2, router_service_pb2_grpc
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.processes import ServiceProcess, start_service
from services.testing.mesh import MockMesh

MOCK_CONFIG: dict[str, Any] = {
    "models": [
        {"name": "mock-agent", "scripted": True},
        {"name": "mock-fast"},
        {"name": "mock-slow", "stream_chunk_delay_ms": 150},
        {"name": "mock-flaky", "failures": [{"code": "UNAVAILABLE", "rate": 1, "message": "upstream 503"}]},
        {"name": "mock-broken", "failures": [{"code": "UNAVAILABLE", "rate": 1, "message": "upstream 503"}]},
        # Streams slowly enough for a caller to go away after the first chunk.
        {"name": "mock-drip", "stream_chunk_delay_ms": 400},
        {"name": "mock-vectors", "dimensions": 8},
    ],
    "scripts": [
        {
            "match": "monthly",
            "turns": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1234 * 12"}}]},
                {"text": "The yearly total is {tool_results}."},
            ],
        },
        {"match": "", "turns": [{"text": "Scripted answer to: {question}"}]},
    ],
}
_PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 5.0}
ROUTING: dict[str, Any] = {
    "providers": {"mock": {"kind": "mock"}},
    "models": {
        "mock-agent": {"provider": "mock"},
        "mock-fast": {"provider": "mock", "price": _PRICE},
        "mock-slow": {"provider": "mock", "price": _PRICE},
        # Always fails, so its callers are answered by mock-fast: requested ≠ answering model.
        "mock-flaky": {"provider": "mock", "fallbacks": ["mock-fast"]},
        # Always fails, no fallback: failed requests with model, provider and code.
        "mock-broken": {"provider": "mock"},
        "mock-drip": {"provider": "mock"},
        "mock-vectors": {"provider": "mock", "dimensions": 8, "price": {"input_per_mtok": 2.0}},
    },
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class ScrapedMesh:
    """The three process kinds with LLMMESH_PROMETHEUS_PORT each; `ports` maps adapter/router/agent to them."""

    def __init__(
        self,
        workdir: Path | None = None,
        env: Mapping[str, str] | None = None,
        *,
        agent_env: Mapping[str, str] | None = None,
    ) -> None:
        """`env` goes to every process (as MockMesh's does), `agent_env` to the agent only."""
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="llmmesh-scraped-"))
        self.ports = {"adapter": free_port(), "router": free_port(), "agent": free_port()}
        base = {"LLMMESH_ACCESS_LOG": "true", "LLMMESH_HTTP_PORT": "0", **(env or {})}
        self.mesh = MockMesh(
            mock_config=MOCK_CONFIG,
            routing=ROUTING,
            env={**base, "LLMMESH_PROMETHEUS_PORT": str(self.ports["router"])},
            mock_env={"LLMMESH_PROMETHEUS_PORT": str(self.ports["adapter"])},
            workdir=self.workdir,
        )
        self.agent_env = dict(agent_env or {})
        self.agent: ServiceProcess | None = None

    def start(self) -> ScrapedMesh:
        try:
            self.mesh.start()
            self.agent = start_service(
                ["-m", "services.agent"],
                name="agent",
                workdir=self.workdir,
                env={
                    "LLMMESH_ROUTER_ADDRESS": self.mesh.router_address,
                    "LLMMESH_PROMETHEUS_PORT": str(self.ports["agent"]),
                    **self.agent_env,
                },
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.terminate()
        self.mesh.stop()

    def __enter__(self) -> ScrapedMesh:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def router(self) -> ServiceProcess:
        assert self.mesh.router is not None
        return self.mesh.router

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.router.ready['http_port']}"

    def metrics_text(self, kind: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[kind]}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def scrape(self, kind: str) -> list[Sample]:
        """Every sample `kind` (adapter, router or agent) serves, histogram buckets included."""
        return [
            Sample(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(self.metrics_text(kind))
            for sample in family.samples
        ]

    async def load(self, rounds: int = 2) -> None:
        """A bounded mix: answers, fallbacks, failures, streams, an HTTP chat and an agent run per round."""
        async with grpc.aio.insecure_channel(self.mesh.router_address) as channel:
            router = router_service_pb2_grpc.RouterServiceStub(channel)
            for _ in range(rounds):
                await router.Chat(chat_request("mock-fast"), timeout=10)
                await router.Chat(chat_request("mock-flaky", max_retries=0), timeout=10)
                with contextlib.suppress(grpc.aio.AioRpcError):  # a failed request: counted, the point
                    await router.Chat(chat_request("mock-broken", max_retries=0), timeout=10)
                async for _event in router.StreamChat(stream_request("mock-slow"), timeout=10):
                    pass
        http_chat(self.http_url, "mock-fast")
        await self.load_doors()
        assert self.agent is not None
        async with grpc.aio.insecure_channel(self.agent.address) as channel:
            await agent_service_pb2_grpc.AgentServiceStub(channel).Run(
                apb.RunRequest(task=apb.AgentTask(input="monthly total of 1234", model="mock-agent")), timeout=20
            )

    async def load_doors(self) -> None:
        """Once through each door's other shapes: streams, responses, embeddings, refusals, streams cut by the caller."""
        http_chat(self.http_url, "mock-fast", stream=True)
        http_post(self.http_url, "/v1/responses", {"model": "mock-fast", "input": "count me"})
        http_post(self.http_url, "/v1/embeddings", {"model": "mock-vectors", "input": ["count me", "and me"]})
        http_post(
            self.http_url,
            "/v1/chat/completions",
            {"model": "no-such-model-xyz", "messages": [{"role": "user", "content": "count me"}]},
        )
        http_post(self.http_url, "/v1/chat/completions", b"{not json")
        http_cancel_stream(self.http_url, "mock-drip")
        async with grpc.aio.insecure_channel(self.mesh.router_address) as channel:
            router = router_service_pb2_grpc.RouterServiceStub(channel)
            await router.Embed(rpb.EmbedRequest(model="mock-vectors", inputs=["count me"]), timeout=10)
            call = router.StreamChat(stream_request("mock-drip"), timeout=10)
            async for event in call:
                if event.HasField("delta"):
                    call.cancel()  # the caller goes away mid-stream
                    break


def _messages() -> list[chat_pb2.Message]:
    return [chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text="count me")])]


def chat_request(model: str, **routing: Any) -> rpb.ChatRequest:
    return rpb.ChatRequest(model=model, messages=_messages(), routing=rpb.RoutingPolicy(**routing))


def stream_request(model: str) -> rpb.StreamChatRequest:
    return rpb.StreamChatRequest(model=model, messages=_messages())


def http_chat(base_url: str, model: str, *, stream: bool = False) -> bytes:
    body = json.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": "count me"}]}
    ).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def http_post(base_url: str, path: str, body: dict[str, Any] | bytes) -> int:
    """POSTs `body` (JSON, or raw bytes) and returns the HTTP status, errors included."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{base_url}{path}", data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


def http_cancel_stream(base_url: str, model: str) -> None:
    """Starts an SSE chat stream and closes the connection after its first content chunk."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "count me please"}]}
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        response = connection.getresponse()
        for _ in range(100):  # bounded: the first content chunk comes within a few lines
            line = response.readline()
            if not line or b'"content"' in line:
                break
    finally:
        connection.close()


def wait_for(condition: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Polls `condition()` until it returns something truthy (generous bound: a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)

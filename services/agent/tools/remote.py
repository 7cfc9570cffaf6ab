"""Remote tools: every ToolService registered in discovery as `llmmesh-tool`.

The catalog lists each instance's tools at start, whenever discovery reports
a change, and every `refresh_seconds` (instances that were down come back).
Instances offering the same tool name share its calls round-robin. A call is
never retried on another instance: tools need not be idempotent.

Every call carries the run id and the caller's tenant as metadata. A failed
call reaches the model as a short summary: the code, and for INVALID_ARGUMENT
the first line of the details (so it can fix its arguments), redacted and
with file paths removed. The full details go to the log, redacted: a tool
service's raw exception text (paths, internal hosts, secrets) must not
become part of the next prompt or the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from typing import Any

import grpc
import structlog
from google.protobuf import json_format

from llmmesh.v1 import tool_service_pb2 as tpb
from llmmesh.v1 import tool_service_pb2_grpc
from services.agent.tools.base import Tool, ToolContext, ToolFailure, ToolOutput
from services.common.channels import aio_channel
from services.common.discovery import Discovery, Endpoint
from services.common.redaction import Redactor, summary
from services.common.tls import PLAINTEXT, ChannelSecurity

TOOL_SERVICE = "llmmesh-tool"
#: What the log keeps of a failed call's details.
LOGGED_DETAIL_CHARS = 2000
# Absolute file paths (POSIX and Windows), as tracebacks and OS errors print them.
_PATH = re.compile(r"(?<![\w:/.$])(?:/[\w.@+-]+){2,}/?|\b[A-Za-z]:\\[^\s'\"]+")

log = structlog.get_logger(__name__)


class RemoteTool(Tool):
    """One tool name offered by one or more ToolService instances."""

    def __init__(self, definition: Any, instances: list[tuple[str, tool_service_pb2_grpc.ToolServiceStub]]) -> None:
        schema = json_format.MessageToDict(definition.parameters) or {"type": "object"}
        super().__init__(definition.name, definition.description, schema)
        self._instances = instances
        self._turn = itertools.count()

    @property
    def source(self) -> str:
        return "remote " + ",".join(address for address, _ in self._instances)

    async def run(self, arguments: dict[str, Any], *, call_id: str, timeout: float, context: ToolContext) -> ToolOutput:
        address, stub = self._instances[next(self._turn) % len(self._instances)]
        request = tpb.CallToolRequest(name=self.name, arguments_json=json.dumps(arguments), call_id=call_id)
        try:
            response = await stub.CallTool(request, timeout=timeout, metadata=context.metadata())
        except grpc.aio.AioRpcError as error:
            details = context.redactor(error.details() or "")
            log.warning(
                "remote tool call failed",
                tool=self.name,
                address=address,
                run_id=context.run_id,
                call_id=call_id,
                code=error.code().name,
                details=details[:LOGGED_DETAIL_CHARS],
            )
            raise ToolFailure(describe_failure(error.code(), details, timeout)) from None
        return ToolOutput(response.content, response.is_error)


def describe_failure(code: grpc.StatusCode, details: str, timeout: float) -> str:
    """What the model reads about a failed remote call: short, without paths, addresses or raw exception text."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"timed out after {timeout:.1f}s"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return f"the tool rejected the arguments: {sanitised(details)}"
    if code == grpc.StatusCode.NOT_FOUND:
        return "the tool is no longer offered by its service"
    return f"the tool service failed ({code.name}); the agent's log has the details"


def sanitised(details: str, redactor: Redactor | None = None) -> str:
    """One short line of `details`, with file paths replaced (and secrets, given a redactor)."""
    text = redactor(details) if redactor is not None else details
    return summary(_PATH.sub("[path]", text), limit=200)


class RemoteToolCatalog:
    """The tools of every discovered `llmmesh-tool` instance, kept current."""

    def __init__(
        self,
        discovery: Discovery,
        *,
        list_timeout: float = 5.0,
        refresh_seconds: float = 30.0,
        security: ChannelSecurity = PLAINTEXT,
    ) -> None:
        self._discovery = discovery
        self._security = security
        self._list_timeout = list_timeout
        self._refresh_seconds = refresh_seconds
        self._endpoints: tuple[Endpoint, ...] = ()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tools: dict[str, RemoteTool] = {}
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def tools(self) -> dict[str, RemoteTool]:
        return dict(self._tools)

    async def start(self) -> None:
        self._discovery.subscribe(self._on_change)
        await self._discovery.watch([TOOL_SERVICE])
        await self.refresh()
        self._spawn(self._refresh_periodically())

    async def refresh(self) -> None:
        """Lists the tools of every current instance; unreachable instances are skipped until the next refresh."""
        async with self._lock:
            endpoints = self._endpoints
            for address in set(self._channels) - {endpoint.address for endpoint in endpoints}:
                await self._channels.pop(address).close()
            listed = await asyncio.gather(*(self._list(endpoint.address) for endpoint in endpoints))
            offered: dict[str, tuple[Any, list[tuple[str, tool_service_pb2_grpc.ToolServiceStub]]]] = {}
            for endpoint, definitions in zip(endpoints, listed, strict=True):
                stub = tool_service_pb2_grpc.ToolServiceStub(self._channel(endpoint.address))
                for definition in definitions:
                    offered.setdefault(definition.name, (definition, []))[1].append((endpoint.address, stub))
            tools: dict[str, RemoteTool] = {}
            for name, (definition, instances) in offered.items():
                try:
                    tools[name] = RemoteTool(definition, instances)
                except Exception as error:  # noqa: BLE001 - one bad schema must not hide the other tools
                    log.warning("remote tool skipped: bad JSON Schema", tool=name, error=str(error)[:200])
            self._tools = tools
            log.info("remote tools listed", instances=len(endpoints), tools=sorted(tools))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _on_change(self, service: str, endpoints: tuple[Endpoint, ...]) -> None:
        if service != TOOL_SERVICE:
            return
        self._endpoints = endpoints
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no running loop yet: start() refreshes anyway
            return
        self._spawn(self.refresh())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception as error:  # noqa: BLE001 - keep refreshing; the last good list stays
                log.warning("remote tool refresh failed", error=repr(error))

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = aio_channel(address, self._security)
        return self._channels[address]

    async def _list(self, address: str) -> list[Any]:
        stub = tool_service_pb2_grpc.ToolServiceStub(self._channel(address))
        try:
            response = await stub.ListTools(tpb.ListToolsRequest(), timeout=self._list_timeout)
        except grpc.aio.AioRpcError as error:
            log.warning("tool service unreachable", address=address, code=error.code().name)
            return []
        return list(response.tools)

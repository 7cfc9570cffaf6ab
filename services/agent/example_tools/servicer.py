"""ToolService for the example tools, with an optional call-events file.

It shows what a multi-tenant ToolService does with the caller identity the
agent sends (`llmmesh-tenant`, `llmmesh-agent-run-id` metadata): with
`require_caller` it refuses calls that lack them (UNAUTHENTICATED), and with
`allowed_tenants` calls for any other tenant (PERMISSION_DENIED). That
metadata is the agent's word: accept it only over mTLS from the agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2
from jsonschema import Draft202012Validator, exceptions

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import tool_service_pb2 as tpb
from services.agent.tools.base import META_RUN_ID, META_TENANT
from services.common.errors import MeshError, handle_errors, invalid_argument

MAX_WAIT_MS = 10_000
REASON_MISSING_CALLER = "MISSING_CALLER_IDENTITY"
REASON_TENANT_NOT_ALLOWED = "TENANT_NOT_ALLOWED"


@dataclass(frozen=True)
class _ExampleTool:
    description: str
    schema: dict[str, Any]
    run: Callable[[dict[str, Any]], Awaitable[str]]


async def _wait(arguments: dict[str, Any]) -> str:
    await asyncio.sleep(arguments["ms"] / 1000.0)
    return json.dumps({"waited_ms": arguments["ms"]})


async def _uppercase(arguments: dict[str, Any]) -> str:
    return str(arguments["text"]).upper()


TOOLS: dict[str, _ExampleTool] = {
    "wait": _ExampleTool(
        "Waits the given number of milliseconds, then says so.",
        {
            "type": "object",
            "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS}},
            "required": ["ms"],
            "additionalProperties": False,
        },
        _wait,
    ),
    "uppercase": _ExampleTool(
        "Returns the text in upper case.",
        {
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 100_000}},
            "required": ["text"],
            "additionalProperties": False,
        },
        _uppercase,
    ),
}


class ExampleToolServicer:
    """Serves TOOLS; bad arguments are INVALID_ARGUMENT, unknown tools NOT_FOUND."""

    def __init__(
        self, *, events_file: str = "", require_caller: bool = False, allowed_tenants: frozenset[str] = frozenset()
    ) -> None:
        self._events_file = events_file
        self._require_caller = require_caller or bool(allowed_tenants)
        self._allowed_tenants = allowed_tenants

    @handle_errors
    async def ListTools(  # noqa: N802 - gRPC method name
        self, request: tpb.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> tpb.ListToolsResponse:
        response = tpb.ListToolsResponse()
        for name, tool in TOOLS.items():
            parameters = struct_pb2.Struct()
            parameters.update(tool.schema)
            response.tools.append(
                chat_pb2.ToolDefinition(name=name, description=tool.description, parameters=parameters)
            )
        return response

    @handle_errors
    async def CallTool(  # noqa: N802 - gRPC method name
        self, request: tpb.CallToolRequest, context: grpc.aio.ServicerContext
    ) -> tpb.CallToolResponse:
        tool = TOOLS.get(request.name)
        if tool is None:
            raise MeshError(
                grpc.StatusCode.NOT_FOUND, f"no tool {request.name!r} here; offered: {', '.join(sorted(TOOLS))}"
            )
        caller = self._caller(context)
        arguments = _arguments(request.arguments_json, tool.schema)
        self._record("start", request, caller)
        try:
            content = await tool.run(arguments)
        except asyncio.CancelledError:
            self._record("cancelled", request, caller)
            raise
        self._record("end", request, caller)
        return tpb.CallToolResponse(content=content)

    def _caller(self, context: grpc.aio.ServicerContext) -> dict[str, str]:
        """The tenant and run id the agent sent; refused when required and missing, or not allowed."""
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        caller = {"tenant": metadata.get(META_TENANT, ""), "run_id": metadata.get(META_RUN_ID, "")}
        missing = [key for key, name in ((META_TENANT, "tenant"), (META_RUN_ID, "run_id")) if not caller[name]]
        if self._require_caller and missing:
            raise MeshError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this tool service needs to know who a call is for: metadata {', '.join(missing)} missing; "
                "call it through the agent with caller auth on (LLMMESH_AUTH_FILE)",
                reason=REASON_MISSING_CALLER,
            )
        if self._allowed_tenants and caller["tenant"] not in self._allowed_tenants:
            raise MeshError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"tenant {caller['tenant']!r} may not use this tool service (LLMMESH_TOOL_ALLOWED_TENANTS)",
                reason=REASON_TENANT_NOT_ALLOWED,
            )
        return caller

    def _record(self, event: str, request: tpb.CallToolRequest, caller: dict[str, str]) -> None:
        if not self._events_file:
            return
        line = json.dumps(
            {
                "event": event,
                "tool": request.name,
                "call_id": request.call_id,
                "pid": os.getpid(),
                "time": time.time(),
                **caller,
            }
        )
        with open(self._events_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _arguments(arguments_json: str, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        arguments = json.loads(arguments_json or "{}")
    except json.JSONDecodeError as error:
        raise invalid_argument("arguments_json", f"is not valid JSON ({error.msg}); send a JSON object") from None
    problem = exceptions.best_match(Draft202012Validator(schema).iter_errors(arguments))
    if problem is not None:
        raise invalid_argument("arguments_json", f"{problem.json_path}: {problem.message}")
    return arguments

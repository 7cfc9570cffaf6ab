"""ToolService for the example tools, with an optional call-events file."""

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
from services.common.errors import MeshError, handle_errors, invalid_argument

MAX_WAIT_MS = 10_000


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

    def __init__(self, *, events_file: str = "") -> None:
        self._events_file = events_file

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
        arguments = _arguments(request.arguments_json, tool.schema)
        self._record("start", request)
        try:
            content = await tool.run(arguments)
        except asyncio.CancelledError:
            self._record("cancelled", request)
            raise
        self._record("end", request)
        return tpb.CallToolResponse(content=content)

    def _record(self, event: str, request: tpb.CallToolRequest) -> None:
        if not self._events_file:
            return
        line = json.dumps(
            {"event": event, "tool": request.name, "call_id": request.call_id, "pid": os.getpid(), "time": time.time()}
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

"""The tools an agent run may use, and running one model tool call safely.

`execute` never raises for anything the model did or a tool did: an unknown
tool, arguments that are not JSON or do not fit the schema, a failure, a
timeout — each becomes a ToolResult with `is_error` that the model sees next
step. Only cancellation (the caller went away) propagates.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping

import structlog

from llmmesh.v1 import chat_pb2
from services.agent.tools.base import Tool, ToolContext, ToolFailure
from services.agent.tools.remote import RemoteToolCatalog

MAX_RESULT_CHARS = 32_000

log = structlog.get_logger(__name__)


class ToolRegistry:
    """Built-in tools plus whatever the remote catalog currently offers; built-ins win a name clash."""

    def __init__(self, builtins: Iterable[Tool], remote: RemoteToolCatalog | None = None) -> None:
        self._builtins = {tool.name: tool for tool in builtins}
        self._remote = remote

    def available(self) -> dict[str, Tool]:
        tools: dict[str, Tool] = dict(self._remote.tools) if self._remote else {}
        tools.update(self._builtins)
        return dict(sorted(tools.items()))


async def execute(
    tools: Mapping[str, Tool], call: chat_pb2.ToolCall, *, timeout: float, context: ToolContext
) -> chat_pb2.ToolResult:
    """Runs one tool call for `context`'s caller; every failure becomes an error result the model can read."""
    result = chat_pb2.ToolResult(tool_call_id=call.id, name=call.name)
    tool = tools.get(call.name)
    if tool is None:
        result.content = f"unknown tool {call.name!r}; the tools you may call are: {', '.join(tools) or 'none'}"
        result.is_error = True
        return result
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except json.JSONDecodeError as error:
        result.content = f"the arguments are not valid JSON ({error.msg} at position {error.pos}); send a JSON object"
        result.is_error = True
        return result
    problem = tool.schema_error(arguments)
    if problem is not None:
        result.content = f"invalid arguments for {tool.name}: {problem}. Fix them to match the tool's schema."
        result.is_error = True
        return result
    try:
        async with asyncio.timeout(timeout):
            output = await tool.run(arguments, call_id=call.id, timeout=timeout, context=context)
    except TimeoutError:
        result.content, result.is_error = f"{tool.name} timed out after {timeout:.1f}s", True
    except ToolFailure as failure:
        result.content, result.is_error = str(failure), True
    except Exception as error:  # a broken tool is an observation, not a crashed run
        log.warning(
            "tool raised", tool=tool.name, error_type=type(error).__name__, run_id=context.run_id, exc_info=error
        )
        result.content, result.is_error = f"{tool.name} failed unexpectedly ({type(error).__name__})", True
    else:
        result.content, result.is_error = output.content, output.is_error
    if len(result.content) > MAX_RESULT_CHARS:
        cut = len(result.content) - MAX_RESULT_CHARS
        result.content = result.content[:MAX_RESULT_CHARS] + f"... [{cut} more characters cut]"
    return result

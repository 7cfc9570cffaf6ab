"""The agent's tools: built-ins that are safe by construction, and remote ToolServices."""

from services.agent.tools.base import META_RUN_ID, META_TENANT, Tool, ToolContext, ToolFailure, ToolOutput
from services.agent.tools.builtin import builtin_tools
from services.agent.tools.registry import ToolRegistry, execute
from services.agent.tools.remote import TOOL_SERVICE, RemoteToolCatalog

__all__ = [
    "META_RUN_ID",
    "META_TENANT",
    "TOOL_SERVICE",
    "RemoteToolCatalog",
    "Tool",
    "ToolContext",
    "ToolFailure",
    "ToolOutput",
    "ToolRegistry",
    "builtin_tools",
    "execute",
]

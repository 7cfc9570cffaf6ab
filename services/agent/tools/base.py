"""What a tool is to the agent: a name, a JSON Schema, and an async run for one caller."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2
from jsonschema import exceptions as schema_errors
from jsonschema import validators

from llmmesh.v1 import chat_pb2
from services.common.redaction import Redactor

#: gRPC metadata on every agent → ToolService call (documented in tool_service.proto).
META_RUN_ID = "llmmesh-agent-run-id"
META_TENANT = "llmmesh-tenant"


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What the model will see: the content, and whether the tool failed."""

    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who a tool call is for, and the secrets its errors must never carry on."""

    run_id: str
    #: The caller's tenant; empty when the agent runs without caller auth.
    tenant: str = ""
    #: Knows the agent's router key and this caller's key.
    redactor: Redactor = field(default_factory=Redactor)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What a remote tool call carries so a multi-tenant ToolService can authorise it."""
        return ((META_RUN_ID, self.run_id), *(((META_TENANT, self.tenant),) if self.tenant else ()))


class ToolFailure(Exception):  # noqa: N818 - reads as "raise ToolFailure(...)"
    """Raised by a tool that ran and failed; the message is shown to the model."""


class Tool(abc.ABC):
    """A tool the model may call. Arguments arrive already valid against `schema`."""

    def __init__(self, name: str, description: str, schema: dict[str, Any]) -> None:
        self.name = name
        self.description = description
        self.schema = schema
        validator_class = validators.validator_for(schema)
        validator_class.check_schema(schema)  # a broken schema is the tool's bug: fail at registration
        self._validator = validator_class(schema)

    @property
    @abc.abstractmethod
    def source(self) -> str:
        """Where the tool runs, for people: "builtin" or "remote 10.0.0.7:50070"."""

    @abc.abstractmethod
    async def run(self, arguments: dict[str, Any], *, call_id: str, timeout: float, context: ToolContext) -> ToolOutput:
        """Runs the call within `timeout` seconds; raises ToolFailure for failures the model should see."""

    def definition(self) -> chat_pb2.ToolDefinition:
        parameters = struct_pb2.Struct()
        parameters.update(self.schema)
        return chat_pb2.ToolDefinition(name=self.name, description=self.description, parameters=parameters)

    def schema_error(self, arguments: Any) -> str | None:
        """None when `arguments` fit the schema, else the most relevant error, with its path."""
        error = schema_errors.best_match(self._validator.iter_errors(arguments))
        if error is None:
            return None
        where = error.json_path if error.path else "arguments"
        return f"{where}: {error.message}"

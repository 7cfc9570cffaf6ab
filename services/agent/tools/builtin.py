"""Built-in tools, safe by construction: no I/O, no code execution, bounded work."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.agent.tools.base import Tool, ToolContext, ToolFailure, ToolOutput
from services.agent.tools.calculator import MAX_EXPRESSION_CHARS, CalculatorError, evaluate, format_number

MAX_TEXT_CHARS = 200_000


class FunctionTool(Tool):
    """A tool backed by a quick, pure Python function (runs on the event loop)."""

    def __init__(self, name: str, description: str, schema: dict[str, Any], function: Callable[..., str]) -> None:
        super().__init__(name, description, schema)
        self._function = function

    @property
    def source(self) -> str:
        return "builtin"

    async def run(self, arguments: dict[str, Any], *, call_id: str, timeout: float, context: ToolContext) -> ToolOutput:
        return ToolOutput(self._function(**arguments))


def _calculator(expression: str) -> str:
    try:
        return format_number(evaluate(expression))
    except CalculatorError as error:
        raise ToolFailure(f"cannot evaluate {expression!r}: {error}") from None


def _current_time(timezone: str = "UTC") -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolFailure(
            f"unknown time zone {timezone!r}; use an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'"
        ) from None
    now = datetime.now(UTC).astimezone(zone)
    return json.dumps(
        {"timezone": timezone, "iso": now.isoformat(timespec="seconds"), "weekday": now.strftime("%A")},
    )


def _text_stats(text: str) -> str:
    words = re.findall(r"\S+", text)
    sentences = [s for s in re.split(r"[.!?]+(?:\s|$)", text) if s.strip()]
    return json.dumps(
        {"characters": len(text), "words": len(words), "lines": len(text.splitlines()), "sentences": len(sentences)}
    )


def builtin_tools() -> list[Tool]:
    """A fresh set of the built-in tools."""
    return [
        FunctionTool(
            "calculator",
            "Evaluates an arithmetic expression exactly: numbers, + - * / // % **, parentheses, "
            "pi, e, and abs round min max sqrt exp log log10 log2 sin cos tan floor ceil.",
            {
                "type": "object",
                "properties": {
                    "expression": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_EXPRESSION_CHARS,
                        "description": "For example '1234 * 12' or 'sqrt(2) / 3'.",
                    }
                },
                "required": ["expression"],
                "additionalProperties": False,
            },
            _calculator,
        ),
        FunctionTool(
            "current_time",
            "The current date and time in a time zone, as ISO 8601 with the weekday.",
            {
                "type": "object",
                "properties": {
                    "timezone": {
                        "type": "string",
                        "description": "IANA time zone name such as 'UTC' or 'Europe/Berlin' (default UTC).",
                        "default": "UTC",
                        "maxLength": 64,
                    }
                },
                "additionalProperties": False,
            },
            _current_time,
        ),
        FunctionTool(
            "text_stats",
            "Counts the characters, words, lines and sentences of a text.",
            {
                "type": "object",
                "properties": {"text": {"type": "string", "maxLength": MAX_TEXT_CHARS}},
                "required": ["text"],
                "additionalProperties": False,
            },
            _text_stats,
        ),
    ]

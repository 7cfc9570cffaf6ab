"""Structured logs (structlog): JSON lines in containers, readable on a terminal.

Exceptions are logged as their type and frames (file, line, function), never
with frame locals (structlog's default renders them: multi-MB request reprs,
prompts included, for every frame of a deep stack), and their message only
when content capture is on (LLMMESH_CAPTURE_CONTENT) or when it is a
MeshError's, which the mesh writes itself: other messages can quote what a
caller sent (a pydantic or JSON error, a codec error, an SDK's echo).
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.tracebacks import ExceptionDictTransformer

from services.common.errors import MeshError
from services.common.telemetry import telemetry

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(service: str, level: str = "info", fmt: str = "auto") -> None:
    """Configures structlog for the process; every line carries the service name."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_console_exception)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.ExceptionRenderer(_exception_dicts) if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries using stdlib logging (grpc, httpx2, SDKs) go to stderr at WARNING+.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter(logging.BASIC_FORMAT))
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), handlers=[handler], force=True)


def add_trace_context(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Adds trace_id and span_id of the current span, so a log line finds its trace."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event["trace_id"] = format(span_context.trace_id, "032x")
        event["span_id"] = format(span_context.span_id, "016x")
    return event


_HIDDEN = "(message hidden: it may quote request content; LLMMESH_CAPTURE_CONTENT=true shows it)"
_frames = ExceptionDictTransformer(show_locals=False, max_frames=30)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exception_dicts(exc_info: ExcInfo) -> list[dict[str, Any]]:
    """structlog's exception dicts without locals, messages hidden unless capture is on."""
    stacks = _frames(exc_info)
    if _capture_content():
        return stacks
    pending = list(stacks)
    while pending:  # exception groups nest their members' stacks
        stack = pending.pop()
        if stack.get("exc_type") != MeshError.__name__:
            stack["exc_value"] = _HIDDEN
            stack["exc_notes"] = []
            stack["syntax_error"] = None
        for member in stack.get("exceptions") or ():
            pending.extend(member)
    return stacks


def _format(exc_info: ExcInfo) -> str:
    lines = []
    for stack in _exception_dicts(exc_info):
        lines += [f"  {frame['filename']}:{frame['lineno']} in {frame['name']}" for frame in stack["frames"]]
        lines.append(f"{stack['exc_type']}: {stack['exc_value']}")
    return "\n".join(["Traceback (most recent call last):", *lines])


def _console_exception(sio: TextIO, exc_info: ExcInfo) -> None:
    sio.write("\n" + _format(exc_info))


class _SafeFormatter(logging.Formatter):
    """Standard-library loggers (grpc, uvicorn, SDKs): the same exception rules."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        if ei[0] is None:
            return ""
        return _format(ei) if not _capture_content() else "".join(traceback.format_exception(*ei))


def _capture_content() -> bool:
    return telemetry().capture_content

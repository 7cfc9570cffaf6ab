"""What differs between the door's chat operations: how a body is read and answers and errors are written.

The HTTP gateway runs every chat-shaped operation through one path (auth,
parsing, validation, admission, deadline, engine, disconnect handling,
streaming); a `DoorWire` is the part that speaks one OpenAI operation's
format. One wire object serves one HTTP request: it keeps how the caller
spelled its fields, for naming them in errors.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response

from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError
from services.router import openai_response
from services.router.openai_errors import error_body, http_error
from services.router.openai_request import BodyFields, ParsedChat, parse_chat_body

ATTEMPTS_HEADER = "x-llmmesh-attempts"


class StreamWriter(Protocol):
    """Turns one router stream into SSE bytes."""

    def opening(self) -> list[bytes]:
        """What goes out before the first router event."""
        ...

    def event(self, event: rpb.StreamChatResponse) -> list[bytes]:
        """What one router event becomes."""
        ...

    def failed(self, error: MeshError) -> list[bytes]:
        """How a stream that fails after it started ends."""
        ...

    def done(self) -> list[bytes]:
        """What follows the router's final message."""
        ...


class DoorWire(Protocol):
    """One OpenAI operation's format over the router engine."""

    def parse(self, payload: object, fallback_header: str | None) -> ParsedChat:
        """The router request for a body; raises MeshError naming the caller's field."""
        ...

    def error(self, error: MeshError) -> Response:
        """The HTTP error response, naming the caller's fields."""
        ...

    def answer(self, answer: rpb.ChatResponse) -> Response:
        """The HTTP response for a unary answer."""
        ...

    def stream(self, model: str) -> tuple[StreamWriter, dict[str, str]]:
        """A writer for a stream answered first under `model`, and its response headers."""
        ...


def error_response(error: MeshError, fields: BodyFields | None = None, **options: Any) -> Response:
    mapped = http_error(error, fields, **options)
    return JSONResponse(mapped.body, status_code=mapped.status, headers=mapped.headers)


def answer_headers(answer: rpb.ChatResponse, body: dict[str, Any], identifier: str) -> dict[str, str]:
    """The mesh's headers on a unary answer: attempts (compact), provider, request id."""
    return {
        ATTEMPTS_HEADER: attempts_header(body["llmmesh"]["attempts"]),
        "x-llmmesh-provider": answer.provider,
        "x-request-id": identifier,
    }


def attempts_header(attempts: list[dict[str, Any]]) -> str:
    """The attempts as one ASCII JSON line; error messages stay in the body, to keep the header small."""
    compact = [{key: value for key, value in attempt.items() if key != "message"} for attempt in attempts]
    return json.dumps(compact, separators=(",", ":"))


def stream_headers(identifier: str) -> dict[str, str]:
    return {"cache-control": "no-cache", "x-accel-buffering": "no", "x-request-id": identifier}


class ChatCompletionsWire:
    """POST /v1/chat/completions."""

    def __init__(self) -> None:
        self._parsed: ParsedChat | None = None

    def parse(self, payload: object, fallback_header: str | None) -> ParsedChat:
        self._parsed = parse_chat_body(payload, fallback_header=fallback_header)
        return self._parsed

    def error(self, error: MeshError) -> Response:
        return error_response(error, self._parsed.fields if self._parsed is not None else None)

    def answer(self, answer: rpb.ChatResponse) -> Response:
        identifier = openai_response.completion_id()
        legacy = self._parsed is not None and self._parsed.fields.legacy_functions
        body = openai_response.completion(answer, identifier, legacy=legacy)
        return JSONResponse(body, headers=answer_headers(answer, body, identifier))

    def stream(self, model: str) -> tuple[StreamWriter, dict[str, str]]:
        assert self._parsed is not None
        identifier = openai_response.completion_id()
        chunks = openai_response.ChunkStream(
            identifier, model, include_usage=self._parsed.include_usage, legacy=self._parsed.fields.legacy_functions
        )
        return _ChunkWriter(chunks, self._parsed.fields), stream_headers(identifier)


class _ChunkWriter:
    """chat.completion.chunk events, `[DONE]` after the final message, or an error event."""

    def __init__(self, chunks: openai_response.ChunkStream, fields: BodyFields) -> None:
        self._chunks = chunks
        self._fields = fields

    def opening(self) -> list[bytes]:
        return [openai_response.sse(self._chunks.opening())]

    def event(self, event: rpb.StreamChatResponse) -> list[bytes]:
        return [openai_response.sse(chunk) for chunk in self._chunks.event(event)]

    def failed(self, error: MeshError) -> list[bytes]:
        return [openai_response.sse(error_body(error, self._fields))]

    def done(self) -> list[bytes]:
        return [openai_response.sse("[DONE]")]

"""A fake Anthropic Messages API on loopback: a real HTTP server, scripted per test.

It speaks the wire format the `anthropic` SDK reads: JSON `Message` bodies,
SSE streams with the real event names (message_start, content_block_*,
message_delta, message_stop, ping, error), error bodies
`{"type": "error", "error": {"type", "message"}}`, Retry-After and
anthropic-ratelimit-* headers. Bodies are built from the SDK's own types.

Each request takes the next scripted `Reply` (an unscripted request gets a
500). Every request is recorded (path, headers without credentials, JSON
body, which auth scheme carried the key) and the fake notices when the
client goes away before the answer is complete. `raw_reply` sends any bytes
with any content type (broken or foreign bodies); with
`echo_credentials=True` every error body repeats the credentials the request
carried, to test redaction.

    fake = FakeAnthropic(api_key="test-key").start()
    fake.script(json_reply(message(text="hi")))
    ... point ANTHROPIC_BASE_URL at fake.url ...
    assert fake.requests[0].body["model"] == "claude-haiku-4-5"
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from anthropic.types import (
    Message,
    OutputTokensDetails,
    RedactedThinkingBlock,
    RefusalStopDetails,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)

from services.testing import wire_parts

_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


@dataclass
class Reply:
    """One scripted answer.

    `events` set: an SSE stream; else `raw_body` as-is with `content_type`,
    else a JSON body; `status=0` closes the connection without answering.
    `delay` passes before the status line; `event_delay` between events.
    `end="abort"` drops the connection after the events without ending the
    chunked body.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, Any]] | None = None
    delay: float = 0.0
    event_delay: float = 0.0
    end: Literal["clean", "abort"] = "clean"
    raw_body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class RecordedRequest:
    """What one request carried, credentials left out."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    auth_scheme: str  # "bearer", "x-api-key" or ""
    key_matches: bool
    disconnected: threading.Event = field(default_factory=threading.Event)
    completed: threading.Event = field(default_factory=threading.Event)


class FakeAnthropic:
    """The server; `start()` binds 127.0.0.1 on a free port."""

    def __init__(self, *, api_key: str = "", echo_credentials: bool = False, check_parts: bool = False) -> None:
        self.api_key = api_key
        #: Requests whose content blocks the SDK's own types reject get a 400 (wire_parts.py).
        self.check_parts = check_parts
        #: Error bodies repeat the request's credentials in their message.
        self.echo_credentials = echo_credentials
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeAnthropic:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def script(self, *replies: Reply) -> None:
        """Queues answers for the next requests, in order."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forgets the script and the recorded requests."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()

    def _take(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.popleft()
        return error_reply(500, "api_error", "fake-anthropic: no scripted reply for this request")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the recorded requests instead."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = self._record(body)
        reply = self.fake._take(request)
        problem = wire_parts.anthropic_problem(body) if self.fake.check_parts and isinstance(body, dict) else None
        if problem is not None:
            reply = error_reply(400, "invalid_request_error", problem)
        if self.fake.echo_credentials and reply.status >= 400 and isinstance(reply.body, dict):
            reply = self._echoing(reply)
        if reply.delay and not self._wait(reply.delay, request):
            return
        if reply.status == 0:
            # A connection that dies before any answer: the SDK's APIConnectionError.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            request.completed.set()
            return
        try:
            if reply.events is None:
                self._send_json(reply)
            else:
                self._send_stream(reply, request)
        except (BrokenPipeError, ConnectionResetError):
            request.disconnected.set()
            self.close_connection = True
        finally:
            request.completed.set()

    def _record(self, body: Any) -> RecordedRequest:
        authorization = self.headers.get("authorization", "")
        api_key_header = self.headers.get("x-api-key", "")
        if authorization.lower().startswith("bearer "):
            scheme, key = "bearer", authorization[len("bearer ") :]
        elif api_key_header:
            scheme, key = "x-api-key", api_key_header
        else:
            scheme, key = "", ""
        headers = {
            name.lower(): value for name, value in self.headers.items() if name.lower() not in _CREDENTIAL_HEADERS
        }
        return RecordedRequest(
            method=self.command,
            path=self.path,
            headers=headers,
            body=body,
            auth_scheme=scheme,
            key_matches=bool(key) and key == self.fake.api_key,
        )

    def _echoing(self, reply: Reply) -> Reply:
        authorization = self.headers.get("authorization", "")
        api_key = self.headers.get("x-api-key", "") or authorization.removeprefix("Bearer ")
        body = json.loads(json.dumps(reply.body))
        error = body.setdefault("error", {"type": "api_error", "message": ""})
        error["message"] = (
            f"{error.get('message') or 'error'} (authorization: {authorization}; x-api-key: {api_key}; "
            f"{self.path}?key={api_key}; key {api_key})"
        )
        return Reply(status=reply.status, body=body, headers=reply.headers, delay=reply.delay)

    def _send_json(self, reply: Reply) -> None:
        payload = reply.raw_body if reply.raw_body is not None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("request-id", "req_fake_json")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_stream(self, reply: Reply, request: RecordedRequest) -> None:
        self.send_response(reply.status)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", "req_fake_stream")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for number, (name, data) in enumerate(reply.events or []):
            if number and reply.event_delay and not self._wait(reply.event_delay, request):
                return
            text = data if isinstance(data, str) else json.dumps(data)  # a str is sent as-is (broken events)
            chunk = f"event: {name}\ndata: {text}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        if reply.end == "abort":
            # Gone mid-body: no terminating chunk, the socket just closes.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _wait(self, seconds: float, request: RecordedRequest) -> bool:
        """Sleeps, watching the socket; False (and recorded) if the client hung up."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                request.disconnected.set()
                self.close_connection = True
                return False
        return True


# --- Wire bodies, built from the SDK's types -------------------------------------------------


def usage(
    input_tokens: int = 12,
    output_tokens: int = 7,
    *,
    cache_read: int | None = None,
    cache_creation: int | None = None,
    thinking_tokens: int | None = None,
) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_creation,
        output_tokens_details=OutputTokensDetails(thinking_tokens=thinking_tokens)
        if thinking_tokens is not None
        else None,
    )


def message(
    *,
    text: str | list[str] = "",
    tool_calls: Sequence[tuple[str, str, dict[str, Any]]] = (),
    thinking: Sequence[tuple[str, str]] = (),
    redacted_thinking: Sequence[str] = (),
    stop_reason: str | None = "end_turn",
    stop_sequence: str | None = None,
    model: str = "claude-haiku-4-5-20251001",
    message_id: str = "msg_fake_01",
    usage_: Usage | None = None,
    stop_details: dict[str, Any] | None = None,
    citations: dict[int, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A Messages API response body: thinking blocks, then text, then tool_use blocks.

    `stop_details`: the RefusalStopDetails ({"type": "refusal", "category", "explanation"})
    a stop_reason "refusal" comes with. `citations`: the TextCitation objects (char_location,
    page_location, content_block_location, web_search_result_location, search_result_location)
    of the text block at each index of `text`.
    """
    content: list[Any] = [ThinkingBlock(type="thinking", thinking=t, signature=s) for t, s in thinking]
    content += [RedactedThinkingBlock(type="redacted_thinking", data=d) for d in redacted_thinking]
    texts = [text] if isinstance(text, str) else text
    cited = citations or {}
    content += [
        TextBlock.model_validate({"type": "text", "text": t, "citations": cited.get(i)})
        for i, t in enumerate(texts)
        if t
    ]
    content += [ToolUseBlock(type="tool_use", id=i, name=n, input=a) for i, n, a in tool_calls]
    built = Message(
        id=message_id,
        type="message",
        role="assistant",
        model=model,
        content=content,
        stop_reason=stop_reason,  # type: ignore[arg-type]
        stop_sequence=stop_sequence,
        usage=usage_ or usage(),
        stop_details=RefusalStopDetails.model_validate(stop_details) if stop_details is not None else None,
    )
    return built.model_dump(mode="json", exclude_none=True) | {
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
    }


def stream_events(body: dict[str, Any], *, truncate: bool = False, pieces: int = 2) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events the API sends for the response `body` (from `message()`).

    Text and tool input arrive in `pieces` fragments. `truncate` leaves out
    message_delta and message_stop, as a stream cut short but ended cleanly.
    """
    start = {**body, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**body["usage"], "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    events.append(("ping", {"type": "ping"}))
    for index, block in enumerate(body["content"]):
        events.extend(_block_events(index, block, pieces))
    if truncate:
        return events
    delta_usage = {"output_tokens": body["usage"]["output_tokens"]}
    if "output_tokens_details" in body["usage"]:
        delta_usage["output_tokens_details"] = body["usage"]["output_tokens_details"]
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": body["stop_reason"],
                    "stop_sequence": body.get("stop_sequence"),
                    **({"stop_details": body["stop_details"]} if "stop_details" in body else {}),
                },
                "usage": delta_usage,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: dict[str, Any], pieces: int) -> list[tuple[str, dict[str, Any]]]:
    kind = block["type"]
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    if kind == "text":
        # As the API streams a cited block: an empty citations list at the start, each citation
        # as a citations_delta before the text it supports.
        cited = block.get("citations") or []
        start = {"type": "text", "text": "", **({"citations": []} if cited else {})}
        deltas = [{"type": "citations_delta", "citation": c} for c in cited]
        deltas += [{"type": "text_delta", "text": p} for p in _split(block["text"], pieces)]
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        arguments = json.dumps(block["input"]) if block["input"] else ""
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _split(arguments, pieces)] or [
            {"type": "input_json_delta", "partial_json": ""}
        ]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _split(block["thinking"], pieces)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:
        start, deltas = block, []
    return [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
        *[("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas],
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def error_body(error_type: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": text}, "request_id": "req_fake_error"}


def ratelimit_headers(
    *, requests_remaining: int = 49, requests_limit: int = 50, tokens_remaining: int = 39000, tokens_limit: int = 40000
) -> dict[str, str]:
    """anthropic-ratelimit-* headers with resets 30 s (requests) and 60 s (tokens) from now."""
    now = time.time()
    return {
        "anthropic-ratelimit-requests-remaining": str(requests_remaining),
        "anthropic-ratelimit-requests-limit": str(requests_limit),
        "anthropic-ratelimit-requests-reset": _rfc3339(now + 30),
        "anthropic-ratelimit-tokens-remaining": str(tokens_remaining),
        "anthropic-ratelimit-tokens-limit": str(tokens_limit),
        "anthropic-ratelimit-tokens-reset": _rfc3339(now + 60),
    }


def _rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


# --- Replies ---------------------------------------------------------------------------------


def json_reply(body: dict[str, Any], *, headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
    return Reply(status=200, body=body, headers=headers or {}, delay=delay)


def raw_reply(data: bytes, *, content_type: str, status: int = 200) -> Reply:
    """`data` as the body, as-is: a proxy's HTML page, broken JSON, a foreign shape."""
    return Reply(status=status, raw_body=data, content_type=content_type)


def sse_reply(
    events: list[tuple[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    event_delay: float = 0.0,
    end: Literal["clean", "abort"] = "clean",
) -> Reply:
    return Reply(status=200, events=events, headers=headers or {}, event_delay=event_delay, end=end)


def error_reply(status: int, error_type: str, text: str, *, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=error_body(error_type, text), headers=headers or {})


def dropped_connection() -> Reply:
    """The connection closes before any status line."""
    return Reply(status=0)


def in_stream_error(error_type: str = "overloaded_error", text: str = "Overloaded") -> tuple[str, dict[str, Any]]:
    """An `error` SSE event, as the API sends when it fails after the stream began."""
    return ("error", error_body(error_type, text))


def citation_examples() -> list[dict[str, Any]]:
    """One TextCitation of each type Anthropic returns on a text block, as on the wire."""
    return [
        {
            "type": "char_location",
            "cited_text": "The grass is green.",
            "document_index": 0,
            "document_title": "Notes",
            "start_char_index": 0,
            "end_char_index": 19,
            "file_id": None,
        },
        {
            "type": "page_location",
            "cited_text": "Page two says so.",
            "document_index": 1,
            "document_title": "Report.pdf",
            "start_page_number": 2,
            "end_page_number": 3,
            "file_id": "file_011abc",
        },
        {
            "type": "content_block_location",
            "cited_text": "A block.",
            "document_index": 2,
            "document_title": None,
            "start_block_index": 0,
            "end_block_index": 1,
            "file_id": None,
        },
        {
            "type": "web_search_result_location",
            "cited_text": "From the web.",
            "encrypted_index": "EnC0dEd",
            "title": "A page",
            "url": "https://example.org/page",
        },
        {
            "type": "search_result_location",
            "cited_text": "From a result.",
            "search_result_index": 0,
            "source": "https://kb.example/doc-7",
            "title": "KB doc 7",
            "start_block_index": 1,
            "end_block_index": 2,
        },
    ]

"""A loopback fake of the OpenAI Chat Completions and Embeddings APIs, for adapter tests.

A real HTTP/1.1 server (stdlib ThreadingHTTPServer on 127.0.0.1, port 0)
speaking OpenAI's wire format: JSON bodies, SSE streams of
`chat.completion.chunk` objects ending in `data: [DONE]`, and OpenAI error
bodies. Bodies are built from the SDK's own types (`ChatCompletion`,
`ChatCompletionChunk`) so they have the real shape.

Each test scripts the replies (a FIFO queue of `Reply`); the fake records
every request it receives (path, headers without credentials, JSON body) and
notices when a client goes away in the middle of a stream. With
`echo_credentials=True` every error body repeats the credentials the request
carried (as a careless proxy or a verbose upstream does), to test redaction.

    fake = FakeOpenAI().start()
    fake.script(Reply.json(completion("hi")))
    ... call the adapter with OPENAI_BASE_URL=fake.url ...
    assert fake.requests[0].body["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from openai.types import CompletionUsage, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from services.testing import wire_parts

Ending = Literal["done", "eof", "cut"]
_SECRET_HEADERS = frozenset({"authorization", "api-key", "openai-organization", "openai-project"})


@dataclass
class Reply:
    """One scripted answer. Build it with the class methods."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before sending anything (a slow upstream).
    delay: float = 0.0
    #: SSE data items (dicts are JSON-encoded); None for a JSON reply.
    events: list[Any] | None = None
    #: Seconds between SSE events.
    event_delay: float = 0.0
    #: How a stream ends: "done" ([DONE] + clean end), "eof" (clean end, no
    #: [DONE]), "cut" (socket closed mid-body, no terminating chunk).
    ending: Ending = "done"
    #: After the events, keep the stream open this long (sending SSE comments)
    #: unless the client disconnects first.
    hold: float = 0.0
    #: Send this body as-is (with `content_type`) instead of JSON.
    raw_body: bytes | None = None
    content_type: str = "application/json"
    #: Close the connection without any response.
    drop: bool = False
    #: Answer a `/embeddings` request from its own body: `fake_vector` per input,
    #: this many values (or the request's `dimensions`), in its `encoding_format`.
    embed_dimensions: int | None = None

    @classmethod
    def embeddings(cls, dimensions: int = 8, *, headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
        return cls(embed_dimensions=dimensions, headers=dict(headers or {}), delay=delay)

    @classmethod
    def raw(cls, data: bytes, *, content_type: str, status: int = 200) -> Reply:
        return cls(status=status, raw_body=data, content_type=content_type)

    @classmethod
    def dropped(cls) -> Reply:
        return cls(drop=True)

    @classmethod
    def json(cls, body: Any, *, status: int = 200, headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
        return cls(status=status, body=body, headers=dict(headers or {}), delay=delay)

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return cls.json(error_body(message, type=type, code=code, param=param), status=status, headers=headers)

    @classmethod
    def stream(
        cls,
        events: list[Any],
        *,
        ending: Ending = "done",
        headers: dict[str, str] | None = None,
        event_delay: float = 0.0,
        delay: float = 0.0,
        hold: float = 0.0,
    ) -> Reply:
        return cls(
            events=list(events),
            ending=ending,
            headers=dict(headers or {}),
            event_delay=event_delay,
            delay=delay,
            hold=hold,
        )


@dataclass
class RecordedRequest:
    """What the fake received (credentials left out)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    #: The bearer token matched the fake's expected key (None: no key expected).
    key_ok: bool | None
    has_authorization: bool
    #: The client's source port: two requests with the same one came over one kept-alive connection.
    client_port: int = 0


# ------------------------------------------------------------------ builders


def usage(
    prompt: int = 10, completion_tokens: int = 5, *, cached: int = 0, reasoning: int = 0, cache_write: int | None = None
) -> dict[str, Any]:
    """An OpenAI usage object; `cache_write` sets prompt_tokens_details.cache_write_tokens."""
    prompt_details: dict[str, int] = {"cached_tokens": cached, "audio_tokens": 0}
    if cache_write is not None:
        prompt_details["cache_write_tokens"] = cache_write
    return CompletionUsage.model_validate(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
        }
    ).model_dump(mode="json", exclude_none=True)


def tool_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """A function tool call as it appears in an assistant message."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def completion(
    text: str | None = "Hello!",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    model: str = "gpt-4o-mini-2024-07-18",
    completion_id: str = "chatcmpl-fake1",
    usage_body: dict[str, Any] | None = None,
    refusal: str | None = None,
    system_fingerprint: str | None = "fp_fake",
    service_tier: str | None = "default",
    reasoning_content: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A `chat.completion` object, validated by the SDK's ChatCompletion type.

    `logprobs`: the choice's `logprobs.content` (see `token_logprob`).
    `annotations`: the message's annotations (see `url_citation`).

    `reasoning_content` is not OpenAI's: OpenAI-compatible reasoning servers
    (vLLM, DeepSeek) add it to the message; the SDK keeps it as an extra field.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": refusal,
        "annotations": annotations or [],
    }
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    if tool_calls:
        message["tool_calls"] = tool_calls
    raw = {
        "id": completion_id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_body if usage_body is not None else usage(),
        "system_fingerprint": system_fingerprint,
        "service_tier": service_tier,
    }
    return ChatCompletion.model_validate(raw).model_dump(mode="json", exclude_unset=True)


def chunk(
    *,
    content: str | None = None,
    role: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
    finish_reason: str | None = None,
    usage_body: dict[str, Any] | None = None,
    no_choices: bool = False,
    model: str = "gpt-4o-mini-2024-07-18",
    completion_id: str = "chatcmpl-fake2",
    reasoning_content: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk`, validated by the SDK's ChatCompletionChunk type
    (`reasoning_content`: the compatible servers' extra delta field, as in `completion`;
    `annotations`: what search models add to a delta, an extra field to the SDK too)."""
    delta: dict[str, Any] = {}
    if reasoning_content is not None:
        delta["reasoning_content"] = reasoning_content
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    if refusal is not None:
        delta["refusal"] = refusal
    if annotations is not None:
        delta["annotations"] = annotations
    choice_logprobs = {"content": logprobs, "refusal": None} if logprobs is not None else None
    choices = (
        []
        if no_choices
        else [{"index": 0, "delta": delta, "logprobs": choice_logprobs, "finish_reason": finish_reason}]
    )
    raw = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
        "service_tier": "default",
        "choices": choices,
        "usage": usage_body,
    }
    return ChatCompletionChunk.model_validate(raw).model_dump(mode="json", exclude_unset=True)


def url_citation(url: str, title: str, start_index: int, end_index: int) -> dict[str, Any]:
    """One Chat Completions annotation of type `url_citation` (web search models)."""
    return {
        "type": "url_citation",
        "url_citation": {"url": url, "title": title, "start_index": start_index, "end_index": end_index},
    }


def token_logprob(token: str, logprob: float, *, top: dict[str, float] | None = None) -> dict[str, Any]:
    """One ChatCompletionTokenLogprob: the token's UTF-8 bytes, and `top` alternatives {token: logprob}."""
    alternatives = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in (top or {}).items()]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alternatives}


def text_stream(pieces: list[str], *, finish_reason: str | None = "stop", with_usage: bool = True) -> list[Any]:
    """The chunks OpenAI sends for a text answer with include_usage (before [DONE])."""
    events: list[Any] = [chunk(role="assistant", content="")]
    events += [chunk(content=piece) for piece in pieces]
    if finish_reason is not None:
        events.append(chunk(finish_reason=finish_reason))
        if with_usage:
            events.append(chunk(no_choices=True, usage_body=usage(12, len(pieces))))
    return events


def refusal_stream(pieces: list[str]) -> list[Any]:
    """The chunks OpenAI sends when the model refuses: `refusal` deltas, content null, finish "stop"."""
    events: list[Any] = [chunk(role="assistant", refusal="")]
    events += [chunk(refusal=piece) for piece in pieces]
    events.append(chunk(finish_reason="stop"))
    events.append(chunk(no_choices=True, usage_body=usage(12, len(pieces))))
    return events


def tool_call_delta(
    index: int, *, call_id: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    """A tool-call fragment in a stream chunk (id, type and name only on the first)."""
    out: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        out["id"] = call_id
        out["type"] = "function"
        out["function"]["name"] = name
    return out


def fake_vector(text: str, length: int) -> list[float]:
    """The fake's vector for `text`: deterministic, float32-exact, so tests compare with ==."""
    seed = hashlib.sha256(text.encode()).digest()
    return [struct.unpack("f", struct.pack("f", (seed[i % len(seed)] - 128) / 128))[0] for i in range(length)]


def embedding_response(body: Any, dimensions: int) -> dict[str, Any]:
    """OpenAI's `/embeddings` answer (a `CreateEmbeddingResponse`) for the request `body`."""
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    length = int(body.get("dimensions") or dimensions)
    tokens = sum(max(len(str(text).split()), 1) for text in inputs)
    vectors = [fake_vector(str(text), length) for text in inputs]
    data: list[dict[str, Any]] = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    answer = {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    CreateEmbeddingResponse.model_validate(answer)  # the SDK's own type: the shape is real
    if body.get("encoding_format") == "base64":
        # Little-endian float32 bytes, as OpenAI sends them (the SDK types only the float form).
        for item, vector in zip(data, vectors, strict=True):
            item["embedding"] = base64.b64encode(array.array("f", vector).tobytes()).decode()
    return answer


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-limit-tokens": "800000",
    "x-ratelimit-remaining-tokens": "799000",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-reset-tokens": "6m0s",
}


def _echoing(reply: Reply, authorization: str, path: str) -> Reply:
    """The reply with the request's credentials written into its error message and `param`."""
    body = json.loads(json.dumps(reply.body)) if isinstance(reply.body, dict) else {}
    error = body.setdefault("error", {"type": "server_error", "code": None})
    key = authorization.removeprefix("Bearer ")
    error["message"] = (
        f"{error.get('message') or 'error'} (Authorization: {authorization}; key {key}; {path}?key={key})"
    )
    error["param"] = key
    return Reply.json(body, status=reply.status, headers=reply.headers, delay=reply.delay)


# -------------------------------------------------------------------- server


class FakeOpenAI:
    """The fake upstream. `url` is what OPENAI_BASE_URL should be."""

    def __init__(
        self,
        *,
        expected_key: str | None = None,
        default_reply: Reply | None = None,
        keep_requests: bool = True,
        echo_credentials: bool = False,
        check_parts: bool = False,
    ) -> None:
        self.expected_key = expected_key
        #: Chat requests whose content parts the SDK's own types reject get a 400 (wire_parts.py).
        self.check_parts = check_parts
        #: Error bodies repeat the request's credentials (message and `param`).
        self.echo_credentials = echo_credentials
        #: Sent when the scripted queue is empty (None: a 500 saying nothing is scripted).
        #: Benchmarks use it to answer every request the same way.
        self.default_reply = default_reply
        #: False: count requests without keeping them (long load runs).
        self.keep_requests = keep_requests
        self.request_count = 0
        self.requests: list[RecordedRequest] = []
        self.disconnected = threading.Event()
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeOpenAI:
        fake = self

        class _Handler(_FakeHandler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting

    def script(self, *replies: Reply) -> None:
        """Replaces the queue of replies and forgets earlier requests."""
        with self._lock:
            self._replies = deque(replies)
            self.requests = []
            self.disconnected.clear()

    def reset(self) -> None:
        self.script()

    def wait_disconnected(self, timeout: float = 5.0) -> bool:
        return self.disconnected.wait(timeout)

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path.endswith("/embeddings")]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path.endswith("/chat/completions")]

    def _next_reply(self) -> Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else self.default_reply

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.request_count += 1
            if self.keep_requests:
                self.requests.append(request)

    def _sleep(self, seconds: float) -> bool:
        """Sleeps unless the fake stops; False when it stopped."""
        return not self._stopping.wait(seconds) if seconds > 0 else True


class _FakeHandler(BaseHTTPRequestHandler):
    owner: FakeOpenAI
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle plus
    # delayed ACKs add ~40 ms to every reply on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests`, not logs."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        authorization = self.headers.get("Authorization")
        expected = self.owner.expected_key
        self.owner._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items() if k.lower() not in _SECRET_HEADERS},
                body=body,
                key_ok=None if expected is None else authorization == f"Bearer {expected}",
                has_authorization=authorization is not None,
                client_port=self.client_address[1],
            )
        )
        reply = self.owner._next_reply()
        if reply is None:
            reply = Reply.error(500, "fake-openai: no scripted reply left", type="server_error")
        problem = wire_parts.openai_problem(body) if self.owner.check_parts and isinstance(body, dict) else None
        if problem is not None:
            reply = Reply.error(400, problem, type="invalid_request_error")
        if self.owner.echo_credentials and reply.status >= 400:
            reply = _echoing(reply, authorization or "", self.path)
        if not self.owner._sleep(reply.delay):
            return
        if reply.embed_dimensions is not None and isinstance(body, dict):
            reply = Reply.json(embedding_response(body, reply.embed_dimensions), headers=reply.headers)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            if reply.events is None:
                self._send_json(reply)
            else:
                self._send_stream(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.owner.disconnected.set()
            self.close_connection = True

    def _send_json(self, reply: Reply) -> None:
        data = reply.raw_body if reply.raw_body is not None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_fake_{len(self.owner.requests)}")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_stream(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_fake_{len(self.owner.requests)}")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for index, event in enumerate(reply.events or []):
            if index and not self.owner._sleep(reply.event_delay):
                return
            data = event if isinstance(event, str) else json.dumps(event)
            self._chunk(f"data: {data}\n\n".encode())
        held_until = time.monotonic() + reply.hold
        while time.monotonic() < held_until:
            # SSE comments are ignored by the SDK but fail to write once the client is gone.
            self._chunk(b": keep-alive\n\n")
            if not self.owner._sleep(0.05):
                return
        if reply.ending == "cut":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.ending == "done":
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

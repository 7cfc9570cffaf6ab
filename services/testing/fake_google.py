"""A fake Gemini API (generativelanguage.googleapis.com) on loopback, for adapter tests.

A real HTTP/1.1 server (ThreadingHTTPServer in a background thread) on
127.0.0.1 with a free port, speaking Gemini's wire format:

- `POST /{version}/models/{model}:generateContent` → a JSON GenerateContentResponse;
- `POST /{version}/models/{model}:batchEmbedContents` → a JSON EmbedContentResponse
  (`Reply(embed_dimensions=N)` answers from the request: `fake_vector` per input);
- `POST /{version}/models/{model}:streamGenerateContent?alt=sse` → an SSE
  stream (`data: {GenerateContentResponse}` events, chunked encoding), the
  last event carrying `finishReason` and `usageMetadata`;
- errors as Google's JSON error body (`{"error": {code, message, status,
  details}}`), with a google.rpc.RetryInfo detail for 429 as Gemini sends it
  (Gemini sends no Retry-After or rate-limit headers).

Each test scripts the replies (`script(...)`, a queue: one reply per request)
and then reads `requests` (path, headers without the key, JSON body) and
`disconnects` (streams whose client went away before the end). Response
bodies are built from google-genai's own types so they match what the SDK
parses. With `api_key` set, a request carrying another key gets Gemini's real
answer to a bad key: 400 INVALID_ARGUMENT with ErrorInfo API_KEY_INVALID.
A reply's `raw_body` is sent as-is with its `content_type` (broken or
foreign bodies; a str event is sent as-is too); with `echo_credentials=True`
every error body repeats the key the request carried, to test redaction.

Thought signatures: like Gemini 3, a request to a model whose name holds
`signatures_required_for` ("gemini-3" by default) is refused with 400
INVALID_ARGUMENT when a model turn's first function call carries no
`thoughtSignature` (Gemini checks the first call of each step; Google's
dummy value counts as one). `thought_part` builds a thought-summary part.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from google.genai import types

from services.testing import wire_parts
from services.testing.fake_openai import fake_vector

#: How a reply ends: "complete" (normally), "abrupt" (socket closed mid-body,
#: no terminating chunk), "hold" (stay open until the client goes away),
#: "no_response" (close the connection without sending anything).
Ending = Literal["complete", "abrupt", "hold", "no_response"]

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_AUTH_HEADERS = frozenset({"x-goog-api-key", "authorization"})
_HOLD_LIMIT_SECONDS = 20.0


@dataclass
class Reply:
    """One scripted answer to one request."""

    status: int = 200
    #: JSON body of a unary answer or of any error answer.
    body: Any = None
    #: SSE `data:` payloads of a streaming answer, in order (a str is sent as-is).
    events: list[Any] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before the status line (a slow upstream).
    delay: float = 0.0
    #: Seconds between SSE events.
    event_delay: float = 0.0
    ending: Ending = "complete"
    #: Sent as-is (with `content_type`) instead of JSON or SSE.
    raw_body: bytes | None = None
    content_type: str = "application/json; charset=UTF-8"
    #: Answer a `:batchEmbedContents` request from its own body: `fake_vector` per
    #: request, this many values (or its `outputDimensionality`).
    embed_dimensions: int | None = None
    #: With `embed_dimensions`: send usageMetadata.promptTokenCount (words per input).
    embed_usage: bool = True


@dataclass
class RecordedRequest:
    """What the fake received; auth headers are left out."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    had_api_key: bool


# ------------------------------------------------------------------ builders


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def usage(prompt: int = 0, candidates: int = 0, *, thoughts: int = 0, cached: int = 0) -> dict[str, Any]:
    """A usageMetadata object."""
    return _dump(
        types.GenerateContentResponseUsageMetadata(
            prompt_token_count=prompt,
            candidates_token_count=candidates or None,
            thoughts_token_count=thoughts or None,
            cached_content_token_count=cached or None,
            total_token_count=prompt + candidates + thoughts,
        )
    )


def text_part(text: str, *, thought_signature: bytes | None = None, thought: bool = False) -> types.Part:
    return types.Part(text=text, thought_signature=thought_signature, thought=thought or None)


def thought_part(text: str, *, thought_signature: bytes | None = None) -> types.Part:
    """A thought-summary part (`thought: true`), as Gemini sends with include_thoughts."""
    return types.Part(text=text, thought=True, thought_signature=thought_signature)


def missing_signature(body: Any) -> str | None:
    """Gemini 3's complaint about the request body, or None: the first unsigned function call of a model turn."""
    for index, content in enumerate((body or {}).get("contents", [])):
        calls = [part for part in content.get("parts", []) if "functionCall" in part]
        if content.get("role") == "model" and calls and not calls[0].get("thoughtSignature"):
            return (
                f"Function call is missing a thought_signature in functionCall parts. This is required for tools "
                f"to work correctly. Position {index}."
            )
    return None


def call_part(
    name: str, args: dict[str, Any], *, call_id: str | None = None, thought_signature: bytes | None = None
) -> types.Part:
    return types.Part(
        function_call=types.FunctionCall(name=name, args=args, id=call_id), thought_signature=thought_signature
    )


def response(
    parts: list[types.Part] | None = None,
    *,
    finish_reason: str | None = "STOP",
    usage_metadata: dict[str, Any] | None = None,
    model_version: str = "gemini-2.5-flash-001",
    response_id: str = "resp-1",
    block_reason: str | None = None,
    logprobs: list[tuple[str, float, dict[str, float]]] | None = None,
    grounding: types.GroundingMetadata | None = None,
    citation_sources: list[types.Citation] | None = None,
) -> dict[str, Any]:
    """A GenerateContentResponse JSON body (or one SSE event of a stream).

    `grounding`: the candidate's groundingMetadata (see `web_grounding`); `citation_sources`:
    its citationMetadata, under the Gemini API's own key `citationSources`.

    `logprobs`: (chosen token, its log probability, {top token: log probability}) per step,
    as the candidate's logprobsResult.
    """
    payload: dict[str, Any] = {"modelVersion": model_version, "responseId": response_id}
    if parts is not None or finish_reason is not None:
        candidate = types.Candidate(
            content=types.Content(role="model", parts=parts or []),
            finish_reason=types.FinishReason(finish_reason) if finish_reason else None,
            index=0,
            logprobs_result=_logprobs_result(logprobs) if logprobs is not None else None,
            grounding_metadata=grounding,
        )
        dumped = _dump(candidate)
        if citation_sources is not None:
            dumped["citationMetadata"] = {"citationSources": [_dump(source) for source in citation_sources]}
        payload["candidates"] = [dumped]
    if block_reason:
        payload["promptFeedback"] = _dump(
            types.GenerateContentResponsePromptFeedback(block_reason=types.BlockedReason(block_reason))
        )
    if usage_metadata is not None:
        payload["usageMetadata"] = usage_metadata
    return payload


def web_grounding(
    sources: list[tuple[str, str]],
    supports: list[tuple[int, int, list[int], int | None]],
    *,
    documents: tuple[tuple[str, str, str, str], ...] = (),
) -> types.GroundingMetadata:
    """groundingMetadata as Google Search grounding returns it.

    `sources`: (uri, title) web chunks; `documents`: (uri, title, text, document name) retrieved
    contexts after them; `supports`: (start byte, end byte, chunk indices, part index or None)
    segments of the answer.
    """
    chunks = [types.GroundingChunk(web=types.GroundingChunkWeb(uri=uri, title=title)) for uri, title in sources]
    chunks += [
        types.GroundingChunk(
            retrieved_context=types.GroundingChunkRetrievedContext(uri=uri, title=title, text=text, document_name=name)
        )
        for uri, title, text, name in documents
    ]
    return types.GroundingMetadata(
        grounding_chunks=chunks,
        grounding_supports=[
            types.GroundingSupport(
                segment=types.Segment(start_index=start, end_index=end, part_index=part_index),
                grounding_chunk_indices=indices,
            )
            for start, end, indices, part_index in supports
        ],
        web_search_queries=["the query"],
    )


def _logprobs_result(steps: list[tuple[str, float, dict[str, float]]]) -> types.LogprobsResult:
    return types.LogprobsResult(
        chosen_candidates=[types.LogprobsResultCandidate(token=t, log_probability=lp) for t, lp, _ in steps],
        top_candidates=[
            types.LogprobsResultTopCandidates(
                candidates=[types.LogprobsResultCandidate(token=t, log_probability=lp) for t, lp in top.items()]
            )
            for _, _, top in steps
        ],
    )


def text_stream(pieces: list[str], *, finish_reason: str | None = "STOP", **kwargs: Any) -> list[dict[str, Any]]:
    """SSE events for a text answer: one piece per event, finishReason and usage on the last."""
    events = [response([text_part(piece)], finish_reason=None) for piece in pieces]
    if finish_reason is not None:
        events[-1] = response(
            [text_part(pieces[-1])],
            finish_reason=finish_reason,
            usage_metadata=kwargs.pop("usage_metadata", usage(5, len(pieces))),
            **kwargs,
        )
    return events


def retry_info(seconds: float) -> dict[str, Any]:
    """A google.rpc.RetryInfo detail as Gemini's JSON carries it."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds:g}s"}


def error_info(reason: str) -> dict[str, Any]:
    """A google.rpc.ErrorInfo detail."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def embeddings_body(body: Any, dimensions: int, *, with_usage: bool = True) -> dict[str, Any]:
    """Gemini's `:batchEmbedContents` answer for the request `body`, checked against the SDK's type."""
    texts = ["".join(part.get("text", "") for part in item["content"]["parts"]) for item in body["requests"]]
    lengths = [int(item.get("outputDimensionality") or dimensions) for item in body["requests"]]
    answer: dict[str, Any] = {
        "embeddings": [{"values": fake_vector(t, n)} for t, n in zip(texts, lengths, strict=True)]
    }
    if with_usage:
        answer["usageMetadata"] = {"promptTokenCount": sum(max(len(text.split()), 1) for text in texts)}
    types.EmbedContentResponse.model_validate({"embeddings": answer["embeddings"]})
    return answer


def error_body(code: int, message: str, *, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Google's JSON error body."""
    error: dict[str, Any] = {"code": code, "message": message, "status": _STATUS_NAMES.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def error_reply(code: int, message: str = "", **kwargs: Any) -> Reply:
    """An HTTP error answer with Gemini's body; 429 gets a 17 s RetryInfo unless `details` is given."""
    details = kwargs.pop("details", [retry_info(17)] if code == 429 else None)
    return Reply(status=code, body=error_body(code, message or f"fake error {code}", details=details), **kwargs)


def bad_key_body() -> dict[str, Any]:
    """What Gemini answers (with HTTP 400) to a wrong API key."""
    return error_body(400, "API key not valid. Please pass a valid API key.", details=[error_info("API_KEY_INVALID")])


def _echoing(reply: Reply, key: str, path: str) -> Reply:
    """The reply with the request's key written into its error message, as header and as query parameter."""
    body = json.loads(json.dumps(reply.body)) if isinstance(reply.body, dict) else error_body(reply.status, "")
    error = body.setdefault("error", {"code": reply.status, "status": "UNKNOWN"})
    error["message"] = f"{error.get('message') or 'error'} (x-goog-api-key: {key}; {path}?key={key}; key {key})"
    return Reply(status=reply.status, body=body, headers=reply.headers, delay=reply.delay)


# -------------------------------------------------------------------- server


class FakeGemini:
    """The fake server; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        echo_credentials: bool = False,
        signatures_required_for: str = "gemini-3",
        check_parts: bool = False,
    ) -> None:
        self.api_key = api_key
        #: Requests whose contents google-genai's own types reject get a 400 (wire_parts.py).
        self.check_parts = check_parts
        #: Models whose name holds this refuse function calls without a thought signature ("": none).
        self.signatures_required_for = signatures_required_for
        #: Error bodies repeat the request's key in their message.
        self.echo_credentials = echo_credentials
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[str] = []
        self._replies: list[Reply] = []
        self._lock = threading.Lock()
        self._disconnected = threading.Event()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-gemini", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeGemini:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def script(self, *replies: Reply) -> None:
        """Forgets earlier requests and scripts; answers the next requests with `replies`, in order."""
        with self._lock:
            self.requests.clear()
            self.disconnects.clear()
            self._disconnected.clear()
            self._replies = list(replies)

    def wait_for_disconnect(self, timeout: float = 5.0) -> bool:
        """True once a client went away in the middle of a streamed answer."""
        return self._disconnected.wait(timeout)

    # Called from handler threads.
    def _record(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.pop(0)
        return error_reply(500, "fake_google: no reply scripted for this request")

    def _note_disconnect(self, path: str) -> None:
        with self._lock:
            self.disconnects.append(path)
        self._disconnected.set()


def _handler_for(fake: FakeGemini) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read `requests` instead."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length else b""
            key = self.headers.get("x-goog-api-key")
            recorded = RecordedRequest(
                method="POST",
                path=self.path,
                headers={k: v for k, v in self.headers.items() if k.lower() not in _AUTH_HEADERS},
                body=json.loads(raw) if raw else None,
                had_api_key=bool(key),
            )
            reply = fake._record(recorded)
            if fake.api_key is not None and key != fake.api_key:
                reply = Reply(status=400, body=bad_key_body())
            elif fake.signatures_required_for and f"/models/{fake.signatures_required_for}" in self.path:
                complaint = missing_signature(recorded.body)
                if complaint is not None:
                    reply = error_reply(400, complaint)
            if fake.check_parts and isinstance(recorded.body, dict) and reply.status < 400:
                problem = wire_parts.gemini_problem(recorded.body)
                if problem is not None:
                    reply = error_reply(400, problem)
            if fake.echo_credentials and reply.status >= 400:
                reply = _echoing(reply, key or "", self.path)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.embed_dimensions is not None and recorded.body:
                body = embeddings_body(recorded.body, reply.embed_dimensions, with_usage=reply.embed_usage)
                reply = Reply(body=body, headers=reply.headers)
            if reply.ending == "no_response":
                self._drop()
                return
            streaming = ":streamGenerateContent" in self.path and reply.status == 200 and reply.raw_body is None
            if streaming:
                self._stream(reply)
            else:
                self._json(reply)

        def _json(self, reply: Reply) -> None:
            data = reply.raw_body
            if data is None:
                data = json.dumps(reply.body if reply.body is not None else {}).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.ending == "abrupt":
                # Promise more than we send, then cut: the client sees a broken body.
                self.send_header("Content-Length", str(len(data) + 100))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self._drop()
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Reply) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                for index, event in enumerate(reply.events):
                    if index and reply.event_delay and self._client_gone(reply.event_delay):
                        fake._note_disconnect(self.path)
                        return
                    text = event if isinstance(event, str) else json.dumps(event)
                    self._chunk(f"data: {text}\r\n\r\n".encode())
                if reply.ending == "abrupt":
                    self._drop()
                elif reply.ending == "hold":
                    if self._client_gone(_HOLD_LIMIT_SECONDS):
                        fake._note_disconnect(self.path)
                    self.close_connection = True
                else:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                fake._note_disconnect(self.path)
                self.close_connection = True

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _client_gone(self, seconds: float) -> bool:
            """Waits up to `seconds`; True as soon as the client closes its end."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not fake._stopping.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.02)
                if readable:
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            return True
                    except OSError:
                        return True
            return False

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler

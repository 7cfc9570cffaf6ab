"""The loopback fake OpenAI API as its own process, answering every request alike.

`python -m tests.bench.fake_upstream` serves `POST .../chat/completions` on
127.0.0.1 (a free port) with uvicorn (httptools, uvloop) and a bare ASGI
app, keeps no request bodies, and writes its port to LLMMESH_READY_FILE.
Every caller of the bench (the mesh's OpenAI adapter, LiteLLM's proxy, the
load client directly) gets the same bytes:

- unary: one short chat completion (services.testing.fake_openai's
  `completion`), with OpenAI's rate-limit headers;
- `"stream": true`: an SSE stream of LLMMESH_BENCH_STREAM_CHUNKS content
  chunks (default 50), LLMMESH_BENCH_CHUNK_INTERVAL_S apart (default 0),
  then a finish chunk, a usage chunk and `[DONE]`. Each content piece is
  a send stamp (tests.bench.stamps), so a client computes each chunk's
  lag.

An asyncio server rather than services.testing.fake_openai's thread per
connection: the streaming scenario holds a thousand slow streams open.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import uvicorn

from services.testing.fake_openai import RATE_LIMIT_HEADERS, chunk, completion, usage
from tests.bench.stamps import stamped_piece

ANSWER = "OK"
STREAM_CHUNKS_ENV = "LLMMESH_BENCH_STREAM_CHUNKS"
CHUNK_INTERVAL_ENV = "LLMMESH_BENCH_CHUNK_INTERVAL_S"

Scope = dict[str, Any]

_UNARY_BODY = json.dumps(completion(ANSWER)).encode()
_UNARY_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_UNARY_BODY)).encode()),
    *((name.encode(), value.encode()) for name, value in RATE_LIMIT_HEADERS.items()),
]
_STREAM_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class FakeUpstream:
    """The ASGI app; the stream's shape comes from the environment, read once."""

    def __init__(self, chunks: int, interval_s: float) -> None:
        self.chunks = chunks
        self.interval_s = interval_s
        # The chunk around the stamp is the same every time: format it once, stamp by replace.
        self._template = _event(chunk(content="\x00"))
        self._head = _event(chunk(role="assistant", content=""))
        self._tail = (
            _event(chunk(finish_reason="stop"))
            + _event(chunk(no_choices=True, usage_body=usage(12, chunks)))
            + b"data: [DONE]\n\n"
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if b'"stream"' in body and json.loads(body).get("stream"):
            await self._stream(send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _UNARY_HEADERS})
        await send({"type": "http.response.body", "body": _UNARY_BODY})

    async def _stream(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        await send({"type": "http.response.body", "body": self._head, "more_body": True})
        for index in range(self.chunks):
            if index and self.interval_s:
                await asyncio.sleep(self.interval_s)
            data = self._template.replace(b"\\u0000", stamped_piece().encode())
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": self._tail})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Server(uvicorn.Server):
    """Writes the ready file once the socket listens (the port is a free one)."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        ready_file = os.environ.get("LLMMESH_READY_FILE", "")
        if ready_file and self.servers:
            _write_ready(Path(ready_file), self.servers[0].sockets[0].getsockname()[1])


def _write_ready(path: Path, port: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    temporary.replace(path)


def main() -> None:
    app = FakeUpstream(
        chunks=int(os.environ.get(STREAM_CHUNKS_ENV, "50")),
        interval_s=float(os.environ.get(CHUNK_INTERVAL_ENV, "0")),
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        # A thousand slow streams at once, and c=64 opening connections in a burst.
        backlog=4096,
        limit_concurrency=None,
        timeout_keep_alive=60,
        timeout_graceful_shutdown=2,
    )
    _Server(config).run()


if __name__ == "__main__":
    main()

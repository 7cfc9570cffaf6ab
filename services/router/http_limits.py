"""Limits on the HTTP door's connections, for what uvicorn and httptools do not bound.

uvicorn gives us `limit_concurrency` (503 past N connections or requests in
flight) and `timeout_keep_alive` (idle connections between requests), and
nothing else: httptools (llhttp) takes a request line and headers of any
size (joining each header's pieces into one bytes object, so a 64 MiB
header costs seconds of event-loop time and its memory) and never times out
a request whose head or body arrives slowly (slowloris). The router's gRPC
server shares this event loop, so every one of those stalls gRPC as well.

`LimitedHttpToolsProtocol` counts head bytes before the parser sees them,
counts headers, and runs one timer per phase (head, body). A refusal writes
its status (414, 431, 408, 503) with `connection: close`, stops parsing and
reading, and closes after a short linger, so the client can read the status
before the close resets the connection.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

import httptools
import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from services.common.settings import ENV_PREFIX

log = structlog.get_logger(__name__)

_END_OF_HEAD = b"\r\n\r\n"
# After a refusal: how long the client may keep sending (discarded) before the socket closes.
_LINGER_SECONDS = 2.0


class HttpDoorLimits(BaseSettings):
    """Limits of the OpenAI-compatible HTTP door (LLMMESH_HTTP_*)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    http_max_request_line_bytes: int = Field(8192, ge=256, le=1024 * 1024, description="Request line (414 past it).")
    http_max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=1024 * 1024, description="Request line and headers together (431 past it)."
    )
    http_max_headers: int = Field(100, ge=8, le=10_000, description="Header fields per request (431 past it).")
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="From connection (or previous answer) to the end of the headers (408)."
    )
    http_body_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="From the end of the headers to the end of the body (408)."
    )
    http_keep_alive_seconds: int = Field(5, ge=1, le=3600, description="Idle keep-alive connection closes after it.")
    http_max_connections: int = Field(
        1000, ge=1, le=1_000_000, description="Open connections and requests in flight (503 past it)."
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size, header count, timeouts and a connection cap."""

    limits: HttpDoorLimits = HttpDoorLimits.model_construct()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True
        self._head_bytes = 0
        self._url_bytes = 0
        self._header_count = 0
        self._tail = b""  # the last bytes of the head so far: "\r\n\r\n" may span two reads
        self._refusal: tuple[int, str] | None = None
        self._phase_timer: TimerHandle | None = None
        self._refused = False

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.http_max_connections:
            self._refuse(503, "too many connections to the HTTP door; retry later")
            return
        self._start_timer(self.limits.http_header_timeout_seconds, "the request headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # already answered; reading is paused
        if self._in_head:
            if self._phase_timer is None:  # the next request on a keep-alive connection
                self._start_timer(self.limits.http_header_timeout_seconds, "the request headers")
            if self._head_too_large(data):
                self._refuse(431, f"request headers above {self.limits.http_max_header_bytes} bytes")
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            status, message = self._refusal or (400, "invalid HTTP request")
            self._refuse(status, message)

    def _head_too_large(self, data: bytes) -> bool:
        """Counts head bytes up to the blank line that ends the head; True past the limit."""
        window = self._tail + data
        end = window.find(_END_OF_HEAD)
        counted = len(data) if end < 0 else max(end + len(_END_OF_HEAD) - len(self._tail), 0)
        self._head_bytes += counted
        self._tail = window[-3:] if end < 0 else b""
        return self._head_bytes > self.limits.http_max_header_bytes

    # -- parser callbacks ------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.http_max_request_line_bytes:
            self._refusal = (414, f"request target above {self.limits.http_max_request_line_bytes} bytes")
            raise ValueError("request line too long")  # httptools stops parsing: HttpParserCallbackError
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.http_max_headers:
            self._refusal = (431, f"more than {self.limits.http_max_headers} request header fields")
            raise ValueError("too many headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._start_timer(self.limits.http_body_timeout_seconds, "the request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self._in_head, self._head_bytes, self._url_bytes, self._header_count, self._tail = True, 0, 0, 0, b""
        super().on_message_complete()

    # -- timers and refusals ---------------------------------------------------------------

    def _start_timer(self, seconds: float, what: str) -> None:
        self._cancel_timer()
        self._phase_timer = self.loop.call_later(seconds, self._timed_out, seconds, what)

    def _cancel_timer(self) -> None:
        if self._phase_timer is not None:
            self._phase_timer.cancel()
            self._phase_timer = None

    def _timed_out(self, seconds: float, what: str) -> None:
        self._phase_timer = None
        if self.transport.is_closing():
            return
        if self._in_head and self.cycle is not None and not self.cycle.response_complete:
            return  # an answer is still being written; the keep-alive rules take over after it
        self._refuse(408, f"{what} did not arrive within {seconds:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Writes `status` and closes after a linger; an app still reading the body sees a disconnect."""
        self._refused = True
        self._cancel_timer()
        self._unset_keepalive_if_required()
        log.warning("http door refused a connection", status=status, detail=message, client=_client(self.client))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_plain_response(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        # Stop reading: what the attacker still sends is not worth our loop's time; the
        # linger gives the client time to read the answer before the close resets it.
        self.transport.pause_reading()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)


def _plain_response(status: int, message: str) -> bytes:
    body = f"{message}\n".encode("ascii", "replace")
    head = [STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n"]
    head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join(head) + body


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown"

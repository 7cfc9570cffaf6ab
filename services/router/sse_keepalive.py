"""Streams that stay alive while the model thinks.

The door waits a short, bounded time for the router's first stream event
(`LLMMESH_HTTP_STREAM_COMMIT_SECONDS`), so a request that fails at once
(bad input, unknown model, every candidate rate limited) still gets a real
HTTP status. Past that wait it commits the 200 and the SSE headers and
sends SSE comment lines (`: keepalive`, which every SSE client skips) every
`LLMMESH_HTTP_STREAM_KEEPALIVE_SECONDS` until the first event arrives: a
client with a read timeout shorter than the model's time to first token
keeps reading instead of giving up. A failure after the commit ends the
stream with the operation's error event, as any failure mid-stream does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import ENV_PREFIX

KEEPALIVE_COMMENT = b": keepalive\n\n"

_T = TypeVar("_T")


class StreamKeepaliveSettings(BaseSettings):
    """When the HTTP door commits a stream and how often it keeps it alive (LLMMESH_HTTP_STREAM_*)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    http_stream_commit_seconds: float = Field(
        1.0,
        ge=0,
        le=600,
        description="How long a stream waits for its first event before sending the 200 and SSE headers; "
        "failures within it get an HTTP status, later ones an error event.",
    )
    http_stream_keepalive_seconds: float = Field(
        1.0, gt=0, le=600, description="Interval of SSE comment lines sent until the first event arrives."
    )


DEFAULT_KEEPALIVE = StreamKeepaliveSettings.model_construct()


async def until_settled(pending: asyncio.Future[_T], interval: float) -> AsyncIterator[bytes]:
    """Yields a keepalive comment every `interval` seconds until `pending` is done (it is never cancelled here)."""
    while not pending.done():
        done, _ = await asyncio.wait({pending}, timeout=interval)
        if not done:
            yield KEEPALIVE_COMMENT

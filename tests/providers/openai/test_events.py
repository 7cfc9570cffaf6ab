"""The adapter's SSE reader splits a body into the same events as the pinned SDK's decoder.

The adapter reads Chat Completions streams from their bytes instead of the
SDK's `AsyncStream` (services/providers/openai/events.py); this compares the
two on seeded random bodies cut at random places, with every SSE field kind,
all three line endings and bodies that end mid-event. If a new SDK pin
changes its decoder, this fails and names the body.
"""

from __future__ import annotations

import random

from openai._streaming import SSEDecoder, _SSELineDecoder

from services.providers.openai.events import _Blocks

LINES = [
    b'data: {"a": 1}',
    b"data:x",
    b"data:",
    b"data:  two spaces",
    b"data: [DONE]",
    b"event: ping",
    b"event:",
    b": keep-alive",
    b"id: 7",
    b"id:",
    b"id: a\0b",
    b"retry: 30",
    b"retry: soon",
    b"unknown: field",
    b"",
]
ENDINGS = [b"\n", b"\r\n", b"\r"]
BODIES = 3000


def _sdk(parts: list[bytes]) -> list[bytes]:
    decoder, lines = SSEDecoder(), _SSELineDecoder()
    out: list[bytes] = []
    for part in parts:
        for line in lines.feed(part):
            event = decoder.decode(line.decode())
            if event:
                out.append(event.data.encode())
    for line in lines.finish():
        event = decoder.decode(line.decode())
        if event:
            out.append(event.data.encode())
    return out


def _ours(parts: list[bytes]) -> list[bytes]:
    blocks = _Blocks()
    out: list[bytes] = []
    for part in parts:
        out.extend(blocks.feed(part))
    out.extend(blocks.finish())
    return out


def test_same_events_as_the_sdk_decoder():
    rng = random.Random(18)
    for _ in range(BODIES):
        body = b"".join(rng.choice(LINES) + rng.choice(ENDINGS) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.3:
            body = body[: rng.randint(0, len(body))]
        cuts = sorted(rng.sample(range(len(body) + 1), min(len(body) + 1, rng.randint(0, 6))))
        parts = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert _ours(parts) == _sdk(parts), f"events differ for {body!r} cut as {parts!r}"


def test_a_chunk_split_inside_a_crlf_is_one_line_break():
    blocks = _Blocks()
    assert list(blocks.feed(b'data: {"x": 1}\r')) == []
    assert list(blocks.feed(b"\n\r")) == []
    assert list(blocks.feed(b"\n")) == [b'{"x": 1}']

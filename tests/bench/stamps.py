"""The fake upstream's send stamps in streamed text, and the lag they give.

Each streamed content piece is `@<time.monotonic_ns()>;`, written when the
fake upstream sends the chunk; CLOCK_MONOTONIC is one clock for every
process on Linux, so the receiver's reading minus the stamp is the chunk's
lag through whatever sits between (the mesh, LiteLLM, nothing).
"""

from __future__ import annotations

import time

STAMP_PREFIX = "@"


def stamped_piece() -> str:
    return f"{STAMP_PREFIX}{time.monotonic_ns()};"


def lags_s(text: str, received_ns: int) -> list[float]:
    """Seconds from each stamp in `text` to `received_ns` (a message may carry several chunks)."""
    found: list[float] = []
    for part in text.split(";"):
        if part.startswith(STAMP_PREFIX):
            found.append((received_ns - int(part[len(STAMP_PREFIX) :])) / 1e9)
    return found

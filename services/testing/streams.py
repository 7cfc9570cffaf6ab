"""What a caller may rely on in a stream, not how it was chunked.

The adapters send the deltas already waiting as one message
(services/providers/coalesce.py), so how many deltas carry an answer depends
on timing. Tests compare the kinds of events in order with each run of one
kind counted once, and the text each run carries.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any


def kind_runs(events: Iterable[Any]) -> list[str]:
    """The events' kinds (`WhichOneof("event")`) in order, each run of one kind once: delta, continuation, delta, final."""
    return [kind for kind, _ in itertools.groupby(event.WhichOneof("event") for event in events)]


def text_before(events: Iterable[Any], kind: str) -> str:
    """The delta text sent before the first event of `kind`."""
    sent = []
    for event in events:
        if event.WhichOneof("event") == kind:
            break
        sent.append(event.delta.text)
    return "".join(sent)

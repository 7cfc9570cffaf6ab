"""What the routing file says a model can do, as the router tells an adapter with each attempt.

The router sends `llmmesh-model-capabilities` on every ProviderService chat
call: the comma-separated names of the model's true capabilities
(ModelCapabilities' boolean fields, e.g. `vision,tools,sampling`). The
provider servicer makes them current for the call (`current`), so an adapter
can shape the upstream request by them: the Anthropic adapter sends
temperature and top_p only where `sampling` is among them. A call without the
header (a caller other than the router) gets the adapter's defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

METADATA_KEY = "llmmesh-model-capabilities"

#: The capabilities of the model of the call being served; None: not told.
current: ContextVar[frozenset[str] | None] = ContextVar("llmmesh_model_capabilities", default=None)


def encode(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The metadata pair for the router's call."""
    return ((METADATA_KEY, ",".join(sorted(names))),)


def decode(metadata: Iterable[tuple[str, str | bytes]] | None) -> frozenset[str] | None:
    """The names in a call's metadata, or None when it carries none."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            return frozenset(name.strip() for name in text.split(",") if name.strip())
    return None

"""Secrets out of text that came from elsewhere: upstream error bodies, remote tool errors.

One `Redactor` per process, given the secrets that process holds (a provider
key, the agent's router key). It replaces those values wherever they appear,
and anything shaped like a credential even when it is not ours: bearer
tokens, `key=` / `api_key=` query parameters, `x-goog-api-key` /
`x-api-key` / `authorization` header echoes, `token=` / `password=` /
`secret=` assignments, OpenAI (`sk-...`,
`sk-proj-...`) and Anthropic (`sk-ant-...`) keys, Google API keys
(`AIza...`). Upstreams echo such things back in error messages (a proxy
repeating the request, a provider quoting the masked key), and an error
message travels far: gRPC status, ErrorInfo, HTTP 502 bodies, span status,
the agent's RunEnd and the next prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from services.common.errors import MeshError

REDACTED = "[redacted]"
# Shorter configured values are not redacted by value: replacing every "ab" would wreck the text.
MIN_SECRET_CHARS = 6

_VALUE = r"[^\s&,;'\"<>()\[\]{}]+"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header and assignment echoes: "x-goog-api-key: AIza...", "x-api-key=...", "password=...",
    # "authorization: sk-..." ("Bearer ..." is handled next).
    (
        re.compile(
            r"(?i)\b(x-goog-api-key|x-api-key|api[-_]?key|authorization|access[-_]?token|token|password|passwd"
            r"|secret|client[-_]?secret)"
            rf"(\"?\s*[:=]\s*\"?)(?!bearer\b|basic\b|\[redacted\])({_VALUE})"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(rf"(?i)\b(bearer|basic)\s+(?!\[redacted\])({_VALUE})"), rf"\1 {REDACTED}"),
    # Query parameters: ?key=..., &api_key=..., &access_token=...
    (re.compile(rf"(?i)([?&](?:key|api[-_]?key|access[-_]?token|token)=)(?!\[redacted\])({_VALUE})"), rf"\1{REDACTED}"),
    # Provider key shapes, masked ones included (OpenAI quotes "sk-proj-****abcd").
    (re.compile(r"\bsk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_*\-]{4,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), REDACTED),
)


class Redactor:
    """Removes the given secrets, and anything shaped like a credential, from text."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: a secret that contains another is replaced whole.
        values = {secret.strip() for secret in secrets if len(secret.strip()) >= MIN_SECRET_CHARS}
        self._secrets = tuple(sorted(values, key=len, reverse=True))

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        """A redactor that also knows `secrets` (e.g. the caller's key for one run)."""
        return Redactor((*self._secrets, *secrets))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def error(self, error: MeshError) -> MeshError:
        """`error` with its message and every ErrorInfo metadata value redacted (in place; returned)."""
        error.message = self(error.message)
        error.args = (error.message,)
        error.metadata = {key: self(value) for key, value in error.metadata.items()}
        return error


def summary(text: str, *, limit: int = 200) -> str:
    """The first line of `text`, cut to `limit` characters: for people and prompts, not for logs."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"

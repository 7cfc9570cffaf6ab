"""CallerContext: who a request is for (an end-user id and labels), checked once for every door.

The rules are the strictest any provider applies, so the same request is
valid on every candidate: OpenAI's `safety_identifier` takes 64 characters,
Gemini's labels take lowercase keys and values of 63.
"""

from __future__ import annotations

import re

from llmmesh.v1 import chat_pb2
from services.common.errors import invalid_argument

MAX_USER_CHARS = 64
MAX_LABELS = 16
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


def validate_caller(caller: chat_pb2.CallerContext, path: str = "caller") -> None:
    """Raises INVALID_ARGUMENT naming the field for an end-user id or label the providers would refuse."""
    user = caller.user
    if user and (len(user) > MAX_USER_CHARS or not _PRINTABLE.match(user)):
        raise invalid_argument(
            f"{path}.user",
            f"must be 1 to {MAX_USER_CHARS} printable ASCII characters without spaces; send a stable hash of the "
            "end user's id, never an email or a name",
        )
    if len(caller.labels) > MAX_LABELS:
        raise invalid_argument(f"{path}.labels", f"has {len(caller.labels)} labels; at most {MAX_LABELS}")
    for key in sorted(caller.labels):
        if not _LABEL_KEY.match(key):
            raise invalid_argument(
                f"{path}.labels",
                f"key {key[:70]!r} must be 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter",
            )
        if not _LABEL_VALUE.match(caller.labels[key]):
            raise invalid_argument(f"{path}.labels.{key}", "must be up to 63 lowercase letters, digits, '_' or '-'")

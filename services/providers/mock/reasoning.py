"""The mock's reasoning: a deterministic thought with a signature it checks when the thought comes back.

Asked for reasoning (settings.reasoning with an effort or a budget above 0),
the mock answers with one ReasoningPart before its text: the thought names
the effort, the budget and the question, and how many earlier mock thoughts
the history carried back with valid signatures. Its signature is a hash of
the text, so a thought edited on its way back fails the check
(INVALID_ARGUMENT, as Anthropic refuses a tampered thinking block); other
providers' reasoning parts are ignored, as the real adapters drop them.
`include_thoughts` off returns the signature with an empty text (Anthropic's
"omitted" display). A model configured with `reasoning: false` refuses with
UNSUPPORTED_FEATURE, so the router moves on.
"""

from __future__ import annotations

import hashlib
from typing import Any

from llmmesh.v1 import chat_pb2
from services.common.errors import invalid_argument, unsupported_feature
from services.common.reasoning import effort_name, reasoning_of

PROVIDER = "mock"


def signature(text: str) -> str:
    return "mock-sig-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def thought(request: Any, question: str, *, supported: bool) -> chat_pb2.ReasoningPart | None:
    """The reasoning part for this request, or None when it asked for none."""
    reasoning = reasoning_of(request)
    if reasoning is None or (reasoning.HasField("budget_tokens") and reasoning.budget_tokens == 0):
        return None
    if effort_name(reasoning) is None and not reasoning.HasField("budget_tokens"):
        return None
    if not supported:
        raise unsupported_feature("settings.reasoning", f"mock model {request.model!r} is configured without reasoning")
    verified = _verified_thoughts(request)
    budget = reasoning.budget_tokens if reasoning.HasField("budget_tokens") else 0
    text = f"Thinking ({effort_name(reasoning) or 'default'}, budget {budget}) about: {question}"
    if verified:
        text += f"; {verified} earlier thoughts verified"
    part = chat_pb2.ReasoningPart(text=text, signature=signature(text), provider=PROVIDER)
    if not reasoning.include_thoughts:
        part.text = ""
    return part


def _verified_thoughts(request: Any) -> int:
    """Counts the mock's own reasoning parts in the history; a signature that does not match is refused.

    A thought returned without its text (include_thoughts off) is taken on its signature alone.
    """
    count = 0
    for index, message in enumerate(request.messages):
        for part_index, part in enumerate(message.content):
            if part.WhichOneof("kind") != "reasoning" or part.reasoning.provider != PROVIDER:
                continue
            reasoning = part.reasoning
            if not reasoning.signature.startswith("mock-sig-") or (
                reasoning.text and reasoning.signature != signature(reasoning.text)
            ):
                raise invalid_argument(
                    f"messages[{index}].content[{part_index}].reasoning.signature",
                    "does not match its text; send reasoning back exactly as it was returned",
                )
            count += 1
    return count


def tokens(part: chat_pb2.ReasoningPart | None) -> int:
    """Reasoning tokens the mock bills: words of the full thought (counted even when not shown)."""
    return 0 if part is None else max(len(part.text.split()), 8)


def deltas(part: chat_pb2.ReasoningPart) -> list[chat_pb2.ChatDelta]:
    """The thought in two text pieces, then the signature on the delta that completes it."""
    middle = len(part.text) // 2
    pieces = [part.text[:middle], part.text[middle:]] if part.text else []
    out = [
        chat_pb2.ChatDelta(reasoning=chat_pb2.ReasoningDelta(index=0, text=piece, provider=PROVIDER))
        for piece in pieces
    ]
    out.append(
        chat_pb2.ChatDelta(reasoning=chat_pb2.ReasoningDelta(index=0, signature=part.signature, provider=PROVIDER))
    )
    return out

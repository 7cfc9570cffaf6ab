"""What every adapter does the same way with reasoning: read the shared settings, keep its own parts.

A reasoning part's signature is valid only where it was made, so an adapter
sends back the parts its own provider kind produced and drops the others
(Anthropic and Gemini both reject a signature they did not issue).
"""

from __future__ import annotations

from typing import Any

from llmmesh.v1 import chat_pb2

#: The shared effort enum as the lower-case word the providers use.
EFFORT_NAMES = {
    chat_pb2.REASONING_EFFORT_MINIMAL: "minimal",
    chat_pb2.REASONING_EFFORT_LOW: "low",
    chat_pb2.REASONING_EFFORT_MEDIUM: "medium",
    chat_pb2.REASONING_EFFORT_HIGH: "high",
}


def reasoning_of(request: Any) -> chat_pb2.ReasoningSettings | None:
    """The request's reasoning settings, or None when it set none."""
    if not request.HasField("settings") or not request.settings.HasField("reasoning"):
        return None
    return request.settings.reasoning  # type: ignore[no-any-return]


def asks_for_reasoning(request: Any) -> bool:
    """Whether the request asks the model to reason: an effort, or a budget above 0 (0 turns it off)."""
    reasoning = reasoning_of(request)
    if reasoning is None:
        return False
    if reasoning.HasField("budget_tokens"):
        return reasoning.budget_tokens > 0
    return reasoning.effort != chat_pb2.REASONING_EFFORT_UNSPECIFIED


def effort_name(reasoning: chat_pb2.ReasoningSettings) -> str | None:
    return EFFORT_NAMES.get(reasoning.effort)


def own_reasoning(message: chat_pb2.Message, provider: str) -> list[chat_pb2.ReasoningPart]:
    """The message's reasoning parts that `provider` produced, in order; foreign ones are dropped."""
    return [
        part.reasoning
        for part in message.content
        if part.WhichOneof("kind") == "reasoning" and part.reasoning.provider == provider
    ]


def has_reasoning_parts(message: chat_pb2.Message) -> bool:
    return any(part.WhichOneof("kind") == "reasoning" for part in message.content)


class ReasoningAssembler:
    """Joins a stream's reasoning deltas into ReasoningParts, one per delta index, in index order."""

    def __init__(self) -> None:
        self._parts: dict[int, chat_pb2.ReasoningPart] = {}

    def add(self, delta: chat_pb2.ReasoningDelta) -> None:
        part = self._parts.setdefault(delta.index, chat_pb2.ReasoningPart(provider=delta.provider))
        part.text += delta.text
        part.signature = delta.signature or part.signature
        part.redacted_data = delta.redacted_data or part.redacted_data

    def parts(self) -> list[chat_pb2.ReasoningPart]:
        return [self._parts[index] for index in sorted(self._parts)]

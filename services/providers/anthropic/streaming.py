"""Anthropic raw stream events → unified ChatDelta chunks, plus what the final message needs."""

from __future__ import annotations

from typing import Any

from anthropic.types import RawMessageStreamEvent

from llmmesh.v1 import chat_pb2
from services.providers.anthropic.citations import citation
from services.providers.anthropic.mapping import JSON_OBJECT_TOOL, PROVIDER
from services.providers.anthropic.responses import refusal_text, usage_of


class StreamAssembler:
    """Feeds on raw events; remembers stop reason, usage and ids; thinking blocks become reasoning deltas.

    With `json_tool` (JSON-object mode), the forced tool's streamed input is the answer's text.
    A text block's citations (its start and `citations_delta` events) go out in one delta when
    the block stops, spanning the block's text.
    """

    def __init__(self, *, json_tool: bool = False) -> None:
        self._json_tool = json_tool
        # Content-block indexes of the JSON-object tool's calls, and whether they streamed any input.
        self._json_blocks: dict[int, bool] = {}
        self.model = ""
        self.message_id = ""
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.stop_details: Any = None
        #: message_delta reported the final output count (the usage of the whole answer).
        self.final_usage_seen = False
        self._usage: dict[str, int | None] = {}
        # Anthropic content-block index → our tool-call index, and whether it got arguments.
        self._tool_index: dict[int, int] = {}
        self._tool_has_arguments: dict[int, bool] = {}
        # Anthropic content-block index → our reasoning-part index.
        self._reasoning_index: dict[int, int] = {}
        #: Characters of answer text sent so far (citation spans count them).
        self._chars = 0
        # Text content-block index → where its text starts, and its citations (decoded JSON read by attribute) so far.
        self._text_blocks: dict[int, tuple[int, list[Any]]] = {}

    def feed(self, event: RawMessageStreamEvent) -> list[chat_pb2.ChatDelta]:
        """The deltas this event produces (often none)."""
        if event.type == "message_start":
            self.model = event.message.model
            self.message_id = event.message.id
            self._take_usage(event.message.usage)
        elif event.type == "content_block_start":
            return self._block_start(event.index, event.content_block)
        elif event.type == "content_block_delta":
            return self._block_delta(event.index, event.delta)
        elif event.type == "content_block_stop":
            return self._block_stop(event.index)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.stop_sequence = event.delta.stop_sequence or self.stop_sequence
            self.stop_details = event.delta.stop_details or self.stop_details
            self._take_usage(event.usage)
            self.final_usage_seen = self.final_usage_seen or getattr(event.usage, "output_tokens", None) is not None
            refusal = refusal_text(event.delta.stop_reason, event.delta.stop_details)
            if refusal:
                # The refusal is known only with the stop reason: one delta, just before the final.
                return [chat_pb2.ChatDelta(refusal=refusal)]
        return []

    def usage(self) -> chat_pb2.Usage:
        return usage_of(
            input_tokens=self._usage.get("input_tokens"),
            output_tokens=self._usage.get("output_tokens"),
            cache_read=self._usage.get("cache_read_input_tokens"),
            cache_creation=self._usage.get("cache_creation_input_tokens"),
            thinking_tokens=self._usage.get("thinking_tokens"),
        )

    def _take_usage(self, usage: Any) -> None:
        # message_delta counts are cumulative; a None means "not reported here".
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = getattr(usage, name, None)
            if value is not None:
                self._usage[name] = value
        details = getattr(usage, "output_tokens_details", None)
        if details is not None:
            self._usage["thinking_tokens"] = details.thinking_tokens

    def _block_start(self, index: int, block: Any) -> list[chat_pb2.ChatDelta]:
        if block.type == "text":
            self._text_blocks[index] = (self._chars, list(getattr(block, "citations", None) or []))
            return self._text(block.text)
        if block.type == "tool_use" and self._json_tool and block.name == JSON_OBJECT_TOOL:
            self._json_blocks[index] = False
            return []
        if block.type == "tool_use":
            tool_index = len(self._tool_index)
            self._tool_index[index] = tool_index
            self._tool_has_arguments[index] = False
            return [
                chat_pb2.ChatDelta(tool_calls=[chat_pb2.ToolCallDelta(index=tool_index, id=block.id, name=block.name)])
            ]
        if block.type == "thinking":
            reasoning = self._reasoning(index, text=block.thinking, signature=block.signature)
            return [chat_pb2.ChatDelta(reasoning=reasoning)]
        if block.type == "redacted_thinking":
            return [chat_pb2.ChatDelta(reasoning=self._reasoning(index, redacted_data=block.data))]
        return []

    def _reasoning(self, block_index: int, **fields: str) -> chat_pb2.ReasoningDelta:
        index = self._reasoning_index.setdefault(block_index, len(self._reasoning_index))
        return chat_pb2.ReasoningDelta(index=index, provider=PROVIDER, **fields)

    def _block_delta(self, index: int, delta: Any) -> list[chat_pb2.ChatDelta]:
        if delta.type == "text_delta":
            return self._text(delta.text)
        if delta.type == "citations_delta" and index in self._text_blocks:
            self._text_blocks[index][1].append(delta.citation)
            return []
        if delta.type == "input_json_delta" and index in self._json_blocks:
            if not delta.partial_json:
                return []
            self._json_blocks[index] = True
            return self._text(delta.partial_json)
        if delta.type == "input_json_delta" and index in self._tool_index:
            if not delta.partial_json:
                return []
            self._tool_has_arguments[index] = True
            return [
                chat_pb2.ChatDelta(
                    tool_calls=[
                        chat_pb2.ToolCallDelta(index=self._tool_index[index], arguments_json_delta=delta.partial_json)
                    ]
                )
            ]
        if index in self._reasoning_index and delta.type == "thinking_delta" and delta.thinking:
            return [chat_pb2.ChatDelta(reasoning=self._reasoning(index, text=delta.thinking))]
        if index in self._reasoning_index and delta.type == "signature_delta":
            return [chat_pb2.ChatDelta(reasoning=self._reasoning(index, signature=delta.signature))]
        return []

    def _text(self, text: str) -> list[chat_pb2.ChatDelta]:
        self._chars += len(text)
        return [chat_pb2.ChatDelta(text=text)] if text else []

    def _block_stop(self, index: int) -> list[chat_pb2.ChatDelta]:
        if index in self._text_blocks:
            start, found = self._text_blocks.pop(index)
            mapped = [citation(item, start=start, end=self._chars) for item in found]
            cited = [item for item in mapped if item is not None]
            return [chat_pb2.ChatDelta(citations=cited)] if cited else []
        if self._json_blocks.get(index) is False:
            self._json_blocks[index] = True
            return self._text("{}")
        if index in self._tool_index and not self._tool_has_arguments[index]:
            # A tool with no input streams no JSON at all; callers still need an object.
            self._tool_has_arguments[index] = True
            return [
                chat_pb2.ChatDelta(
                    tool_calls=[chat_pb2.ToolCallDelta(index=self._tool_index[index], arguments_json_delta="{}")]
                )
            ]
        return []


class PrefixSeam:
    """Joins a continuation to the prefix it continues.

    Anthropic takes the prefix without its trailing whitespace, which the
    caller already has; the model then starts with whitespace of its own, so
    the continuation's leading whitespace is dropped once.
    """

    def __init__(self, prefix: str) -> None:
        self._pending = bool(prefix.strip()) and prefix != prefix.rstrip()

    def join(self, delta: chat_pb2.ChatDelta) -> chat_pb2.ChatDelta | None:
        """The delta to send, or None when nothing is left of it."""
        if not self._pending or not delta.text:
            return delta
        delta.text = delta.text.lstrip()
        if delta.text:
            self._pending = False
        return delta if delta.text or delta.tool_calls or delta.HasField("reasoning") else None

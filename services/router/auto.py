"""`auto` and `auto:<tier>`: the router chooses the model.

The policy, in order (documented in the README):
1. `auto` means the routing file's `auto.default_tier`; `auto:<tier>` names one.
2. Start from the tier's models, best first.
3. Drop models whose context window cannot hold the prompt (estimated at 4
   characters a token) plus the requested max output tokens (or
   `auto.reserve_output_tokens`).
4. Drop models whose routing-file capabilities lack what the request needs:
   tools (`capabilities.tools`, or `supports_tools: false`), reasoning
   (`reasoning: false`), image, document and audio parts (`vision`,
   `documents`, `audio` false), a JSON schema (`json_schema: false`).
5. Move models without a discovered instance, with an open circuit breaker,
   or whose provider reported low rate-limit headroom, behind the others.
6. The first model answers; the rest are its fallbacks, in that order.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import REASON_CONTEXT_WINDOW_EXCEEDED, REASON_MODEL_NOT_FOUND, MeshError, invalid_argument
from services.common.reasoning import asks_for_reasoning
from services.router.config import Candidate, RoutingTable

_CHARS_PER_TOKEN = 4


def is_auto(model: str) -> bool:
    return model == "auto" or model.startswith("auto:")


def estimate_prompt_tokens(request: rpb.ChatRequest | rpb.StreamChatRequest) -> int:
    """A tokenizer-free estimate: characters / 4, plus per-message and per-tool overhead."""
    characters = 0
    messages = request.messages
    for message in messages:
        characters += 16
        for part in (*message.content, *message.tool_result.parts):
            characters += _part_characters(part)
        characters += len(message.tool_result.content)
        characters += sum(len(call.arguments_json) + len(call.name) for call in message.tool_calls)
    for tool in request.tools:
        characters += len(tool.name) + len(tool.description) + tool.parameters.ByteSize()
    return characters // _CHARS_PER_TOKEN


def _part_characters(part: chat_pb2.ContentPart) -> int:
    """Text by its length, a plain-text document by its bytes; an image, PDF or audio clip as 1000."""
    kind = part.WhichOneof("kind")
    if kind == "text":
        return len(part.text)
    if kind == "document" and part.document.mime_type == "text/plain":
        return len(part.document.data)
    return 1000


def choose(
    table: RoutingTable,
    request: rpb.ChatRequest | rpb.StreamChatRequest,
    *,
    deprioritise: Callable[[Candidate], bool],
) -> list[Candidate]:
    """Candidates for an `auto` request, best first, following the policy above."""
    auto = table.routing.auto
    model: str = request.model
    known = ", ".join(f"auto:{name}" for name in auto.tiers) or "none configured"
    if model == "auto:":
        # Not the default tier in disguise: a template that lost its tier name should say so.
        raise invalid_argument(
            "model", f"'auto:' names no tier; use 'auto' for the default tier ({auto.default_tier}) or one of: {known}"
        )
    tier_name = model.partition(":")[2] or auto.default_tier
    tier = auto.tiers.get(tier_name)
    if tier is None:
        raise MeshError(
            grpc.StatusCode.NOT_FOUND,
            f"model: {model!r} names no auto tier in the routing file (tiers: {known})",
            reason=REASON_MODEL_NOT_FOUND,
        )
    settings = request.settings
    output = settings.max_output_tokens if settings.HasField("max_output_tokens") else auto.reserve_output_tokens
    needed = estimate_prompt_tokens(request) + output
    has_tools = bool(request.tools)
    wants_reasoning = asks_for_reasoning(request)
    kinds = {part.WhichOneof("kind") for message in request.messages for part in message.content}
    kinds |= {part.WhichOneof("kind") for message in request.messages for part in message.tool_result.parts}
    has_images, has_documents, has_audio = "image" in kinds, "document" in kinds, "audio" in kinds
    wants_schema = settings.response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    chosen: list[Candidate] = []
    for name in tier.models:
        candidate = table.lookup(name)
        assert candidate is not None  # the routing file validator checked tier members
        if candidate.context_window and candidate.context_window < needed:
            continue
        if has_tools and not candidate.supports_tools:
            continue
        if wants_reasoning and not candidate.reasoning:
            continue
        caps = candidate.capabilities
        if (
            (has_images and not caps.vision)
            or (has_documents and not caps.documents)
            or (has_audio and not caps.audio)
            or (wants_schema and not caps.json_schema)
        ):
            continue
        chosen.append(candidate)
    if not chosen:
        raise MeshError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"messages: about {needed} tokens (prompt + output) fit no model of tier {tier_name!r}"
            + ("" if not has_tools else " that supports tools")
            + ("" if not wants_reasoning else " that reasons")
            + ("" if not has_images else " that reads images")
            + ("" if not has_documents else " that reads documents")
            + ("" if not has_audio else " that hears audio")
            + ("" if not wants_schema else " that follows JSON schemas"),
            reason=REASON_CONTEXT_WINDOW_EXCEEDED,
            field="messages",
        )
    # A stable sort keeps the tier's order within each group.
    return sorted(chosen, key=deprioritise)

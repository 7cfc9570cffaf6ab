"""Router answers → OpenAI chat.completion objects, SSE chunks and the model list.

Every object carries OpenAI's fields; what the mesh adds (provider, attempts,
cost) rides in an extra `llmmesh` field, which OpenAI SDKs keep as an extra
attribute and other clients ignore. On a stream it is on the chunk that
carries the finish_reason (the answering model is also that chunk's `model`).

A caller that used the deprecated `functions` gets the deprecated answer
shape: `message.function_call` (the first call; that API has one) and
finish_reason `function_call`, as OpenAI answers such requests.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import grpc

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common import logprobs
from services.router import door_cache, door_citations, door_reasoning
from services.router.balancer import Balancer
from services.router.config import Candidate, ModelRoute

_FINISH_REASONS = {
    chat_pb2.FINISH_REASON_STOP: "stop",
    chat_pb2.FINISH_REASON_LENGTH: "length",
    chat_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    # OpenAI ends a refusal with "stop"; `message.refusal` says it was one.
    chat_pb2.FINISH_REASON_REFUSAL: "stop",
}
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def finish_reason(reason: chat_pb2.FinishReason.ValueType) -> str:
    # OpenAI has no "other": a provider-specific stop reads as a stop.
    return _FINISH_REASONS.get(reason, "stop")


def usage(value: chat_pb2.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": value.input_tokens,
        "completion_tokens": value.output_tokens,
        "total_tokens": value.input_tokens + value.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": value.cached_input_tokens,
            "cache_write_tokens": value.cache_write_input_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": value.reasoning_tokens},
        # LiteLLM's (and Anthropic's) names for the same counts (door_cache.py).
        **door_cache.chat_usage_fields(value),
    }


def attempts(values: Any) -> list[dict[str, Any]]:
    """The router's attempt list, compact (also the x-llmmesh-attempts header)."""
    result = []
    for attempt in values:
        entry: dict[str, Any] = {
            "model": attempt.model,
            "provider": attempt.provider,
            "instance": attempt.instance,
            "outcome": rpb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_").lower(),
            "code": _CODE_NAMES.get(attempt.code, str(attempt.code)),
            "latency_ms": round(attempt.latency.ToNanoseconds() / 1e6, 1),
        }
        for name in ("reason", "message", "moved_on_because"):
            if getattr(attempt, name):
                entry[name] = getattr(attempt, name)
        if attempt.hedged:
            entry["hedged"] = True
        result.append(entry)
    return result


def _message(message: chat_pb2.Message, *, legacy: bool = False) -> dict[str, Any]:
    text = "".join(part.text for part in message.content if part.WhichOneof("kind") == "text")
    result: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not (message.tool_calls or message.refusal) else None,
        "refusal": message.refusal or None,
        **door_reasoning.message_fields(message),
    }
    if legacy and message.tool_calls:
        call = message.tool_calls[0]
        result["function_call"] = {"name": call.name, "arguments": call.arguments_json}
    elif message.tool_calls:
        result["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
            for call in message.tool_calls
        ]
    annotations = door_citations.chat_annotations(message.citations)
    if annotations:
        result["annotations"] = annotations
    return result


def _logprobs(values: Any) -> dict[str, Any] | None:
    """A choice's `logprobs`: the content tokens' (refusal tokens are not carried), null when there are none."""
    return {"content": logprobs.to_openai(values), "refusal": None} if len(values) else None


def _mesh_fields(answer: rpb.ChatResponse | rpb.StreamChatFinal) -> dict[str, Any]:
    """The `llmmesh` field, the same for a completion and a stream's final chunk."""
    return {
        "provider": answer.provider,
        "response_model": answer.response_model,
        # The upstream's id; the OpenAI `id` field is the door's own, the same in every chunk.
        "response_id": answer.response_id,
        "estimated_cost_usd": answer.estimated_cost_usd,
        "attempts": attempts(answer.attempts),
    }


def _finish(reason: chat_pb2.FinishReason.ValueType, legacy: bool) -> str:
    named = finish_reason(reason)
    return "function_call" if legacy and named == "tool_calls" else named


def completion(response: rpb.ChatResponse, identifier: str, *, legacy: bool = False) -> dict[str, Any]:
    """A chat.completion; FANOUT_ALL alternatives become choices 1..n; `legacy`: the `functions` shape."""
    answers = [response, *response.alternatives]
    choices = [
        {
            "index": index,
            "message": _message(answer.message, legacy=legacy),
            "finish_reason": _finish(answer.finish_reason, legacy),
            "logprobs": _logprobs(answer.message.logprobs),
        }
        for index, answer in enumerate(answers)
    ]
    result: dict[str, Any] = {
        "id": identifier,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model,
        "choices": choices,
        "usage": usage(response.usage),
        "llmmesh": _mesh_fields(response),
    }
    # OpenAI's schema types it as a string: the upstream's own fingerprint, else no field (never null).
    fingerprint = _fingerprint(response)
    if fingerprint:
        result["system_fingerprint"] = fingerprint
    if response.message.citations:
        result["llmmesh"]["citations"] = door_citations.mesh_citations(response.message.citations)
    if response.alternatives:
        result["llmmesh"]["alternatives"] = [_alternative(a) for a in response.alternatives]
    return result


def _alternative(answer: rpb.ChatResponse) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": answer.model, "provider": answer.provider}
    if answer.message.citations:
        entry["citations"] = door_citations.mesh_citations(answer.message.citations)
    return entry


def _fingerprint(response: rpb.ChatResponse) -> str:
    if "openai" not in response.extensions.fields:
        return ""
    value = response.extensions.fields["openai"]
    if value.WhichOneof("kind") != "struct_value" or "system_fingerprint" not in value.struct_value.fields:
        return ""
    return value.struct_value.fields["system_fingerprint"].string_value


class ChunkStream:
    """Turns router stream events into chat.completion.chunk objects.

    `model` starts as the requested name (the router does not say which
    candidate streams until its final message or a continuation) and becomes
    the model that answered once that is known.
    """

    def __init__(self, identifier: str, model: str, *, include_usage: bool, legacy: bool = False) -> None:
        self._id = identifier
        self._model = model
        self._created = int(time.time())
        self._include_usage = include_usage
        self._legacy = legacy

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    @staticmethod
    def _choice(delta: dict[str, Any], finish: str | None = None, logprobs: Any = ()) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": _logprobs(logprobs), "finish_reason": finish}

    def opening(self) -> dict[str, Any]:
        """The first chunk: the assistant role, as OpenAI sends it."""
        return self._chunk([self._choice({"role": "assistant", "content": ""})])

    def event(self, event: rpb.StreamChatResponse) -> list[dict[str, Any]]:
        """The chunks for one router event."""
        kind = event.WhichOneof("event")
        if kind == "delta":
            delta = _legacy_delta(event.delta) if self._legacy else _delta(event.delta)
            if delta is None:
                return []
            extra: dict[str, Any] = {}
            if event.delta.citations:
                annotations = door_citations.chat_annotations(event.delta.citations)
                if annotations:
                    delta["annotations"] = annotations
                extra["llmmesh"] = {"citations": door_citations.mesh_citations(event.delta.citations)}
            return [self._chunk([self._choice(delta, logprobs=event.delta.logprobs)], **extra)]
        if kind == "continuation":
            self._model = event.continuation.model
            notice = {
                "continuation": {
                    "model": event.continuation.model,
                    "provider": event.continuation.provider,
                    "reason": event.continuation.reason,
                }
            }
            return [self._chunk([self._choice({})], llmmesh=notice)]
        if kind == "final":
            return self._final(event.final)
        return []

    def _final(self, final: rpb.StreamChatFinal) -> list[dict[str, Any]]:
        self._model = final.model
        mesh = {**_mesh_fields(final), "continued": final.continued}
        chunks = [self._chunk([self._choice({}, _finish(final.finish_reason, self._legacy))], llmmesh=mesh)]
        if self._include_usage:
            chunks.append(self._chunk([], usage=usage(final.usage)))
        return chunks


def _delta(delta: chat_pb2.ChatDelta) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if delta.HasField("reasoning"):
        result.update(door_reasoning.delta_fields(delta.reasoning))
    if delta.text:
        result["content"] = delta.text
    if delta.refusal:
        result["refusal"] = delta.refusal
    if delta.tool_calls:
        calls = []
        for call in delta.tool_calls:
            entry: dict[str, Any] = {"index": call.index}
            if call.id:
                entry["id"] = call.id
                entry["type"] = "function"
            function: dict[str, str] = {"arguments": call.arguments_json_delta}
            if call.name:
                function["name"] = call.name
            entry["function"] = function
            calls.append(entry)
        result["tool_calls"] = calls
    return result


def _legacy_delta(delta: chat_pb2.ChatDelta) -> dict[str, Any] | None:
    """The `functions` stream shape: `function_call` deltas of the first call; later calls are not sent."""
    result: dict[str, Any] = {}
    if delta.HasField("reasoning"):
        result.update(door_reasoning.delta_fields(delta.reasoning))
    if delta.text:
        result["content"] = delta.text
    if delta.refusal:
        result["refusal"] = delta.refusal
    calls = [call for call in delta.tool_calls if call.index == 0]
    if calls:
        function: dict[str, str] = {"arguments": "".join(call.arguments_json_delta for call in calls)}
        name = next((call.name for call in calls if call.name), "")
        if name:
            function["name"] = name
        result["function_call"] = function
    if not result and delta.tool_calls:
        return None
    return result


def model_entry(name: str, route: ModelRoute, candidate: Candidate, balancer: Balancer) -> dict[str, Any]:
    """One `model` object of GET /v1/models.

    Besides OpenAI's four fields, what the model can do in OpenRouter's names
    (`context_length`, `architecture.input_modalities`,
    `top_provider.max_completion_tokens`, `supported_parameters`) and the
    mesh's own under `llmmesh.capabilities` (ModelCapabilities' fields).
    """
    caps = candidate.capabilities
    modalities = ["text"] + ["image"] * caps.vision + ["file"] * caps.documents + ["audio"] * caps.audio
    parameters = ["max_tokens", "stop", "seed", "response_format"]
    parameters += ["temperature", "top_p"] * caps.sampling
    parameters += ["tools", "tool_choice", "parallel_tool_calls"] * caps.tools
    parameters += ["structured_outputs"] * caps.json_schema
    parameters += ["reasoning", "include_reasoning"] * caps.reasoning
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": candidate.kind,
        "context_length": route.context_window or None,
        "architecture": {"input_modalities": modalities, "output_modalities": ["text"]},
        "top_provider": {
            "context_length": route.context_window or None,
            "max_completion_tokens": caps.max_output_tokens or None,
        },
        "supported_parameters": sorted(parameters),
        "llmmesh": {
            "capabilities": {
                "vision": caps.vision,
                "documents": caps.documents,
                "audio": caps.audio,
                "tools": caps.tools,
                "json_schema": caps.json_schema,
                "reasoning": caps.reasoning,
                "sampling": caps.sampling,
                "context_window": caps.context_window,
                "max_output_tokens": caps.max_output_tokens,
            },
            "provider": candidate.provider,
            "aliases": list(route.aliases),
            "context_window": route.context_window,
            "description": route.description,
            "mock": candidate.kind == "mock",
            "available": len(balancer.pool(candidate.service)) > 0,
        },
    }


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()

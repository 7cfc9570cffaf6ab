"""The mock provider: deterministic answers, scripts, injected latency and failures.

It is labelled a mock everywhere it shows (ListModels, README). Tests,
benchmarks, chaos runs and the key-less demo use it. Behaviour comes from
MockConfig per model, and per request from `extensions["mock"]`:

    delay_ms, fail_code, fail_message, fail_reason, fail_field (BadRequest
    field), retry_after_s, text (answer to give; "" for none), finish_reason ("stop", "length", ...),
    stream_cut_after (end the stream after N deltas without a final message),
    stream_chunk_delay_ms (this request's pause between streamed deltas, instead of the model's),
    response_extensions (an object returned as the answer's extensions["mock"],
    unary and stream alike), refusal (decline with this text: Message.refusal,
    streamed as ChatDelta.refusal words, FINISH_REASON_REFUSAL; no text unless `text` says),
    citations (true: one made-up URL citation spanning the whole answer, from a hash of its text;
    or a list of Citation objects in proto JSON, returned as given; streams send them in a delta
    of their own after the text),
    by_model: {model name: {any of the above}} (applies to that model only,
    so one request can script every candidate of a fallback chain)

Images, documents, audio and tool result parts are accepted as they are; the
start event lists them (`parts`: where, kind, type and size, never the bytes).

A scripted turn keeps only the tool calls `tool_choice.allowed_tools` allows
(only the first with `parallel_tool_calls` false); the start event records both.

`settings.logprobs` gets made-up, deterministic log probabilities, one
"token" per word (and `top_logprobs` alternatives named `<word>~<rank>`).

Prompt caching, deterministic and stateless: the messages up to and
including the last one with a `cache_control` part (the system prompt, say)
are the cached prefix, counted like the rest of the input. A conversation's
first turn (no assistant message yet) writes it
(`Usage.cache_write_input_tokens`); later turns read it
(`cached_input_tokens`). `settings.prompt_cache.key` alone caches every
message but the last, the way OpenAI caches on its own. A breakpoint on a
tool alone caches nothing the mock counts (it counts no tool tokens).
`settings.prompt_cache.cached_content` is served as a no-op. The start event
records the breakpoints (field path → TTL) and the prompt-cache settings.

An `assistant_prefix` the answer starts with is left out of it: the mock
continues a prefix, as the routing file may say with `continues_prefix`.

With LLMMESH_MOCK_EVENTS_FILE set, every call appends JSON lines (start,
end, failed, cancelled) so tests can see what reached the provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2, embeddings_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import (
    REASON_CONTEXT_WINDOW_EXCEEDED,
    REASON_EMBEDDINGS_UNSUPPORTED,
    REASON_MODEL_NOT_FOUND,
    MeshError,
    invalid_argument,
)
from services.providers.base import ProviderAdapter
from services.providers.mock import reasoning
from services.providers.mock.config import Failure, MockConfig, MockModel, Script, ScriptTurn

_FINISH_REASONS = {
    "stop": chat_pb2.FINISH_REASON_STOP,
    "length": chat_pb2.FINISH_REASON_LENGTH,
    "tool_calls": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "content_filter": chat_pb2.FINISH_REASON_CONTENT_FILTER,
    "refusal": chat_pb2.FINISH_REASON_REFUSAL,
}
Request: TypeAlias = pb.ProviderServiceChatRequest | pb.ProviderServiceStreamChatRequest


class MockAdapter(ProviderAdapter):
    """A ProviderAdapter that needs no network and no key."""

    provider = "mock"

    def __init__(self, config: MockConfig, *, events_file: str = "", instance: str = "mock") -> None:
        self._models = {model.name: model for model in config.models}
        self._scripts = config.scripts
        self._rng = random.Random(config.seed)
        self._events_file = events_file
        self._instance = instance
        self._calls = 0

    def list_models(self) -> list[chat_pb2.ModelInfo]:
        return [
            chat_pb2.ModelInfo(
                name=model.name,
                provider=self.provider,
                context_window=model.context_window,
                description="MOCK: deterministic test double, not a language model"
                + (" (scripted)" if model.scripted else ""),
                mock=True,
                provider_instances=[self._instance],
                available=True,
            )
            for model in self._models.values()
        ]

    async def chat(self, request: pb.ProviderServiceChatRequest, *, timeout: float) -> pb.ProviderServiceChatResponse:
        model, overrides, call_id = self._begin(request)
        try:
            await self._delay_or_fail(model, overrides)
            turn = self._answer(model, request, overrides)
            thought = reasoning.thought(request, _last_user_text(request), supported=model.reasoning)
            message = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, refusal=_refusal(overrides))
            if thought is not None:
                message.content.add(reasoning=thought)
            if turn.text:
                message.content.add(text=turn.text)
                message.logprobs.extend(_logprobs(request, _split_keeping_spaces(turn.text)))
            message.citations.extend(_citations(overrides, turn.text))
            for index, call in enumerate(turn.tool_calls):
                message.tool_calls.add(
                    id=_call_id(request, index), name=call.name, arguments_json=json.dumps(call.arguments)
                )
            response = pb.ProviderServiceChatResponse(
                message=message,
                finish_reason=self._finish_reason(turn, overrides),
                usage=_usage(request, turn, thought),
                response_model=model.name,
                response_id=f"mock-{call_id}",
                extensions=_response_extensions(overrides),
            )
        except BaseException as error:
            self._record_failure(call_id, model.name, error)
            raise
        self._record("end", call_id, model.name)
        return response

    async def stream_chat(
        self, request: pb.ProviderServiceStreamChatRequest, *, timeout: float
    ) -> AsyncIterator[pb.ProviderServiceStreamChatResponse]:
        model, overrides, call_id = self._begin(request)
        try:
            await self._delay_or_fail(model, overrides)
            turn = self._answer(model, request, overrides)
            thought = reasoning.thought(request, _last_user_text(request), supported=model.reasoning)
            cut_after = overrides.get("stream_cut_after")
            pause_s = max(0.0, float(overrides.get("stream_chunk_delay_ms", model.stream_chunk_delay_ms))) / 1000.0
            thought_deltas = reasoning.deltas(thought) if thought is not None else []
            refusal_deltas = [chat_pb2.ChatDelta(refusal=word) for word in _split_keeping_spaces(_refusal(overrides))]
            cited = _citations(overrides, turn.text)
            citation_deltas = [chat_pb2.ChatDelta(citations=cited)] if cited else []
            for sent, delta in enumerate(
                thought_deltas + _with_logprobs(request, _deltas(turn, request)) + citation_deltas + refusal_deltas
            ):
                if cut_after is not None and sent >= int(cut_after):
                    self._record("cut", call_id, model.name)
                    return  # ends without a final message: a truncated stream
                if pause_s and sent:
                    await asyncio.sleep(pause_s)
                yield pb.ProviderServiceStreamChatResponse(delta=delta)
            yield pb.ProviderServiceStreamChatResponse(
                final=pb.ProviderStreamFinal(
                    finish_reason=self._finish_reason(turn, overrides),
                    usage=_usage(request, turn, thought),
                    response_model=model.name,
                    response_id=f"mock-{call_id}",
                    extensions=_response_extensions(overrides),
                )
            )
        except BaseException as error:
            self._record_failure(call_id, model.name, error)
            raise
        self._record("end", call_id, model.name)

    async def embed(
        self, request: pb.ProviderServiceEmbedRequest, *, timeout: float
    ) -> pb.ProviderServiceEmbedResponse:
        self._calls += 1
        call_id = self._calls
        model = self._model(call_id, request.model)
        overrides = _overrides(model, request.extensions)
        self._record("start", call_id, model.name, inputs=len(request.inputs), operation="embeddings")
        try:
            await self._delay_or_fail(model, overrides)
            length = _embedding_length(model, request)
            response = pb.ProviderServiceEmbedResponse(
                embeddings=[
                    embeddings_pb2.Embedding(index=index, values=_vector(model, text, length))
                    for index, text in enumerate(request.inputs)
                ],
                usage=chat_pb2.Usage(input_tokens=sum(max(len(text.split()), 1) for text in request.inputs)),
                response_model=model.name,
            )
        except BaseException as error:
            self._record_failure(call_id, model.name, error)
            raise
        self._record("end", call_id, model.name)
        return response

    def _model(self, call_id: int, name: str) -> MockModel:
        model = self._models.get(name)
        if model is None:
            self._record("start", call_id, name)
            self._record("failed", call_id, name, code="NOT_FOUND")
            raise MeshError(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} is not served here; served: {', '.join(sorted(self._models))}",
                reason=REASON_MODEL_NOT_FOUND,
            )
        return model

    def _begin(self, request: Request) -> tuple[MockModel, dict[str, Any], int]:
        self._calls += 1
        call_id = self._calls
        model = self._model(call_id, request.model)
        overrides = _overrides(model, request.extensions)
        last = request.messages[-1] if request.messages else None
        self._record(
            "start",
            call_id,
            model.name,
            messages=len(request.messages),
            last_role=chat_pb2.Role.Name(last.role) if last is not None else "",
            last_text=_text_of(last) if last is not None else "",
            assistant_prefix=request.assistant_prefix,
            **_tool_choice_seen(request),
            **_cache_seen(request),
            **_parts_seen(request),
        )
        return model, overrides, call_id

    async def _delay_or_fail(self, model: MockModel, overrides: dict[str, Any]) -> None:
        delay = overrides.get("delay_ms")
        seconds = float(delay) / 1000.0 if delay is not None else model.sample_latency(self._rng)
        if seconds:
            await asyncio.sleep(seconds)
        failure = model.sample_failure(self._rng)
        if "fail_code" in overrides:
            failure = Failure(
                code=overrides["fail_code"],
                rate=1,
                message=overrides.get("fail_message", ""),
                reason=overrides.get("fail_reason", ""),
                retry_after_s=overrides.get("retry_after_s"),
            )
        if failure is not None:
            raise MeshError(
                grpc.StatusCode[failure.code],
                failure.message or f"mock: injected {failure.code}",
                reason=failure.reason or f"MOCK_{failure.code}",
                retry_after=failure.retry_after_s,
                field=overrides.get("fail_field") if "fail_code" in overrides else None,
            )

    def _answer(self, model: MockModel, request: Request, overrides: dict[str, Any]) -> ScriptTurn:
        tokens = _count_input_tokens(request)
        if tokens > model.context_window:
            raise MeshError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"prompt is {tokens} tokens, above {model.name}'s context window of {model.context_window}",
                reason=REASON_CONTEXT_WINDOW_EXCEEDED,
                metadata={"context_window": str(model.context_window), "prompt_tokens": str(tokens)},
            )
        if "text" in overrides or "refusal" in overrides:
            # An empty text is an answer without content (a withheld answer streams no delta).
            turn = ScriptTurn.model_construct(text=str(overrides.get("text", "")), tool_calls=[])
        elif model.scripted:
            turn = _play_script(self._scripts, request)
        else:
            turn = ScriptTurn(text=f"[mock {model.name}] {_last_user_text(request)}")
        return _continued(_within_tool_choice(turn, request.tool_choice), request.assistant_prefix)

    @staticmethod
    def _finish_reason(turn: ScriptTurn, overrides: dict[str, Any]) -> chat_pb2.FinishReason.ValueType:
        named = overrides.get("finish_reason")
        if named is not None:
            if named not in _FINISH_REASONS:
                raise invalid_argument("extensions.mock.finish_reason", f"must be one of {sorted(_FINISH_REASONS)}")
            return _FINISH_REASONS[named]
        if _refusal(overrides):
            return chat_pb2.FINISH_REASON_REFUSAL
        return chat_pb2.FINISH_REASON_TOOL_CALLS if turn.tool_calls else chat_pb2.FINISH_REASON_STOP

    def _record_failure(self, call_id: int, model: str, error: BaseException) -> None:
        if isinstance(error, asyncio.CancelledError):
            self._record("cancelled", call_id, model)
        elif isinstance(error, MeshError):
            self._record("failed", call_id, model, code=error.code.name)
        else:
            self._record("failed", call_id, model, code="INTERNAL")

    def _record(self, event: str, call_id: int, model: str, **extra: object) -> None:
        if not self._events_file:
            return
        line = json.dumps(
            {
                "event": event,
                "call": call_id,
                "model": model,
                "pid": os.getpid(),
                "instance": self._instance,
                "time": time.time(),
                **extra,
            }
        )
        # One short O_APPEND write per line keeps lines whole across processes.
        with open(self._events_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _overrides(model: MockModel, extensions: struct_pb2.Struct) -> dict[str, Any]:
    """`extensions["mock"]`, with its `by_model` entry for this model merged in."""
    if "mock" not in extensions.fields:
        return {}
    overrides: dict[str, Any] = json_format.MessageToDict(extensions.fields["mock"].struct_value)
    overrides.update(overrides.pop("by_model", {}).get(model.name, {}))
    return overrides


def _logprobs(request: Request, words: list[str], start: int = 0) -> list[chat_pb2.TokenLogprob]:
    """Made-up but deterministic log probabilities, one "token" per word, when settings.logprobs asks."""
    settings = request.settings
    if not settings.logprobs:
        return []
    out = []
    for index, word in enumerate(words, start):
        logprob = -0.25 * (index % 4)
        alternatives = [
            chat_pb2.TopLogprob(token=f"{word.strip()}~{rank}", logprob=logprob - rank, token_bytes=word.encode())
            for rank in range(1, settings.top_logprobs + 1)
        ]
        out.append(
            chat_pb2.TokenLogprob(token=word, logprob=logprob, token_bytes=word.encode(), top_logprobs=alternatives)
        )
    return out


def _with_logprobs(request: Request, deltas: list[chat_pb2.ChatDelta]) -> list[chat_pb2.ChatDelta]:
    for index, delta in enumerate(deltas):
        if delta.text:
            delta.logprobs.extend(_logprobs(request, [delta.text], start=index))
    return deltas


def _tool_choice_seen(request: Request) -> dict[str, Any]:
    """What the start event records of the tool choice, so tests see what reached the provider."""
    choice = request.tool_choice
    seen: dict[str, Any] = {}
    if choice.allowed_tools:
        seen["allowed_tools"] = list(choice.allowed_tools)
    if choice.HasField("parallel_tool_calls"):
        seen["parallel_tool_calls"] = choice.parallel_tool_calls
    return seen


def _cache_seen(request: Request) -> dict[str, Any]:
    """What the start event records of prompt caching: each breakpoint's field path and TTL, the settings."""
    seen: dict[str, Any] = {}
    marks = {
        f"tools[{index}]": chat_pb2.CacheTtl.Name(tool.cache_control.ttl)
        for index, tool in enumerate(request.tools)
        if tool.HasField("cache_control")
    }
    marks.update(
        {
            f"messages[{index}].content[{part_index}]": chat_pb2.CacheTtl.Name(part.cache_control.ttl)
            for index, message in enumerate(request.messages)
            for part_index, part in enumerate(message.content)
            if part.HasField("cache_control")
        }
    )
    marks.update(
        {
            f"messages[{index}].tool_result.parts[{part_index}]": chat_pb2.CacheTtl.Name(part.cache_control.ttl)
            for index, message in enumerate(request.messages)
            for part_index, part in enumerate(message.tool_result.parts)
            if part.HasField("cache_control")
        }
    )
    if marks:
        seen["cache_breakpoints"] = marks
    cache = request.settings.prompt_cache
    if cache.key or cache.cached_content:
        seen["prompt_cache"] = {"key": cache.key, "cached_content": cache.cached_content}
    return seen


def _parts_seen(request: Request) -> dict[str, Any]:
    """What the start event records of the request's images, documents, audio and tool result parts
    (kind, message, size and type, never the bytes), so tests see what reached the provider."""
    seen: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        parts = [(f"content[{i}]", part) for i, part in enumerate(message.content)]
        parts += [(f"tool_result.parts[{i}]", part) for i, part in enumerate(message.tool_result.parts)]
        for where, part in parts:
            kind = part.WhichOneof("kind")
            if kind not in ("image", "document", "audio") and not where.startswith("tool_result"):
                continue
            entry: dict[str, Any] = {"at": f"messages[{index}].{where}", "kind": kind}
            if kind == "text":
                entry["text"] = part.text
            elif kind == "image":
                entry.update(source=part.image.WhichOneof("source"), mime_type=part.image.mime_type)
                entry.update(bytes=len(part.image.data), detail=chat_pb2.ImageDetail.Name(part.image.detail))
            elif kind == "document":
                document = part.document
                entry.update(source=document.WhichOneof("source"), mime_type=document.mime_type)
                entry.update(bytes=len(document.data), filename=document.filename, title=document.title)
                entry.update(url=document.url, file_id=document.file_id)
                entry.update(enable_citations=document.enable_citations)
            elif kind == "audio":
                entry.update(format=part.audio.format, mime_type=part.audio.mime_type, bytes=len(part.audio.data))
            seen.append(entry)
    return {"parts": seen} if seen else {}


def _within_tool_choice(turn: ScriptTurn, choice: chat_pb2.ToolChoice) -> ScriptTurn:
    """A scripted turn keeps only the calls the tool choice allows (one, with parallel_tool_calls false)."""
    calls = [call for call in turn.tool_calls if not choice.allowed_tools or call.name in choice.allowed_tools]
    if choice.HasField("parallel_tool_calls") and not choice.parallel_tool_calls:
        calls = calls[:1]
    if len(calls) == len(turn.tool_calls):
        return turn
    return ScriptTurn.model_construct(text=turn.text, tool_calls=calls)


def _citations(overrides: dict[str, Any], text: str) -> list[chat_pb2.Citation]:
    """`extensions.mock.citations`: true for a made-up one over the whole text, or Citation objects (proto JSON)."""
    value = overrides.get("citations")
    if value is None or value is False:
        return []
    if value is True:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return [
            chat_pb2.Citation(
                kind=chat_pb2.CITATION_KIND_URL,
                url=f"https://mock.invalid/sources/{digest}",
                title=f"Mock source {digest}",
                cited_text=text,
                start_index=0,
                end_index=len(text),
            )
        ]
    if not isinstance(value, list):
        raise invalid_argument("extensions.mock.citations", "must be true or a list of Citation objects")
    out = []
    for index, item in enumerate(value):
        try:
            out.append(json_format.ParseDict(item, chat_pb2.Citation()))
        except (json_format.ParseError, TypeError, AttributeError) as error:
            raise invalid_argument(f"extensions.mock.citations[{index}]", f"is not a Citation: {error}") from None
    return out


def _refusal(overrides: dict[str, Any]) -> str:
    value = overrides.get("refusal", "")
    if not isinstance(value, str):
        raise invalid_argument("extensions.mock.refusal", "must be the refusal text")
    return value


def _embedding_length(model: MockModel, request: pb.ProviderServiceEmbedRequest) -> int:
    if not model.dimensions:
        raise MeshError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"mock model {model.name!r} is not an embedding model (it has no `dimensions`)",
            reason=REASON_EMBEDDINGS_UNSUPPORTED,
        )
    if not request.HasField("dimensions"):
        return model.dimensions
    if request.dimensions > model.dimensions:
        raise invalid_argument(
            "dimensions", f"{request.dimensions} is above {model.name}'s {model.dimensions}; ask for fewer or omit it"
        )
    return request.dimensions


def _vector(model: MockModel, text: str, length: int) -> list[float]:
    """A unit vector seeded by a hash of (model, text); shortened vectors are the full one cut and renormalised."""
    seed = hashlib.sha256(f"{model.name}\0{text}".encode()).digest()
    values = random.Random(seed).choices(range(-1000, 1001), k=model.dimensions)[:length]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def _continued(turn: ScriptTurn, prefix: str) -> ScriptTurn:
    """With an assistant prefix, only what follows it (the mock can continue any prefix of its answer)."""
    if not prefix or not turn.text.startswith(prefix):
        return turn
    rest = turn.text[len(prefix) :]
    if not rest and not turn.tool_calls:
        rest = " "  # a turn needs text: the prefix was the whole answer
    return ScriptTurn(text=rest, tool_calls=turn.tool_calls)


def _response_extensions(overrides: dict[str, Any]) -> struct_pb2.Struct | None:
    extra = overrides.get("response_extensions")
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise invalid_argument("extensions.mock.response_extensions", "must be an object")
    extensions = struct_pb2.Struct()
    extensions.update({"mock": extra})
    return extensions


def _text_of(message: chat_pb2.Message) -> str:
    return " ".join(part.text for part in message.content if part.WhichOneof("kind") == "text")


def _last_user_text(request: Request) -> str:
    for message in reversed(request.messages):
        if message.role == chat_pb2.ROLE_USER:
            return _text_of(message)
    return ""


def _message_tokens(message: chat_pb2.Message) -> int:
    """A deterministic stand-in for a tokenizer: words plus 4 per message."""
    return (
        4
        + len(_text_of(message).split())
        + len(message.tool_result.content.split())
        + sum(len(part.text.split()) for part in message.tool_result.parts)
        + sum(len(call.arguments_json.split()) for call in message.tool_calls)
    )


def _count_input_tokens(request: Request) -> int:
    return sum(_message_tokens(message) for message in request.messages)


def _cached_prefix_tokens(request: Request) -> int:
    """The tokens of the messages up to the last breakpoint (or all but the last, with a cache key alone)."""
    marked = [
        index
        for index, message in enumerate(request.messages)
        if any(part.HasField("cache_control") for part in [*message.content, *message.tool_result.parts])
    ]
    if marked:
        end = marked[-1] + 1
    elif request.settings.prompt_cache.key:
        end = len(request.messages) - 1
    else:
        return 0
    return sum(_message_tokens(message) for message in request.messages[:end])


def _usage(request: Request, turn: ScriptTurn, thought: chat_pb2.ReasoningPart | None = None) -> chat_pb2.Usage:
    output = len(turn.text.split()) + sum(4 + len(call.arguments) for call in turn.tool_calls)
    thinking = reasoning.tokens(thought)
    usage = chat_pb2.Usage(
        input_tokens=_count_input_tokens(request), output_tokens=max(output, 1) + thinking, reasoning_tokens=thinking
    )
    cached = _cached_prefix_tokens(request)
    if _assistant_turns(request):
        usage.cached_input_tokens = cached
    else:
        usage.cache_write_input_tokens = cached
    return usage


def _assistant_turns(request: Request) -> int:
    return sum(1 for message in request.messages if message.role == chat_pb2.ROLE_ASSISTANT)


def _call_id(request: Request, index: int) -> str:
    return f"call_{_assistant_turns(request)}_{index}"


def _play_script(scripts: list[Script], request: Request) -> ScriptTurn:
    question = next((_text_of(m) for m in request.messages if m.role == chat_pb2.ROLE_USER), "")
    script = next((s for s in scripts if s.match.lower() in question.lower()), None)
    if script is None:
        return ScriptTurn(text=f"[mock] no script matches: {question}")
    turn = script.turns[min(_assistant_turns(request), len(script.turns) - 1)]
    if not turn.text:
        return turn
    results = []
    for message in reversed(request.messages):
        if message.role == chat_pb2.ROLE_ASSISTANT:
            break
        if message.role == chat_pb2.ROLE_TOOL:
            results.append(
                f"{message.tool_result.name or message.tool_result.tool_call_id} = {message.tool_result.content}"
            )
    text = turn.text.replace("{tool_results}", "; ".join(reversed(results))).replace("{question}", question)
    return ScriptTurn(text=text, tool_calls=turn.tool_calls)


def _deltas(turn: ScriptTurn, request: Request) -> list[chat_pb2.ChatDelta]:
    """Splits a turn into word-sized text deltas and two-piece tool call deltas."""
    deltas = [chat_pb2.ChatDelta(text=word) for word in _split_keeping_spaces(turn.text)]
    for index, call in enumerate(turn.tool_calls):
        arguments = json.dumps(call.arguments)
        middle = len(arguments) // 2
        deltas.append(
            chat_pb2.ChatDelta(
                tool_calls=[
                    chat_pb2.ToolCallDelta(
                        index=index,
                        id=_call_id(request, index),
                        name=call.name,
                        arguments_json_delta=arguments[:middle],
                    )
                ]
            )
        )
        deltas.append(
            chat_pb2.ChatDelta(
                tool_calls=[chat_pb2.ToolCallDelta(index=index, arguments_json_delta=arguments[middle:])]
            )
        )
    return deltas


def _split_keeping_spaces(text: str) -> list[str]:
    words = text.split(" ")
    return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words) if word or i < len(words) - 1]

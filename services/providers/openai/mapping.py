"""Unified chat request ⇄ OpenAI Chat Completions, both ways.

Request side: `request_body` builds the JSON body of `POST /chat/completions`
(plain JSON-able dicts, the wire shape: the adapter sends it through the SDK's
low-level `post`, so the SDK's typed transform never walks it).
Response side: `response_from_completion`, `usage_from`, `finish_reason_from`
and `StreamState` turn the decoded JSON (plain dicts, not the SDK's pydantic
models) back into llmmesh protos. A missing key reads as None, as the SDK's
lax models read it; a value of the wrong type fails in the mapping, inside
`reading_body`.

Extensions (all under the key "openai"):

* `request.extensions["openai"]` — request options outside the shared
  contract, allowlisted in `REQUEST_OPTIONS` (anything else is refused with
  INVALID_ARGUMENT naming `extensions.openai.<key>`), plus `json_schema_strict`
  (bool, sets `response_format.json_schema.strict`) and `extra_body` (object
  merged into the JSON body for OpenAI-compatible servers, e.g. vLLM's
  `top_k`; it may not override a field this module maps).
* `Message.extensions["openai"]` on an assistant message — round-tripped
  fields: `audio` ({"id": ...}); returned on answers together with
  `annotations` of types other than `url_citation` (response-only; URL
  citations are mapped to `Message.citations`, streams: `ChatDelta.citations`). `refusal` there is still read
  on input (older callers echo it), but answers carry a refusal in the shared
  `Message.refusal` (streams: `ChatDelta.refusal`) with
  FINISH_REASON_REFUSAL, and it goes back upstream as `refusal`.
* `ProviderServiceChatResponse.extensions["openai"]` / `ProviderStreamFinal`
  — `system_fingerprint`, `service_tier` and `finish_reason` (the raw value,
  when it maps to FINISH_REASON_OTHER).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common import logprobs
from services.common.errors import invalid_argument, unsupported_feature
from services.common.extensions import OPENAI_ADAPTER_OPTIONS, OPENAI_REQUEST_OPTIONS
from services.common.reasoning import effort_name, reasoning_of
from services.common.validation import audio_format

PROVIDER = "openai"

#: Request options a caller may set in `extensions["openai"]`, passed as-is (one list with the router's check).
REQUEST_OPTIONS = OPENAI_REQUEST_OPTIONS
_ADAPTER_OPTIONS = OPENAI_ADAPTER_OPTIONS
_MESSAGE_ROUND_TRIP = ("refusal", "audio")

MaxTokensField = Literal["max_completion_tokens", "max_tokens"]
Request: TypeAlias = pb.ProviderServiceChatRequest | pb.ProviderServiceStreamChatRequest

_ROLE_NAMES = {
    chat_pb2.ROLE_SYSTEM: "system",
    chat_pb2.ROLE_USER: "user",
    chat_pb2.ROLE_ASSISTANT: "assistant",
    chat_pb2.ROLE_TOOL: "tool",
}
_FINISH_REASONS = {
    "stop": chat_pb2.FINISH_REASON_STOP,
    "length": chat_pb2.FINISH_REASON_LENGTH,
    "tool_calls": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "content_filter": chat_pb2.FINISH_REASON_CONTENT_FILTER,
}
_IMAGE_DETAILS = {
    chat_pb2.IMAGE_DETAIL_AUTO: "auto",
    chat_pb2.IMAGE_DETAIL_LOW: "low",
    chat_pb2.IMAGE_DETAIL_HIGH: "high",
}
_TOOL_CHOICES = {
    chat_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    chat_pb2.TOOL_CHOICE_MODE_NONE: "none",
    chat_pb2.TOOL_CHOICE_MODE_REQUIRED: "required",
}


# ---------------------------------------------------------------- request side


def request_body(
    request: Request, *, stream: bool, max_tokens_field: MaxTokensField, stream_usage: bool
) -> dict[str, Any]:
    """The JSON body of `POST /chat/completions`, `extra_body` merged in as the SDK merges it."""
    if request.assistant_prefix:
        # A trailing assistant message is history to Chat Completions: the answer would start over.
        raise unsupported_feature("assistant_prefix", "OpenAI Chat Completions cannot continue an assistant prefix")
    options = _request_options(request)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [_message(f"messages[{i}]", message) for i, message in enumerate(request.messages)],
    }
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
        body.update(_parallel_tool_calls(request, options))
    if request.HasField("settings"):
        body.update(_settings(request.settings, max_tokens_field, strict=options.pop("json_schema_strict", None)))
    body.update(_reasoning(request))
    body.update(_prompt_cache(request.settings.prompt_cache, options))
    extra_body = options.pop("extra_body", None)
    body.update(_caller(request.caller, options))
    body.update(options)
    if stream:
        body["stream"] = True
        if stream_usage:
            # Without it the stream carries no usage at all.
            body["stream_options"] = {"include_usage": True}
    if extra_body:
        clashes = sorted(set(extra_body) & (set(body) | {"stream", "stream_options", "n"}))
        if clashes:
            raise invalid_argument(
                f"extensions.openai.extra_body.{clashes[0]}", "is set by the adapter; use the shared field instead"
            )
        body.update(extra_body)
    return body


def _prompt_cache(prompt_cache: chat_pb2.PromptCache, options: dict[str, Any]) -> dict[str, Any]:
    """settings.prompt_cache.key → `prompt_cache_key`; an explicit cache (Gemini's) is one OpenAI lacks.

    Breakpoints (`cache_control` on parts and tools) have no OpenAI field:
    OpenAI caches prompt prefixes on its own, so they are served as a no-op.
    """
    if prompt_cache.cached_content:
        raise unsupported_feature(
            "settings.prompt_cache.cached_content", "OpenAI has no explicit caches (Gemini's cachedContents)"
        )
    if not prompt_cache.key:
        return {}
    if options.get("prompt_cache_key", prompt_cache.key) != prompt_cache.key:
        raise invalid_argument(
            "extensions.openai.prompt_cache_key", "contradicts settings.prompt_cache.key; set only the shared field"
        )
    return {"prompt_cache_key": prompt_cache.key}


def _caller(caller: chat_pb2.CallerContext, options: dict[str, Any]) -> dict[str, Any]:
    """The end user as `safety_identifier` (OpenAI's successor to `user`); labels as `metadata`, which
    OpenAI takes only for a stored completion. Options the caller set in extensions.openai win."""
    out: dict[str, Any] = {}
    if caller.user and "safety_identifier" not in options and "user" not in options:
        out["safety_identifier"] = caller.user
    if caller.labels and options.get("store") is True and "metadata" not in options:
        out["metadata"] = dict(sorted(caller.labels.items()))
    return out


def _request_options(request: Request) -> dict[str, Any]:
    if PROVIDER not in request.extensions.fields:
        return {}
    value = request.extensions.fields[PROVIDER]
    if value.WhichOneof("kind") != "struct_value":
        raise invalid_argument("extensions.openai", "must be an object of OpenAI request options")
    options = struct_to_dict(value.struct_value)
    for key in options:
        if key not in REQUEST_OPTIONS and key not in _ADAPTER_OPTIONS:
            raise invalid_argument(
                f"extensions.openai.{key}",
                f"is not an accepted OpenAI option; accepted: {', '.join(sorted(REQUEST_OPTIONS | _ADAPTER_OPTIONS))}",
            )
    if "extra_body" in options and not isinstance(options["extra_body"], dict):
        raise invalid_argument("extensions.openai.extra_body", "must be an object")
    if "json_schema_strict" in options and not isinstance(options["json_schema_strict"], bool):
        raise invalid_argument("extensions.openai.json_schema_strict", "must be true or false")
    return options


def _message(path: str, message: chat_pb2.Message) -> dict[str, Any]:
    role = _ROLE_NAMES[message.role]
    if message.role == chat_pb2.ROLE_TOOL:
        result = message.tool_result
        # Chat Completions has no error flag on tool results: say it in the text.
        content = f"[tool error] {result.content}" if result.is_error else result.content
        if not result.parts:
            return {"role": "tool", "tool_call_id": result.tool_call_id, "content": content}
        return {"role": "tool", "tool_call_id": result.tool_call_id, "content": _tool_parts(path, result, content)}
    out: dict[str, Any] = {"role": role}
    user = message.role == chat_pb2.ROLE_USER
    content = _user_content(path, message) if user else _text_only_content(path, message, role)
    if content is not None:
        out["content"] = content
    if message.name:
        out["name"] = message.name
    if message.role == chat_pb2.ROLE_ASSISTANT:
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
                }
                for call in message.tool_calls
            ]
        extras = _message_round_trip(message)
        if message.refusal:
            extras["refusal"] = message.refusal
        if extras.get("refusal") and out.get("content") == extras["refusal"]:
            del out["content"]  # older answers showed the refusal as text too: it goes back as a refusal only
        out.update(extras)
    return out


def _user_content(path: str, message: chat_pb2.Message) -> str | list[dict[str, Any]]:
    parts = list(message.content)
    if len(parts) == 1 and parts[0].WhichOneof("kind") == "text":
        # A plain string is what every OpenAI-compatible server understands.
        return parts[0].text
    out: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        kind = part.WhichOneof("kind")
        if kind == "text":
            out.append({"type": "text", "text": part.text})
        elif kind == "image":
            out.append({"type": "image_url", "image_url": _image(part.image)})
        elif kind == "document":
            out.append({"type": "file", "file": _file(f"{path}.content[{index}].document", part.document)})
        elif kind == "audio":
            audio = part.audio
            data = base64.b64encode(audio.data).decode("ascii")
            out.append({"type": "input_audio", "input_audio": {"data": data, "format": audio_format(audio)}})
    return out


def _tool_parts(path: str, result: chat_pb2.ToolResult, content: str) -> list[dict[str, Any]]:
    """A multi-part tool result as the tool message's text parts (the only kind Chat Completions takes there)."""
    out = [{"type": "text", "text": content}] if content else []
    for index, part in enumerate(result.parts):
        if part.WhichOneof("kind") != "text":
            raise unsupported_feature(
                f"{path}.tool_result.parts[{index}].{part.WhichOneof('kind')}",
                "OpenAI Chat Completions takes only text in tool results",
            )
        out.append({"type": "text", "text": part.text})
    return out


def _image(image: chat_pb2.ImagePart) -> dict[str, Any]:
    out: dict[str, Any] = {"url": _image_url(image)}
    detail = _IMAGE_DETAILS.get(image.detail)
    if detail is not None:
        out["detail"] = detail
    return out


def _file(path: str, document: chat_pb2.DocumentPart) -> dict[str, Any]:
    """A document as a `file` part: its bytes as a data URL, or the id of a file uploaded to OpenAI."""
    source = document.WhichOneof("source")
    if document.enable_citations:
        raise unsupported_feature(f"{path}.enable_citations", "OpenAI Chat Completions does not cite documents")
    if source == "url":
        raise unsupported_feature(
            f"{path}.url", "OpenAI Chat Completions takes documents as bytes or a file id, not a URL"
        )
    out: dict[str, Any] = {}
    if source == "file_id":
        out["file_id"] = document.file_id
    else:
        if document.mime_type != "application/pdf":
            raise unsupported_feature(f"{path}.mime_type", "OpenAI Chat Completions takes PDF files only")
        encoded = base64.b64encode(document.data).decode("ascii")
        out["file_data"] = f"data:{document.mime_type};base64,{encoded}"
    if document.filename or source == "data":
        # OpenAI answers 400 to file_data without a filename.
        out["filename"] = document.filename or "document.pdf"
    return out


def _image_url(image: chat_pb2.ImagePart) -> str:
    if image.WhichOneof("source") == "url":
        return image.url
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def _text_only_content(path: str, message: chat_pb2.Message, role: str) -> str | None:
    texts: list[str] = []
    for index, part in enumerate(message.content):
        if part.WhichOneof("kind") == "reasoning":
            # Chat Completions takes no reasoning back (nor do the compatible servers that send
            # `reasoning_content`): dropped, as every adapter drops parts it cannot replay.
            continue
        if part.WhichOneof("kind") != "text":
            raise unsupported_feature(
                f"{path}.content[{index}].{part.WhichOneof('kind')}",
                f"OpenAI Chat Completions takes images only in user messages, not in {role} messages",
            )
        texts.append(part.text)
    if not texts:
        return None
    return "".join(texts) if role == "assistant" else "\n".join(texts)


def _message_round_trip(message: chat_pb2.Message) -> dict[str, Any]:
    if PROVIDER not in message.extensions.fields:
        return {}
    extras = struct_to_dict(message.extensions.fields[PROVIDER].struct_value)
    out: dict[str, Any] = {}
    for key in _MESSAGE_ROUND_TRIP:
        if key in extras and extras[key] is not None:
            out[key] = extras[key]
    return out


def _reasoning(request: Request) -> dict[str, Any]:
    """Shared reasoning settings → `reasoning_effort`, the one reasoning knob of Chat Completions."""
    reasoning = reasoning_of(request)
    if reasoning is None:
        return {}
    effort = effort_name(reasoning)
    if effort is None:
        if reasoning.HasField("budget_tokens"):
            raise unsupported_feature(
                "settings.reasoning.budget_tokens",
                "OpenAI Chat Completions takes reasoning_effort, not a token budget; set settings.reasoning.effort",
            )
        return {}
    # budget_tokens next to an effort is a hint for budget-taking providers: the effort says it here.
    return {"reasoning_effort": effort}


def _tool(tool: chat_pb2.ToolDefinition) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = struct_to_dict(tool.parameters) if tool.parameters.fields else {"type": "object"}
    if tool.HasField("strict"):
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: chat_pb2.ToolChoice) -> str | dict[str, Any] | None:
    if choice.mode == chat_pb2.TOOL_CHOICE_MODE_NAMED:
        return {"type": "function", "function": {"name": choice.name}}
    if choice.allowed_tools:
        # ChatCompletionAllowedToolChoiceParam: the other tools stay defined (and cached) but uncallable.
        mode = "required" if choice.mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED else "auto"
        tools = [{"type": "function", "function": {"name": name}} for name in choice.allowed_tools]
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}
    return _TOOL_CHOICES.get(choice.mode)


def _parallel_tool_calls(request: Request, options: dict[str, Any]) -> dict[str, Any]:
    """tool_choice.parallel_tool_calls → `parallel_tool_calls` (OpenAI takes it only with tools)."""
    if not request.tool_choice.HasField("parallel_tool_calls"):
        return {}
    shared = request.tool_choice.parallel_tool_calls
    if options.get("parallel_tool_calls", shared) != shared:
        raise invalid_argument(
            "extensions.openai.parallel_tool_calls",
            "contradicts tool_choice.parallel_tool_calls; set only the shared field",
        )
    return {"parallel_tool_calls": shared}


def _settings(
    settings: chat_pb2.GenerationSettings, max_tokens_field: MaxTokensField, *, strict: bool | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if settings.HasField("temperature"):
        out["temperature"] = settings.temperature
    if settings.HasField("top_p"):
        out["top_p"] = settings.top_p
    if settings.HasField("max_output_tokens"):
        out[max_tokens_field] = settings.max_output_tokens
    if settings.stop:
        out["stop"] = list(settings.stop)
    if settings.HasField("seed"):
        out["seed"] = settings.seed
    if settings.logprobs:
        out["logprobs"] = True
        if settings.HasField("top_logprobs"):
            out["top_logprobs"] = settings.top_logprobs
    response_format = settings.response_format
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_TEXT:
        out["response_format"] = {"type": "text"}
    elif response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        out["response_format"] = {"type": "json_object"}
    elif response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema: dict[str, Any] = {
            "name": response_format.schema_name or "response",
            "schema": struct_to_dict(response_format.json_schema),
        }
        # The shared field wins over the older extensions.openai.json_schema_strict.
        if response_format.HasField("strict"):
            strict = response_format.strict
        if strict is not None:
            schema["strict"] = strict
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    return out


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Struct → dict, with whole floats back to ints (Struct stores every number as a double)."""
    return _integral(json_format.MessageToDict(struct))  # type: ignore[no-any-return]


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({PROVIDER: dict(values)})
    return struct


# --------------------------------------------------------------- response side


def finish_reason_from(raw: str | None, *, refused: bool = False) -> chat_pb2.FinishReason.ValueType:
    """OpenAI finish reason → enum; None stays UNSPECIFIED, unknown values are OTHER.

    A refusal comes with finish reason "stop", but the model declined to
    answer: FINISH_REASON_REFUSAL, with the text in `Message.refusal`.
    """
    if raw is None:
        return chat_pb2.FINISH_REASON_UNSPECIFIED
    if refused and raw == "stop":
        return chat_pb2.FINISH_REASON_REFUSAL
    return _FINISH_REASONS.get(raw, chat_pb2.FINISH_REASON_OTHER)


def usage_from(usage: Mapping[str, Any] | None) -> chat_pb2.Usage:
    if usage is None:
        return chat_pb2.Usage()
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return chat_pb2.Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        cached_input_tokens=(prompt_details.get("cached_tokens") or 0) if prompt_details else 0,
        reasoning_tokens=(completion_details.get("reasoning_tokens") or 0) if completion_details else 0,
        cache_write_input_tokens=(prompt_details.get("cache_write_tokens") or 0) if prompt_details else 0,
    )


def response_extensions(
    *, system_fingerprint: str | None, service_tier: str | None, raw_finish_reason: str | None
) -> struct_pb2.Struct | None:
    values: dict[str, Any] = {}
    if system_fingerprint:
        values["system_fingerprint"] = system_fingerprint
    if service_tier:
        values["service_tier"] = service_tier
    if raw_finish_reason and raw_finish_reason not in _FINISH_REASONS:
        values["finish_reason"] = raw_finish_reason
    return _struct(values) if values else None


def response_from_completion(completion: Mapping[str, Any]) -> pb.ProviderServiceChatResponse:
    """A complete answer (the decoded JSON body); the caller checked that `choices` is not empty."""
    choice = completion["choices"][0]
    message = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT)
    answer = choice.get("message")
    content, refusal = answer.get("content"), answer.get("refusal")
    reasoning_text = _reasoning_content(answer)
    if reasoning_text:
        message.content.add(reasoning=chat_pb2.ReasoningPart(text=reasoning_text, provider=PROVIDER))
    if content:
        message.content.add(text=content)
    message.refusal = refusal or ""
    message.logprobs.extend(_logprobs(choice))
    for call in answer.get("tool_calls") or []:
        function = call.get("function")
        if function is None:  # custom (free-form) tools are never sent, so never expected back
            continue
        message.tool_calls.add(
            id=call.get("id"), name=function.get("name"), arguments_json=function.get("arguments") or ""
        )
    extras: dict[str, Any] = {}
    audio = answer.get("audio")
    if audio is not None:
        extras["audio"] = {"id": audio.get("id")}
    cited, others = citations_from(answer.get("annotations"))
    message.citations.extend(cited)
    if others:
        extras["annotations"] = others
    if extras:
        message.extensions.CopyFrom(_struct(extras))
    finish_reason = choice.get("finish_reason")
    response = pb.ProviderServiceChatResponse(
        message=message,
        finish_reason=finish_reason_from(finish_reason, refused=bool(refusal)),
        usage=usage_from(completion.get("usage")),
        response_model=completion.get("model") or "",
        response_id=completion.get("id") or "",
    )
    extensions = response_extensions(
        system_fingerprint=completion.get("system_fingerprint"),
        service_tier=completion.get("service_tier"),
        raw_finish_reason=finish_reason,
    )
    if extensions is not None:
        response.extensions.CopyFrom(extensions)
    return response


def _logprobs(choice: Any) -> list[chat_pb2.TokenLogprob]:
    """The content tokens' log probabilities of a choice or a chunk's choice (refusal tokens' are left out)."""
    found = choice.get("logprobs")
    return logprobs.from_openai(found.get("content") or []) if found is not None else []


def citations_from(annotations: Any) -> tuple[list[chat_pb2.Citation], list[Any]]:
    """A message's (or a delta's) `annotations`: `url_citation` ones as Citations, and the others as they came.

    OpenAI's start_index / end_index count characters of the message's content, as the shared contract does.
    """
    cited: list[chat_pb2.Citation] = []
    others: list[Any] = []
    for annotation in annotations or []:
        if annotation.get("type") != "url_citation":
            others.append(annotation)
            continue
        found = annotation.get("url_citation") or {}
        citation = chat_pb2.Citation(
            kind=chat_pb2.CITATION_KIND_URL, url=found.get("url") or "", title=found.get("title") or ""
        )
        if found.get("start_index") is not None:
            citation.start_index = found["start_index"]
        if found.get("end_index") is not None:
            citation.end_index = found["end_index"]
        cited.append(citation)
    return cited, others


def _reasoning_content(body: Mapping[str, Any]) -> str:
    """`reasoning_content`: not OpenAI's (its Chat Completions returns no reasoning), but what
    OpenAI-compatible reasoning servers (vLLM, DeepSeek, llama.cpp) add to the message and delta."""
    value = body.get("reasoning_content")
    return value if isinstance(value, str) else ""


class StreamState:
    """What a stream has said so far, to build deltas and the final message."""

    def __init__(self) -> None:
        self.raw_finish_reason: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self.model = ""
        self.response_id = ""
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None
        self.refused = False
        self._started_calls: set[int] = set()

    def delta_into(self, chunk: Any, delta: chat_pb2.ChatDelta) -> bool:
        """Records the chunk's metadata (the decoded JSON of one event) and fills `delta` (the outgoing
        message's own field: no copy); False when the chunk carries nothing to send."""
        self.model = chunk.get("model") or self.model
        self.response_id = chunk.get("id") or self.response_id
        self.system_fingerprint = chunk.get("system_fingerprint") or self.system_fingerprint
        self.service_tier = chunk.get("service_tier") or self.service_tier
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return False
        choice = choices[0]
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            self.raw_finish_reason = finish_reason
        # Some compatible servers send a bare finish chunk without a delta.
        sent = choice.get("delta")
        if sent is None:
            return False
        text = sent.get("content") or ""
        if text:
            delta.text = text
        delta.logprobs.extend(_logprobs(choice))
        reasoning_text = _reasoning_content(sent)
        if reasoning_text:
            delta.reasoning.index = 0
            delta.reasoning.text = reasoning_text
            delta.reasoning.provider = PROVIDER
        refusal = sent.get("refusal")
        if refusal:
            self.refused = True
            delta.refusal = refusal
        for call in sent.get("tool_calls") or []:
            self._tool_call(call, delta)
        # Search models send `annotations` on a delta (the SDK's ChoiceDelta keeps them as an extra field).
        delta.citations.extend(citations_from(sent.get("annotations"))[0])
        return bool(text or refusal or delta.tool_calls or delta.logprobs or reasoning_text or delta.citations)

    def _tool_call(self, call: Any, delta: chat_pb2.ChatDelta) -> None:
        index = call.get("index")
        out = delta.tool_calls.add(index=index)
        function = call.get("function")
        if index not in self._started_calls:
            # id and name travel on the first delta of each call only.
            self._started_calls.add(index)
            out.id = call.get("id") or ""
            out.name = (function.get("name") if function else None) or ""
        out.arguments_json_delta = (function.get("arguments") if function else None) or ""

    def final(self, headroom: chat_pb2.RateLimitHeadroom) -> pb.ProviderStreamFinal:
        final = pb.ProviderStreamFinal(
            finish_reason=finish_reason_from(self.raw_finish_reason, refused=self.refused),
            usage=usage_from(self.usage),
            response_model=self.model,
            response_id=self.response_id,
            headroom=headroom,
        )
        values: dict[str, Any] = {}
        extensions = response_extensions(
            system_fingerprint=self.system_fingerprint,
            service_tier=self.service_tier,
            raw_finish_reason=self.raw_finish_reason,
        )
        if extensions is not None:
            values.update(json_format.MessageToDict(extensions)[PROVIDER])
        if values:
            final.extensions.CopyFrom(_struct(values))
        return final

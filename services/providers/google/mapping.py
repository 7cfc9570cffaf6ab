"""Unified chat request ⇄ google-genai types, both ways.

Request side: `build_request` turns a ProviderService request into the
`contents` and `GenerateContentConfig` that `client.aio.models.generate_content`
takes. Response side: `ResponseReader` folds one response (or every chunk of a
stream) into the unified message, finish reason and usage.

Provider-only data under the key "google" of the `extensions` Struct fields:

- `ToolCall.extensions["google"]` (and `ToolCallDelta.extensions` on the first
  delta of a call):
  - `thought_signature`: base64 of the call's thought signature; send it back
    unchanged on the next turn or Gemini 3 rejects the conversation.
  - `upstream_id`: true when Gemini itself named the call id. Gemini may send
    no id: the adapter then makes a stable one (`call_<turn>_<index>`) and
    never sends it back upstream.
- `Message.extensions["google"].thought_signature` (assistant messages): the
  older form of the text signature, still read on input when the message
  carries no reasoning parts of this provider; no longer returned.
- `ProviderServiceChatResponse.extensions["google"]` / `ProviderStreamFinal`:
  `finish_reason` (Gemini's raw value), `finish_message` when Gemini gave one.

Reasoning (ReasoningPart / ReasoningDelta, provider "google"):

- thought parts (`thought: true`, with `include_thoughts`) become reasoning
  parts with their text (consecutive thought parts join into one part) and
  their signature when Gemini put one on them;
- a signature on a non-thought part (answer text or a function call) becomes
  a reasoning part with only `signature`, in the order it came. A function
  call's signature is also in its `ToolCall.extensions["google"]`, which pins
  it to that call; the signature-only part is what crosses the HTTP door.
- On the way back, thought parts return as thought parts; signature-only
  parts are put where Gemini documents them: the last one on the first
  function call of the turn (when that call has no signature of its own),
  the one before it on the last text part.
- A Gemini 3 model rejects a model turn whose first function call has no
  signature (a history from another provider, or calls the caller wrote):
  such a call gets the dummy signature Google documents for that case,
  `skip_thought_signature_validator` (ai.google.dev/gemini-api/docs/thought-signatures, FAQ).

Request options from `request.extensions["google"]` (allowlist, anything else
is INVALID_ARGUMENT): `top_k`, `presence_penalty`, `frequency_penalty`,
`thinking_config` (thinking_budget, thinking_level, include_thoughts),
`safety_settings` (list of {category, threshold}), `cached_content`,
`response_schema` (Gemini's OpenAPI-subset schema, instead of a JSON Schema).

Prompt caching: `settings.prompt_cache.cached_content` (a `cachedContents/...`
name from Gemini's caches API) goes to `cached_content`; breakpoints
(`cache_control` on parts and tools) and `settings.prompt_cache.key` have no
Gemini field, as Gemini caches prompt prefixes on its own: served as no-ops.
`cached_content_token_count` comes back as `Usage.cached_input_tokens`;
Gemini reports no cache writes.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pydantic
from google.genai import types
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.citations import Seen as CitationsSeen
from services.common.errors import invalid_argument, unsupported_feature
from services.common.extensions import GOOGLE_REQUEST_OPTIONS
from services.common.reasoning import effort_name
from services.common.validation import audio_mime_type
from services.providers.google import citations as google_citations

PROVIDER = "google"
Request: TypeAlias = pb.ProviderServiceChatRequest | pb.ProviderServiceStreamChatRequest

#: request.extensions["google"] keys passed through to GenerateContentConfig.
ALLOWED_REQUEST_OPTIONS = GOOGLE_REQUEST_OPTIONS

_INT32_MAX = 2**31 - 1
#: Google's documented stand-in for a missing signature (bytes whose URL-safe base64 is the literal).
DUMMY_SIGNATURE = base64.urlsafe_b64decode("skip_thought_signature_validator")
#: Model-name marker of the Gemini versions that reject function calls without a signature.
_SIGNATURE_REQUIRED_MARKER = "gemini-3"
_MEDIA_RESOLUTIONS = {
    chat_pb2.IMAGE_DETAIL_LOW: types.PartMediaResolutionLevel.MEDIA_RESOLUTION_LOW,
    chat_pb2.IMAGE_DETAIL_HIGH: types.PartMediaResolutionLevel.MEDIA_RESOLUTION_HIGH,
}
_TOOL_CHOICE = {
    chat_pb2.TOOL_CHOICE_MODE_AUTO: types.FunctionCallingConfigMode.AUTO,
    chat_pb2.TOOL_CHOICE_MODE_NONE: types.FunctionCallingConfigMode.NONE,
    chat_pb2.TOOL_CHOICE_MODE_REQUIRED: types.FunctionCallingConfigMode.ANY,
    chat_pb2.TOOL_CHOICE_MODE_NAMED: types.FunctionCallingConfigMode.ANY,
}
_CONTENT_FILTER = frozenset(
    {
        types.FinishReason.SAFETY,
        types.FinishReason.RECITATION,
        types.FinishReason.BLOCKLIST,
        types.FinishReason.PROHIBITED_CONTENT,
        types.FinishReason.SPII,
        types.FinishReason.IMAGE_SAFETY,
        types.FinishReason.IMAGE_PROHIBITED_CONTENT,
        types.FinishReason.IMAGE_RECITATION,
        types.FinishReason.MODEL_ARMOR,
    }
)


# ---------------------------------------------------------------- request side


@dataclass
class GeminiRequest:
    """What generate_content(_stream) takes, minus the per-call HTTP options."""

    model: str
    contents: list[types.Content]
    config: types.GenerateContentConfig


def build_request(request: Request) -> GeminiRequest:
    """Maps a validated ProviderService request; raises INVALID_ARGUMENT naming the field it cannot map."""
    if request.assistant_prefix:
        # A trailing model turn is not a prefill to Gemini: it would start the answer over.
        raise unsupported_feature("assistant_prefix", "Gemini cannot continue an assistant prefix")
    system_parts: list[types.Part] = []
    contents: list[types.Content] = []
    calls_by_id = _tool_calls_by_id(request)
    for index, message in enumerate(request.messages):
        path = f"messages[{index}]"
        if message.role == chat_pb2.ROLE_SYSTEM:
            system_parts.extend(_system_parts(path, message))
        elif message.role == chat_pb2.ROLE_USER:
            contents.append(types.Content(role="user", parts=_content_parts(path, message)))
        elif message.role == chat_pb2.ROLE_ASSISTANT:
            parts = _assistant_parts(path, message, signatures_required=_SIGNATURE_REQUIRED_MARKER in request.model)
            if message.refusal:  # Gemini has no refusal part: what the assistant said, as text
                parts.append(types.Part(text=message.refusal))
            contents.append(types.Content(role="model", parts=parts))
        else:
            part = _function_response_part(path, message.tool_result, calls_by_id)
            # Parallel results go back in one turn, as Gemini asked for them in one.
            previous = request.messages[index - 1] if index else None
            if previous is not None and previous.role == chat_pb2.ROLE_TOOL and contents:
                (contents[-1].parts or []).append(part)
            else:
                contents.append(types.Content(role="user", parts=[part]))
    if not contents:
        raise invalid_argument("messages", "has only system messages; Gemini needs at least one user message")
    config = _config(request, system_parts)
    return GeminiRequest(model=request.model, contents=contents, config=config)


def _tool_calls_by_id(request: Request) -> dict[str, chat_pb2.ToolCall]:
    return {call.id: call for message in request.messages for call in message.tool_calls if call.id}


def _text_only(path: str, message: chat_pb2.Message) -> list[types.Part]:
    parts = []
    for index, part in enumerate(message.content):
        if part.WhichOneof("kind") == "reasoning":
            # Gemini's own come back as thought parts and signatures (`_assistant_parts`); another
            # provider's reasoning parts carry signatures Gemini rejects, so they are left out.
            continue
        if part.WhichOneof("kind") != "text":
            raise unsupported_feature(
                f"{path}.content[{index}]", "Gemini takes only text here; move images to a user message"
            )
        parts.append(types.Part(text=part.text))
    return parts


def _system_parts(path: str, message: chat_pb2.Message) -> list[types.Part]:
    return _text_only(path, message)


def _content_parts(path: str, message: chat_pb2.Message) -> list[types.Part]:
    parts = []
    for index, part in enumerate(message.content):
        part_path = f"{path}.content[{index}]"
        kind = part.WhichOneof("kind")
        if kind == "text":
            parts.append(types.Part(text=part.text))
        elif kind == "image":
            parts.append(_image_part(f"{part_path}.image", part.image))
        elif kind == "document":
            parts.append(_document_part(f"{part_path}.document", part.document))
        elif kind == "audio":
            blob = types.Blob(data=part.audio.data, mime_type=audio_mime_type(part.audio))
            parts.append(types.Part(inline_data=blob))
    return parts


def _image_part(path: str, image: chat_pb2.ImagePart) -> types.Part:
    part = _image_source(path, image)
    level = _MEDIA_RESOLUTIONS.get(image.detail)
    if level is not None:
        # Gemini 3's per-part media resolution: the same trade of tokens against fidelity.
        part.media_resolution = types.PartMediaResolution(level=level)
    return part


def _image_source(path: str, image: chat_pb2.ImagePart) -> types.Part:
    if image.WhichOneof("source") == "data":
        return types.Part(inline_data=types.Blob(data=image.data, mime_type=image.mime_type))
    url = image.url
    if url.startswith("data:"):
        return types.Part(inline_data=_blob_from_data_url(f"{path}.url", url))
    if not url.startswith(("https://", "gs://")):
        raise unsupported_feature(
            f"{path}.url", "Gemini fetches only https:// (or gs://) URLs; send an https URL or the image bytes"
        )
    mime_type = image.mime_type or mimetypes.guess_type(url.split("?", 1)[0])[0] or ""
    if not mime_type.startswith("image/"):
        raise unsupported_feature(
            f"{path}.mime_type", "is required for an image URL Gemini cannot type from its name, e.g. 'image/png'"
        )
    return types.Part(file_data=types.FileData(file_uri=url, mime_type=mime_type))


def _document_part(path: str, document: chat_pb2.DocumentPart) -> types.Part:
    """Bytes as inline_data; a URL or an uploaded file's URI as file_data (the Gemini API takes no
    display name on either, so `filename` and `title` are not sent)."""
    source = document.WhichOneof("source")
    if document.enable_citations:
        raise unsupported_feature(f"{path}.enable_citations", "Gemini does not cite passages of a document")
    if source == "data":
        return types.Part(inline_data=types.Blob(data=document.data, mime_type=document.mime_type))
    uri = document.url if source == "url" else document.file_id
    if source == "url" and not uri.startswith("https://"):
        raise unsupported_feature(f"{path}.url", "Gemini fetches only https:// URLs; send the document's bytes")
    mime_type = document.mime_type or mimetypes.guess_type(uri.split("?", 1)[0])[0] or ""
    if not mime_type:
        raise unsupported_feature(
            f"{path}.mime_type", "is required for a document Gemini cannot type from its name, e.g. 'application/pdf'"
        )
    return types.Part(file_data=types.FileData(file_uri=uri, mime_type=mime_type))


def _blob_from_data_url(path: str, url: str) -> types.Blob:
    header, _, payload = url[len("data:") :].partition(",")
    mime_type, _, encoding = header.partition(";")
    if encoding != "base64" or not mime_type:
        raise invalid_argument(path, "must be a base64 data URL such as data:image/png;base64,...")
    try:
        return types.Blob(data=base64.b64decode(payload, validate=True), mime_type=mime_type)
    except (binascii.Error, ValueError):
        raise invalid_argument(path, "holds invalid base64") from None


def _assistant_parts(path: str, message: chat_pb2.Message, *, signatures_required: bool) -> list[types.Part]:
    thoughts, signatures = _own_reasoning(path, message)
    texts = _text_only(path, message)
    google = _google_extension(message.extensions)
    if google.get("thought_signature") and texts:
        texts[-1].thought_signature = _signature_bytes(
            f"{path}.extensions.google.thought_signature", google["thought_signature"]
        )
    calls = [_function_call_part(f"{path}.tool_calls[{index}]", call) for index, call in enumerate(message.tool_calls)]
    # A call's own signature is also a signature-only reasoning part: place each signature once.
    placed = {part.thought_signature for part in (*texts, *calls) if part.thought_signature}
    signatures = [signature for signature in signatures if signature not in placed]
    # Where Gemini documents its signatures: the first function call of a step, else the last part.
    if calls and calls[0].thought_signature is None and signatures:
        calls[0].thought_signature = signatures.pop()
    if texts and texts[-1].thought_signature is None and signatures:
        texts[-1].thought_signature = signatures.pop()
    if calls and calls[0].thought_signature is None and signatures_required:
        calls[0].thought_signature = DUMMY_SIGNATURE
    return [*thoughts, *texts, *calls]


def _own_reasoning(path: str, message: chat_pb2.Message) -> tuple[list[types.Part], list[bytes]]:
    """This provider's reasoning parts: thoughts (text) as thought parts, and the bare signatures in order."""
    thoughts: list[types.Part] = []
    signatures: list[bytes] = []
    for index, content in enumerate(message.content):
        if content.WhichOneof("kind") != "reasoning" or content.reasoning.provider != PROVIDER:
            continue
        part = content.reasoning
        signature_path = f"{path}.content[{index}].reasoning.signature"
        signature = _signature_bytes(signature_path, part.signature) if part.signature else None
        if part.text:
            thoughts.append(types.Part(text=part.text, thought=True, thought_signature=signature))
        elif signature is not None:
            signatures.append(signature)
    return thoughts, signatures


def _function_call_part(path: str, call: chat_pb2.ToolCall) -> types.Part:
    call_ext = _google_extension(call.extensions)
    function_call = types.FunctionCall(name=call.name, args=_arguments(f"{path}.arguments_json", call))
    if call_ext.get("upstream_id") and call.id:
        function_call.id = call.id
    part = types.Part(function_call=function_call)
    if call_ext.get("thought_signature"):
        part.thought_signature = _signature_bytes(
            f"{path}.extensions.google.thought_signature", call_ext["thought_signature"]
        )
    return part


def _arguments(path: str, call: chat_pb2.ToolCall) -> dict[str, Any]:
    if not call.arguments_json.strip():
        return {}
    try:
        arguments = json.loads(call.arguments_json)
    except json.JSONDecodeError as error:
        raise invalid_argument(path, f"is not valid JSON ({error.msg})") from None
    if not isinstance(arguments, dict):
        raise invalid_argument(path, "must be a JSON object")
    return arguments


def _signature_bytes(path: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise invalid_argument(path, "must be a base64 string, as the adapter returned it")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(path, "is not valid base64; send it back exactly as the adapter returned it") from None


def _function_response_part(
    path: str, result: chat_pb2.ToolResult, calls_by_id: dict[str, chat_pb2.ToolCall]
) -> types.Part:
    call = calls_by_id.get(result.tool_call_id)
    name = result.name or (call.name if call is not None else "")
    if not name:
        raise invalid_argument(
            f"{path}.tool_result.name",
            "is empty and no earlier ToolCall has this tool_call_id; Gemini matches results by tool name",
        )
    texts = [result.content] if result.content else []
    media: list[types.FunctionResponsePart] = []
    for index, part in enumerate(result.parts):
        if part.WhichOneof("kind") == "text":
            texts.append(part.text)
        else:
            media.append(_function_response_media(f"{path}.tool_result.parts[{index}].image", part.image))
    output = _json_or_text(texts[0]) if len(texts) == 1 else "\n".join(texts)
    # Gemini wants an object: "output" for results, "error" for failures (its documented keys).
    response = {"error" if result.is_error else "output": output}
    function_response = types.FunctionResponse(name=name, response=response)
    if media:
        # Multimodal function responses (Gemini 3): images as the response's own parts.
        function_response.parts = media
    if call is not None and _google_extension(call.extensions).get("upstream_id"):
        function_response.id = result.tool_call_id
    return types.Part(function_response=function_response)


def _function_response_media(path: str, image: chat_pb2.ImagePart) -> types.FunctionResponsePart:
    if image.detail in (chat_pb2.IMAGE_DETAIL_LOW, chat_pb2.IMAGE_DETAIL_HIGH):
        raise unsupported_feature(f"{path}.detail", "Gemini takes no media resolution on function response parts")
    part = _image_source(path, image)
    if part.inline_data is not None:
        blob = part.inline_data
        return types.FunctionResponsePart(
            inline_data=types.FunctionResponseBlob(data=blob.data, mime_type=blob.mime_type)
        )
    file_data = part.file_data or types.FileData()  # _image_source returns inline_data or file_data
    return types.FunctionResponsePart(
        file_data=types.FunctionResponseFileData(file_uri=file_data.file_uri, mime_type=file_data.mime_type)
    )


def _json_or_text(content: str) -> Any:
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        return content


def _tool_mode(request: Request) -> types.FunctionCallingConfigMode | None:
    """The function-calling mode; a strict tool asks for VALIDATED (calls held to their schemas) where the
    choice is the model's. ANY (a call required) holds calls to their schemas already."""
    mode = _TOOL_CHOICE.get(request.tool_choice.mode)
    strict = any(tool.strict for tool in request.tools)
    # allowed_function_names applies with ANY or VALIDATED only: a model's choice among some tools is VALIDATED.
    limited = bool(request.tool_choice.allowed_tools)
    if (strict or limited) and mode in (None, types.FunctionCallingConfigMode.AUTO):
        return types.FunctionCallingConfigMode.VALIDATED
    return mode


def _allowed_function_names(request: Request) -> list[str] | None:
    choice = request.tool_choice
    if choice.mode == chat_pb2.TOOL_CHOICE_MODE_NAMED:
        return [choice.name]
    return list(choice.allowed_tools) or None


def _check_parallel_tool_calls(request: Request) -> None:
    choice = request.tool_choice
    if choice.HasField("parallel_tool_calls") and not choice.parallel_tool_calls:
        raise unsupported_feature(
            "tool_choice.parallel_tool_calls",
            "Gemini cannot turn off parallel function calls; leave it unset or true",
        )


def _config(request: Request, system_parts: list[types.Part]) -> types.GenerateContentConfig:
    kwargs: dict[str, Any] = {
        # Both would send extra requests behind the router's back.
        "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True),
        "automatic_continuation": False,
    }
    if system_parts:
        kwargs["system_instruction"] = types.Content(parts=system_parts)
    if request.tools:
        kwargs["tools"] = [
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=tool.name,
                        description=tool.description or None,
                        parameters_json_schema=json_format.MessageToDict(tool.parameters)
                        if tool.HasField("parameters")
                        else None,
                    )
                    for tool in request.tools
                ]
            )
        ]
        _check_parallel_tool_calls(request)
        mode = _tool_mode(request)
        if mode is not None:
            kwargs["tool_config"] = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(
                    mode=mode, allowed_function_names=_allowed_function_names(request)
                )
            )
    kwargs.update(_settings(request.settings))
    if request.caller.labels:
        # Gemini has no end-user field; labels attribute billing (extensions.google.labels wins).
        kwargs["labels"] = dict(sorted(request.caller.labels.items()))
    options = _request_options(request.extensions)
    cached_content = request.settings.prompt_cache.cached_content
    if cached_content:
        # An explicit cache made with the caches API. settings.prompt_cache.key and the breakpoints
        # (cache_control) have no Gemini field: Gemini caches prefixes on its own, so they are no-ops.
        if options.get("cached_content", cached_content) != cached_content:
            raise invalid_argument(
                "extensions.google.cached_content",
                "contradicts settings.prompt_cache.cached_content; set only the shared field",
            )
        kwargs["cached_content"] = cached_content
    kwargs.update(options)
    try:
        return types.GenerateContentConfig(**kwargs)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "google"
        raise invalid_argument(f"extensions.google.{key}", first["msg"]) from None


def _settings(settings: chat_pb2.GenerationSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if settings.HasField("temperature"):
        kwargs["temperature"] = settings.temperature
    if settings.HasField("top_p"):
        kwargs["top_p"] = settings.top_p
    if settings.HasField("max_output_tokens"):
        kwargs["max_output_tokens"] = settings.max_output_tokens
    if settings.stop:
        kwargs["stop_sequences"] = list(settings.stop)
    if settings.HasField("seed"):
        if not -_INT32_MAX - 1 <= settings.seed <= _INT32_MAX:
            raise unsupported_feature("settings.seed", "Gemini takes a 32-bit seed; use a value in -2^31..2^31-1")
        kwargs["seed"] = settings.seed
    if settings.HasField("reasoning"):
        kwargs["thinking_config"] = _thinking_config(settings.reasoning)
    if settings.logprobs:
        kwargs["response_logprobs"] = True
        if settings.HasField("top_logprobs"):
            kwargs["logprobs"] = settings.top_logprobs
    response_format = settings.response_format
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        kwargs["response_mime_type"] = "application/json"
    elif response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        kwargs["response_mime_type"] = "application/json"
        kwargs["response_json_schema"] = json_format.MessageToDict(response_format.json_schema)
    return kwargs


def _thinking_config(reasoning: chat_pb2.ReasoningSettings) -> types.ThinkingConfig:
    """Shared reasoning settings → Gemini's thinking_config (extensions.google.thinking_config, if sent, wins)."""
    include = reasoning.include_thoughts or None
    # Gemini refuses a level and a budget together; every Gemini thinking model takes a budget, Gemini 3 a level.
    if reasoning.HasField("budget_tokens"):
        return types.ThinkingConfig(thinking_budget=reasoning.budget_tokens, include_thoughts=include)
    effort = effort_name(reasoning)
    level = types.ThinkingLevel(effort.upper()) if effort else None
    return types.ThinkingConfig(thinking_level=level, include_thoughts=include)


def _request_options(extensions: struct_pb2.Struct) -> dict[str, Any]:
    options = _google_extension(extensions)
    unknown = sorted(set(options) - set(ALLOWED_REQUEST_OPTIONS))
    if unknown:
        raise invalid_argument(
            f"extensions.google.{unknown[0]}",
            f"is not a Gemini option the adapter passes on; allowed: {', '.join(ALLOWED_REQUEST_OPTIONS)}",
        )
    for key in ("top_k", "thinking_config"):
        if key in options:
            options[key] = _whole_numbers(options[key])
    return options


def _whole_numbers(value: Any) -> Any:
    """Struct numbers are doubles; Gemini's integer fields want ints back."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


def _google_extension(extensions: struct_pb2.Struct) -> dict[str, Any]:
    if PROVIDER not in extensions.fields:
        return {}
    value = extensions.fields[PROVIDER]
    if value.WhichOneof("kind") != "struct_value":
        return {}
    return json_format.MessageToDict(value.struct_value)


# --------------------------------------------------------------- response side


@dataclass
class _CallState:
    index: int
    call: chat_pb2.ToolCall


@dataclass
class ResponseReader:
    """Folds GenerateContentResponse objects (one, or each chunk of a stream) into unified output.

    `feed` returns the ChatDeltas for that chunk, one per Gemini part, in
    order: text, whole tool calls (Gemini sends each function call complete in
    one chunk) and reasoning (thought text and signatures).
    """

    turn: int
    text: list[str] = field(default_factory=list)
    reasoning: list[chat_pb2.ReasoningPart] = field(default_factory=list)
    calls: list[_CallState] = field(default_factory=list)
    finish_reason: types.FinishReason | None = None
    finish_message: str = ""
    usage: types.GenerateContentResponseUsageMetadata | None = None
    model_version: str = ""
    response_id: str = ""
    block_reason: str = ""
    block_message: str = ""
    saw_candidate: bool = False
    logprobs: list[chat_pb2.TokenLogprob] = field(default_factory=list)
    citations: list[chat_pb2.Citation] = field(default_factory=list)
    #: True while consecutive thought parts join the last reasoning part.
    _in_thought: bool = False
    #: Characters of answer text so far (citation spans count them).
    _chars: int = 0
    #: Citations already sent: stream chunks may repeat the metadata.
    _cited: CitationsSeen = field(default_factory=CitationsSeen)

    def feed(self, response: types.GenerateContentResponse) -> list[chat_pb2.ChatDelta]:
        if response.usage_metadata is not None:
            self.usage = response.usage_metadata
        self.model_version = response.model_version or self.model_version
        self.response_id = response.response_id or self.response_id
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            self.block_reason = _enum_name(feedback.block_reason)
            self.block_message = feedback.block_reason_message or ""
        if not response.candidates:
            return []
        self.saw_candidate = True
        candidate = response.candidates[0]
        if candidate.finish_reason is not None:
            self.finish_reason = candidate.finish_reason
            self.finish_message = candidate.finish_message or ""
        parts = candidate.content.parts if candidate.content is not None else None
        deltas: list[chat_pb2.ChatDelta] = []
        # Segments index their part in a whole answer (or a stream's first chunk); a later chunk's
        # grounding spans the text streamed so far, so its parts are not offered.
        later_chunk = self._chars > 0
        part_starts: dict[int, tuple[int, str]] = {}
        for index, part in enumerate(parts or []):
            if part.text and not part.thought and part.function_call is None and not later_chunk:
                part_starts[index] = (self._chars, part.text)
            deltas += self._part(part)
        deltas = [delta for delta in deltas if delta.text or delta.tool_calls or delta.HasField("reasoning")]
        deltas = self._with_logprobs(deltas, logprobs_of(candidate.logprobs_result))
        found = google_citations.of_candidate(candidate, whole_text="".join(self.text), part_starts=part_starts)
        cited = self._cited.new(found)
        if cited:
            # After the text they span: one delta of their own.
            self.citations.extend(cited)
            deltas.append(chat_pb2.ChatDelta(citations=cited))
        return deltas

    def _with_logprobs(
        self, deltas: list[chat_pb2.ChatDelta], found: list[chat_pb2.TokenLogprob]
    ) -> list[chat_pb2.ChatDelta]:
        """The chunk's token log probabilities ride its first text delta (or a delta of their own)."""
        if not found:
            return deltas
        self.logprobs.extend(found)
        carrier = next((delta for delta in deltas if delta.text), None)
        if carrier is None:
            carrier = chat_pb2.ChatDelta()
            deltas.append(carrier)
        carrier.logprobs.extend(found)
        return deltas

    def _part(self, part: types.Part) -> list[chat_pb2.ChatDelta]:
        if part.thought:
            return [self._thought(part.text or "", part.thought_signature)]
        self._in_thought = False
        deltas = []
        if part.function_call is not None:
            deltas.append(self._call(part.function_call, part.thought_signature))
        elif part.text:
            self.text.append(part.text)
            self._chars += len(part.text)
            deltas.append(chat_pb2.ChatDelta(text=part.text))
        if part.thought_signature:
            # A signature on answer text or a call: a signature-only reasoning part of its own.
            deltas.append(self._signature_only(part.thought_signature))
        return deltas

    def _thought(self, text: str, signature: bytes | None) -> chat_pb2.ChatDelta:
        if not self._in_thought:
            self.reasoning.append(chat_pb2.ReasoningPart(provider=PROVIDER))
            self._in_thought = True
        part = self.reasoning[-1]
        part.text += text
        if signature:
            part.signature = _b64(signature)
        delta = chat_pb2.ReasoningDelta(index=len(self.reasoning) - 1, text=text, provider=PROVIDER)
        delta.signature = _b64(signature) if signature else ""
        return chat_pb2.ChatDelta(reasoning=delta)

    def _signature_only(self, signature: bytes) -> chat_pb2.ChatDelta:
        self.reasoning.append(chat_pb2.ReasoningPart(signature=_b64(signature), provider=PROVIDER))
        index = len(self.reasoning) - 1
        return chat_pb2.ChatDelta(
            reasoning=chat_pb2.ReasoningDelta(index=index, signature=_b64(signature), provider=PROVIDER)
        )

    def _call(self, function_call: types.FunctionCall, signature: bytes | None) -> chat_pb2.ChatDelta:
        index = len(self.calls)
        call = chat_pb2.ToolCall(
            id=function_call.id or f"call_{self.turn}_{index}",
            name=function_call.name or "",
            arguments_json=json.dumps(function_call.args or {}, separators=(",", ":")),
        )
        google: dict[str, Any] = {}
        if function_call.id:
            google["upstream_id"] = True
        if signature:
            google["thought_signature"] = _b64(signature)
        if google:
            call.extensions.update({PROVIDER: google})
        self.calls.append(_CallState(index, call))
        delta = chat_pb2.ChatDelta()
        tool_delta = delta.tool_calls.add(
            index=index, id=call.id, name=call.name, arguments_json_delta=call.arguments_json
        )
        if google:
            tool_delta.extensions.CopyFrom(call.extensions)
        return delta

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.calls)

    def message(self) -> chat_pb2.Message:
        message = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT)
        for part in self.reasoning:
            message.content.add(reasoning=part)
        if self.text:
            message.content.add(text="".join(self.text))
        message.tool_calls.extend(state.call for state in self.calls)
        message.logprobs.extend(self.logprobs)
        message.citations.extend(self.citations)
        return message

    def unified_finish_reason(self) -> chat_pb2.FinishReason.ValueType:
        reason = self.finish_reason
        if reason is None:
            return chat_pb2.FINISH_REASON_UNSPECIFIED
        if reason == types.FinishReason.STOP:
            return chat_pb2.FINISH_REASON_TOOL_CALLS if self.calls else chat_pb2.FINISH_REASON_STOP
        if reason == types.FinishReason.MAX_TOKENS:
            return chat_pb2.FINISH_REASON_LENGTH
        if reason in _CONTENT_FILTER:
            return chat_pb2.FINISH_REASON_CONTENT_FILTER
        return chat_pb2.FINISH_REASON_OTHER

    def unified_usage(self) -> chat_pb2.Usage:
        usage = self.usage
        if usage is None:
            return chat_pb2.Usage()
        thoughts = usage.thoughts_token_count or 0
        return chat_pb2.Usage(
            # Tool-use prompt tokens (e.g. search results fed back) are billed as input.
            input_tokens=(usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0),
            output_tokens=(usage.candidates_token_count or 0) + thoughts,
            cached_input_tokens=usage.cached_content_token_count or 0,
            reasoning_tokens=thoughts,
        )

    def response_extensions(self) -> struct_pb2.Struct:
        google: dict[str, Any] = {}
        if self.finish_reason is not None:
            google["finish_reason"] = _enum_name(self.finish_reason)
        if self.finish_message:
            google["finish_message"] = self.finish_message
        extensions = struct_pb2.Struct()
        if google:
            extensions.update({PROVIDER: google})
        return extensions


def logprobs_of(result: types.LogprobsResult | None) -> list[chat_pb2.TokenLogprob]:
    """Gemini's chosen token at each step with the top candidates of that step (Gemini gives no bytes)."""
    if result is None:
        return []
    tops = result.top_candidates or []
    out = []
    for step, chosen in enumerate(result.chosen_candidates or []):
        alternatives = tops[step].candidates or [] if step < len(tops) else []
        out.append(
            chat_pb2.TokenLogprob(
                token=chosen.token or "",
                logprob=chosen.log_probability or 0.0,
                top_logprobs=[
                    chat_pb2.TopLogprob(token=top.token or "", logprob=top.log_probability or 0.0)
                    for top in alternatives
                ],
            )
        )
    return out


def assistant_turn(request: Request) -> int:
    """How many assistant turns precede this answer: part of the synthesised call ids."""
    return sum(1 for message in request.messages if message.role == chat_pb2.ROLE_ASSISTANT)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))

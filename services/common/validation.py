"""Validation of chat requests, shared by the router and every adapter.

Each check raises INVALID_ARGUMENT naming the field path (as in
google.rpc.BadRequest) and saying how to fix it.
"""

from __future__ import annotations

import re
from typing import Protocol

from google.protobuf import struct_pb2
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmmesh.v1 import chat_pb2
from services.common import prompt_cache
from services.common.caller import validate_caller
from services.common.errors import invalid_argument
from services.common.json_depth import struct_depth_exceeds, too_deep
from services.common.settings import ENV_PREFIX

MAX_MESSAGES = 2048
MAX_TOOLS = 256
MAX_STOP_SEQUENCES = 16
MAX_OUTPUT_TOKENS = 1_000_000
MAX_REQUEST_BYTES = 16 * 1024 * 1024
MAX_CONTENT_BYTES = 8 * 1024 * 1024
# OpenAI's own limits for one embeddings request: 2048 inputs, vectors up to 3072 floats.
MAX_EMBED_INPUTS = 2048
MAX_EMBED_DIMENSIONS = 65536
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ROLES = frozenset(chat_pb2.Role.values()) - {chat_pb2.ROLE_UNSPECIFIED}


class InputLimits(BaseSettings):
    """Request size limits (LLMMESH_MAX_*), read by the router and every adapter."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    max_request_bytes: int = Field(MAX_REQUEST_BYTES, ge=1024, le=32 * 1024 * 1024, description="Whole request.")
    max_messages: int = Field(MAX_MESSAGES, ge=1, le=100_000, description="Messages per request.")
    max_tools: int = Field(MAX_TOOLS, ge=0, le=10_000, description="Tool definitions per request.")
    max_content_bytes: int = Field(
        MAX_CONTENT_BYTES,
        ge=1,
        le=32 * 1024 * 1024,
        description="One content part: UTF-8 text, or image, document or audio bytes.",
    )
    max_output_tokens: int = Field(MAX_OUTPUT_TOKENS, ge=1, le=10_000_000, description="Cap on max_output_tokens.")


DEFAULT_LIMITS = InputLimits.model_construct()


class ChatLike(Protocol):
    """The fields router and provider chat requests share."""

    model: str

    @property
    def messages(self) -> list[chat_pb2.Message]: ...
    @property
    def tools(self) -> list[chat_pb2.ToolDefinition]: ...
    @property
    def tool_choice(self) -> chat_pb2.ToolChoice: ...
    @property
    def settings(self) -> chat_pb2.GenerationSettings: ...
    @property
    def extensions(self) -> struct_pb2.Struct: ...
    @property
    def caller(self) -> chat_pb2.CallerContext: ...

    def ByteSize(self) -> int: ...  # noqa: N802 - protobuf's name
    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 - protobuf's name


def validate_chat_request(request: ChatLike, *, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Raises MeshError(INVALID_ARGUMENT) for the first problem found; each limit message names the setting."""
    if not request.model.strip():
        raise invalid_argument("model", "is empty; name a model from ListModels, an alias, or 'auto'")
    # First: the checks below and everything after them may walk these recursively.
    _validate_json_depth(request)
    size = request.ByteSize()
    max_bytes = limits.max_request_bytes
    if size > max_bytes:
        raise invalid_argument(
            _largest_message_field(request),
            f"request is {size} bytes, above the limit of {max_bytes} bytes (LLMMESH_MAX_REQUEST_BYTES); "
            "send fewer or smaller messages (images by URL instead of bytes)",
        )
    if not request.messages:
        raise invalid_argument("messages", "is empty; send at least one user message")
    if len(request.messages) > limits.max_messages:
        raise invalid_argument(
            "messages",
            f"has {len(request.messages)} messages, above the limit of {limits.max_messages} (LLMMESH_MAX_MESSAGES); "
            "drop or summarise older turns",
        )
    tool_names = _validate_tools(request.tools, limits.max_tools)
    for index, message in enumerate(request.messages):
        _validate_message(f"messages[{index}]", message, limits.max_content_bytes)
    if request.HasField("tool_choice"):
        choice = request.tool_choice
        if choice.mode == chat_pb2.TOOL_CHOICE_MODE_NAMED and choice.name not in tool_names:
            raise invalid_argument(
                "tool_choice.name", f"names tool {choice.name!r}, which is not in tools; add it or change the mode"
            )
        _validate_allowed_tools(choice, tool_names)
    if request.HasField("settings"):
        _validate_settings(request.settings, limits.max_output_tokens)
    if request.HasField("caller"):
        validate_caller(request.caller)


def _validate_allowed_tools(choice: chat_pb2.ToolChoice, tool_names: set[str]) -> None:
    if not choice.allowed_tools:
        return
    if choice.mode in (chat_pb2.TOOL_CHOICE_MODE_NONE, chat_pb2.TOOL_CHOICE_MODE_NAMED):
        raise invalid_argument(
            "tool_choice.allowed_tools", "applies with TOOL_CHOICE_MODE_AUTO or TOOL_CHOICE_MODE_REQUIRED only"
        )
    for index, name in enumerate(choice.allowed_tools):
        if name not in tool_names:
            raise invalid_argument(
                f"tool_choice.allowed_tools[{index}]", f"names tool {name!r}, which is not in tools; add it there"
            )


def _validate_json_depth(request: ChatLike) -> None:
    """Tool schemas, the response schema and extensions within MAX_JSON_DEPTH (checked without recursion)."""
    for index, tool in enumerate(request.tools):
        if struct_depth_exceeds(tool.parameters):
            raise too_deep(f"tools[{index}].parameters")
    if request.HasField("settings") and struct_depth_exceeds(request.settings.response_format.json_schema):
        raise too_deep("settings.response_format.json_schema")
    if struct_depth_exceeds(request.extensions):
        raise too_deep("extensions")


def _validate_tools(tools: list[chat_pb2.ToolDefinition], max_tools: int) -> set[str]:
    if len(tools) > max_tools:
        raise invalid_argument(
            "tools",
            f"has {len(tools)} tools, above the limit of {max_tools} (LLMMESH_MAX_TOOLS); send only the tools this turn needs",
        )
    names: set[str] = set()
    for index, tool in enumerate(tools):
        if not _TOOL_NAME.match(tool.name):
            raise invalid_argument(
                f"tools[{index}].name", f"{tool.name!r} is not 1-64 characters of letters, digits, '_' or '-'"
            )
        if tool.name in names:
            raise invalid_argument(f"tools[{index}].name", f"{tool.name!r} is defined twice; tool names must be unique")
        names.add(tool.name)
        if tool.HasField("cache_control"):
            prompt_cache.validate_cache_control(f"tools[{index}].cache_control", tool.cache_control)
        schema_type = tool.parameters.fields.get("type")
        if schema_type is not None and schema_type.string_value != "object":
            raise invalid_argument(f"tools[{index}].parameters", 'must be a JSON Schema with "type": "object"')
    return names


def _validate_message(path: str, message: chat_pb2.Message, max_content_bytes: int) -> None:
    if message.role not in _ROLES:
        raise invalid_argument(
            f"{path}.role",
            f"{message.role} is not a known role; use ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL",
        )
    for part_index, part in enumerate(message.content):
        _validate_part(f"{path}.content[{part_index}]", part, message.role, max_content_bytes)
    if message.role == chat_pb2.ROLE_TOOL:
        if not message.HasField("tool_result") or not message.tool_result.tool_call_id:
            raise invalid_argument(
                f"{path}.tool_result.tool_call_id", "is required on ROLE_TOOL messages; echo the ToolCall.id"
            )
        for part_index, part in enumerate(message.tool_result.parts):
            part_path = f"{path}.tool_result.parts[{part_index}]"
            if part.WhichOneof("kind") not in (None, "text", "image"):
                raise invalid_argument(
                    f"{part_path}.{part.WhichOneof('kind')}",
                    "is not allowed in a tool result; send text or image parts",
                )
            _validate_part(part_path, part, message.role, max_content_bytes)
        return
    if message.HasField("tool_result"):
        raise invalid_argument(f"{path}.tool_result", "is only allowed on ROLE_TOOL messages")
    if message.refusal and message.role != chat_pb2.ROLE_ASSISTANT:
        raise invalid_argument(f"{path}.refusal", "is only allowed on ROLE_ASSISTANT messages (the model's refusal)")
    if len(message.refusal.encode()) > max_content_bytes:
        raise invalid_argument(
            f"{path}.refusal", f"is above the limit of {max_content_bytes} bytes (LLMMESH_MAX_CONTENT_BYTES)"
        )
    if message.tool_calls and message.role != chat_pb2.ROLE_ASSISTANT:
        raise invalid_argument(f"{path}.tool_calls", "are only allowed on ROLE_ASSISTANT messages")
    for call_index, call in enumerate(message.tool_calls):
        if not call.name:
            raise invalid_argument(f"{path}.tool_calls[{call_index}].name", "is empty")
    if not message.content and not message.tool_calls and not message.refusal:
        raise invalid_argument(f"{path}.content", "is empty; add a text part")
    if message.role == chat_pb2.ROLE_USER and not any(_says_something(part) for part in message.content):
        raise invalid_argument(
            f"{path}.content",
            "is blank: a user message needs text that is not only whitespace, or an image, document or audio "
            "(an empty prompt is usually a template that rendered nothing)",
        )


#: Document types every provider that takes documents reads (OpenAI Chat takes PDF files only).
DOCUMENT_MIME_TYPES = frozenset({"application/pdf", "text/plain"})
#: Audio formats as OpenAI's `input_audio.format` names them, with the MIME type Gemini takes.
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3"}
_AUDIO_MIME_TYPES = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}
_USER_ONLY = frozenset({"document", "audio"})


def audio_format(audio: chat_pb2.AudioPart) -> str:
    """The part's format, "wav" or "mp3" (validated: `format`, else read from `mime_type`)."""
    return audio.format or _AUDIO_MIME_TYPES[audio.mime_type.lower()]


def audio_mime_type(audio: chat_pb2.AudioPart) -> str:
    """The part's MIME type (validated: `mime_type`, else derived from `format`)."""
    return audio.mime_type or AUDIO_FORMATS[audio.format]


def _validate_part(part_path: str, part: chat_pb2.ContentPart, role: int, max_content_bytes: int) -> None:
    kind = part.WhichOneof("kind")
    if kind is None:
        raise invalid_argument(part_path, "is empty; set text, image, document or audio")
    if kind == "reasoning" and role != chat_pb2.ROLE_ASSISTANT:
        raise invalid_argument(
            f"{part_path}.reasoning", "is only allowed on ROLE_ASSISTANT messages (the model's own reasoning)"
        )
    if kind in _USER_ONLY and role != chat_pb2.ROLE_USER:
        raise invalid_argument(f"{part_path}.{kind}", "is only allowed on ROLE_USER messages")
    if part.HasField("cache_control"):
        if kind == "reasoning":
            raise invalid_argument(
                f"{part_path}.cache_control", "cannot go on a reasoning part; put it on a text or image part"
            )
        prompt_cache.validate_cache_control(f"{part_path}.cache_control", part.cache_control)
    size = _part_size(part, kind)
    if size > max_content_bytes:
        raise invalid_argument(
            part_path,
            f"is {size} bytes, above the limit of {max_content_bytes} bytes per part (LLMMESH_MAX_CONTENT_BYTES); "
            "split the text or send the image or document by URL",
        )
    if kind == "image":
        _validate_image(f"{part_path}.image", part.image)
    elif kind == "document":
        _validate_document(f"{part_path}.document", part.document)
    elif kind == "audio":
        _validate_audio(f"{part_path}.audio", part.audio)


def _validate_image(path: str, image: chat_pb2.ImagePart) -> None:
    source = image.WhichOneof("source")
    if source is None:
        raise invalid_argument(path, "has no source; set url or data")
    if source == "data" and not image.mime_type:
        raise invalid_argument(f"{path}.mime_type", "is required with image data, e.g. 'image/png'")
    if source == "data" and not image.data:
        raise invalid_argument(f"{path}.data", "is empty; send the image's bytes")
    if source == "url" and not image.url.startswith(("https://", "http://", "data:")):
        raise invalid_argument(f"{path}.url", "must be an http(s):// or data: URL")
    if image.detail not in chat_pb2.ImageDetail.values():
        raise invalid_argument(f"{path}.detail", f"{image.detail} is not a known detail; use AUTO, LOW or HIGH")


def _validate_document(path: str, document: chat_pb2.DocumentPart) -> None:
    source = document.WhichOneof("source")
    if source is None:
        raise invalid_argument(path, "has no source; set data, url or file_id")
    if source == "data":
        if not document.data:
            raise invalid_argument(f"{path}.data", "is empty; send the document's bytes")
        if not document.mime_type:
            raise invalid_argument(
                f"{path}.mime_type", "is required with document data: 'application/pdf' or 'text/plain'"
            )
        if document.mime_type == "text/plain":
            try:
                document.data.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid_argument(
                    f"{path}.data", "is not UTF-8 text; send text/plain documents as UTF-8"
                ) from None
    if source == "url" and not document.url.startswith(("https://", "http://")):
        raise invalid_argument(f"{path}.url", "must be an http(s):// URL; send the bytes as data instead")
    if source == "file_id" and not document.file_id.strip():
        raise invalid_argument(f"{path}.file_id", "is empty; name a file uploaded to the provider")
    if document.mime_type and document.mime_type not in DOCUMENT_MIME_TYPES:
        raise invalid_argument(
            f"{path}.mime_type", f"{document.mime_type!r} is not a document type; use 'application/pdf' or 'text/plain'"
        )


def _validate_audio(path: str, audio: chat_pb2.AudioPart) -> None:
    if not audio.data:
        raise invalid_argument(f"{path}.data", "is empty; send the audio's bytes")
    if not audio.format and not audio.mime_type:
        raise invalid_argument(f"{path}.format", "is required: 'wav' or 'mp3' (or set mime_type)")
    if audio.format and audio.format not in AUDIO_FORMATS:
        raise invalid_argument(f"{path}.format", f"{audio.format!r} is not supported; use 'wav' or 'mp3'")
    if audio.mime_type and audio.mime_type.lower() not in _AUDIO_MIME_TYPES:
        raise invalid_argument(
            f"{path}.mime_type", f"{audio.mime_type!r} is not supported; use 'audio/wav' or 'audio/mpeg'"
        )
    if audio.format and audio.mime_type and _AUDIO_MIME_TYPES[audio.mime_type.lower()] != audio.format:
        raise invalid_argument(f"{path}.mime_type", f"contradicts format {audio.format!r}; set only one of them")


def _part_size(part: chat_pb2.ContentPart, kind: str) -> int:
    if kind == "text":
        return len(part.text.encode("utf-8"))
    value = getattr(part, kind)
    return int(value.ByteSize())


def _says_something(part: chat_pb2.ContentPart) -> bool:
    """An image, or text that is not only whitespace: the one rule for a user message's content."""
    return part.WhichOneof("kind") != "text" or bool(part.text.strip())


def _validate_reasoning(reasoning: chat_pb2.ReasoningSettings, max_output_tokens: int) -> None:
    if reasoning.effort not in chat_pb2.ReasoningEffort.values():
        raise invalid_argument(
            "settings.reasoning.effort", f"{reasoning.effort} is not a known effort; use MINIMAL, LOW, MEDIUM or HIGH"
        )
    if reasoning.HasField("budget_tokens") and not 0 <= reasoning.budget_tokens <= max_output_tokens:
        raise invalid_argument(
            "settings.reasoning.budget_tokens",
            f"{reasoning.budget_tokens} is outside 0..{max_output_tokens} (limit: LLMMESH_MAX_OUTPUT_TOKENS)",
        )


#: The most alternatives per token any provider returns (OpenAI's and Gemini's limit).
MAX_TOP_LOGPROBS = 20


def _validate_settings(settings: chat_pb2.GenerationSettings, max_output_tokens: int) -> None:
    if settings.HasField("max_output_tokens") and not 1 <= settings.max_output_tokens <= max_output_tokens:
        raise invalid_argument(
            "settings.max_output_tokens",
            f"{settings.max_output_tokens} is outside 1..{max_output_tokens} (limit: LLMMESH_MAX_OUTPUT_TOKENS); "
            "omit it to use the model's default",
        )
    if settings.HasField("temperature") and not 0.0 <= settings.temperature <= 2.0:
        raise invalid_argument("settings.temperature", f"{settings.temperature} is outside 0..2")
    # 0 is allowed, as in OpenAI's schema (minimum 0): only the most likely token.
    if settings.HasField("top_p") and not 0.0 <= settings.top_p <= 1.0:
        raise invalid_argument("settings.top_p", f"{settings.top_p} is outside 0..1")
    if len(settings.stop) > MAX_STOP_SEQUENCES:
        raise invalid_argument(
            "settings.stop", f"has {len(settings.stop)} sequences, above the limit of {MAX_STOP_SEQUENCES}"
        )
    if any(not stop for stop in settings.stop):
        raise invalid_argument("settings.stop", "contains an empty stop sequence")
    if settings.HasField("reasoning"):
        _validate_reasoning(settings.reasoning, max_output_tokens)
    if settings.HasField("prompt_cache"):
        prompt_cache.validate_prompt_cache(settings.prompt_cache)
    if settings.HasField("top_logprobs"):
        if not settings.logprobs:
            raise invalid_argument("settings.top_logprobs", "needs settings.logprobs set to true")
        if not 0 <= settings.top_logprobs <= MAX_TOP_LOGPROBS:
            raise invalid_argument("settings.top_logprobs", f"{settings.top_logprobs} is outside 0..{MAX_TOP_LOGPROBS}")
    response_format = settings.response_format
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA and not response_format.json_schema.fields:
        raise invalid_argument(
            "settings.response_format.json_schema", "is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA"
        )


def _largest_message_field(request: ChatLike) -> str:
    if not request.messages:
        return "messages"
    sizes = [message.ByteSize() for message in request.messages]
    index = max(range(len(sizes)), key=sizes.__getitem__)
    return f"messages[{index}]"


class EmbedLike(Protocol):
    """The fields router and provider embedding requests share."""

    model: str
    dimensions: int

    @property
    def inputs(self) -> list[str]: ...

    def ByteSize(self) -> int: ...  # noqa: N802 - protobuf's name
    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 - protobuf's name


def validate_embed_request(request: EmbedLike, *, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Raises MeshError(INVALID_ARGUMENT) naming the field for the first problem found."""
    if not request.model.strip():
        raise invalid_argument("model", "is empty; name an embedding model from ListModels or an alias")
    size = request.ByteSize()
    if size > limits.max_request_bytes:
        raise invalid_argument(
            "inputs",
            f"request is {size} bytes, above the limit of {limits.max_request_bytes} bytes "
            "(LLMMESH_MAX_REQUEST_BYTES); send fewer or shorter inputs per request",
        )
    if not request.inputs:
        raise invalid_argument("inputs", "is empty; send at least one text to embed")
    if len(request.inputs) > MAX_EMBED_INPUTS:
        raise invalid_argument(
            "inputs", f"has {len(request.inputs)} texts, above the limit of {MAX_EMBED_INPUTS}; split the batch"
        )
    for index, text in enumerate(request.inputs):
        if not text.strip():
            raise invalid_argument(f"inputs[{index}]", "is empty; every input needs some text to embed")
        if len(text.encode("utf-8")) > limits.max_content_bytes:
            raise invalid_argument(
                f"inputs[{index}]",
                f"is above the limit of {limits.max_content_bytes} bytes (LLMMESH_MAX_CONTENT_BYTES); split the text",
            )
    if request.HasField("dimensions") and not 1 <= request.dimensions <= MAX_EMBED_DIMENSIONS:
        raise invalid_argument(
            "dimensions",
            f"{request.dimensions} is not between 1 and {MAX_EMBED_DIMENSIONS}; omit it for the model's own",
        )

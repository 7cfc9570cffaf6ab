"""OpenAI chat-completions request bodies → router requests.

The body is parsed with pydantic models that follow OpenAI's schema (unknown
OpenAI parameters are ignored, as most gateways do; `n` other than 1 is
refused because the mesh returns one answer). The result is a router
ChatRequest / StreamChatRequest that then goes through the same
`validate_chat_request` as the gRPC path. `BodyFields` remembers how the
caller spelled things so errors can name the caller's field
(`max_tokens` vs `max_completion_tokens`, a string `content`, a header).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError, invalid_argument
from services.common.json_depth import MAX_JSON_DEPTH, python_depth_exceeds, too_deep
from services.router import door_cache, door_reasoning

FALLBACK_HEADER = "x-llmmesh-fallback-models"
_INT32_MAX = 2**31 - 1
_INT64 = 2**63
# The whole body: the free-form fields' limit plus the fixed levels around them (tools[0].function...).
MAX_BODY_DEPTH = MAX_JSON_DEPTH + 8
# A caller's policy durations: at most an hour, like the router's own deadline cap.
_MAX_POLICY_MS = 3_600_000
# Finding the field that holds a lone surrogate stops after this many values (then: `body`).
_SURROGATE_SEARCH_LIMIT = 100_000


def _not_bool(value: object) -> object:
    # JSON true is not a number: pydantic would read it as 1.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]

_ROLES = {
    "system": chat_pb2.ROLE_SYSTEM,
    "developer": chat_pb2.ROLE_SYSTEM,
    "user": chat_pb2.ROLE_USER,
    "assistant": chat_pb2.ROLE_ASSISTANT,
    "tool": chat_pb2.ROLE_TOOL,
    # The deprecated function-calling turn: a tool result named by its function.
    "function": chat_pb2.ROLE_TOOL,
}
_TOOL_CHOICE_MODES = {
    "auto": chat_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": chat_pb2.TOOL_CHOICE_MODE_NONE,
    "required": chat_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
_RESPONSE_FORMATS = {
    "text": chat_pb2.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
_STRATEGIES = {
    "fallback": rpb.ROUTING_STRATEGY_FALLBACK,
    "hedge": rpb.ROUTING_STRATEGY_HEDGE,
    "fanout_first": rpb.ROUTING_STRATEGY_FANOUT_FIRST,
    "fanout_all": rpb.ROUTING_STRATEGY_FANOUT_ALL,
}


class _Lenient(BaseModel):
    """OpenAI objects: fields we do not map (logprobs, user, metadata, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")


class ImageUrl(_Lenient):
    url: str
    detail: str | None = None


class FileData(_Lenient):
    # A data URL ("data:application/pdf;base64,...") or bare base64 (typed by `filename`).
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class InputAudio(_Lenient):
    data: str
    format: str


class ContentPart(_Lenient):
    type: str
    text: str | None = None
    image_url: ImageUrl | None = None
    file: FileData | None = None
    input_audio: InputAudio | None = None
    # An assistant turn's refusal part, as OpenAI returns and accepts it in history.
    refusal: str | None = None
    # A prompt-cache breakpoint, as LiteLLM and OpenRouter spell it (door_cache.py).
    cache_control: Any = None
    # {"enabled": true} on a file part: cite it (Anthropic's document `citations`, which LiteLLM passes on).
    citations: Any = None


class FunctionCall(_Lenient):
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCall(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    # What OpenAI returns on an assistant message and accepts back in history.
    refusal: str | None = None
    # Deprecated function calling: the assistant's one call.
    function_call: FunctionCall | None = None
    # An assistant turn's reasoning as the door returned it (door_reasoning.py).
    reasoning_content: str | None = None
    reasoning_details: list[Any] | None = None
    # A breakpoint on the whole message: its last part (door_cache.py).
    cache_control: Any = None

    @field_validator("content", mode="before")
    @classmethod
    def _string_or_parts(cls, value: object) -> object:
        if value is not None and not isinstance(value, str | list):
            raise ValueError("must be a string or a list of content parts")
        return value


class FunctionDefinition(_Lenient):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition
    # A breakpoint after this tool (door_cache.py).
    cache_control: Any = None


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class AllowedTools(_Lenient):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice] = Field(min_length=1)


class AllowedToolsChoice(_Lenient):
    """`{"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}`: a choice limited to some tools."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


LegacyFunctionCall = Literal["none", "auto"] | NamedFunction


class JsonSchemaFormat(_Lenient):
    name: str = ""
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Lenient):
    include_usage: StrictBool = False


class MeshOptions(BaseModel):
    """The `llmmesh` body field: routing policy and provider extensions (typos are errors)."""

    model_config = ConfigDict(extra="forbid")

    fallback_models: list[str] = Field(default_factory=list)
    strategy: Literal["fallback", "hedge", "fanout_first", "fanout_all"] | None = None
    hedge_delay_ms: Number | None = Field(None, ge=0, le=_MAX_POLICY_MS, allow_inf_nan=False)
    per_attempt_timeout_ms: Number | None = Field(None, gt=0, le=_MAX_POLICY_MS, allow_inf_nan=False)
    max_retries: StrictInt | None = Field(None, ge=0, le=10)
    allow_mid_stream_continuation: StrictBool = False
    fallback_on_content_filter: StrictBool = False
    extensions: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ChatCompletionBody(_Lenient):
    """The parts of OpenAI's chat-completions request the mesh maps."""

    model: str
    messages: list[Message]
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    # int32 bounds only; the range the mesh accepts is checked by validate_chat_request.
    max_tokens: StrictInt | None = Field(None, ge=-_INT32_MAX, le=_INT32_MAX)
    max_completion_tokens: StrictInt | None = Field(None, ge=-_INT32_MAX, le=_INT32_MAX)
    stop: str | list[str] | None = None
    seed: StrictInt | None = Field(None, ge=-_INT64, lt=_INT64)
    n: StrictInt | None = None
    # Nullable in OpenAI's schema: null is the default, no stream.
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=-_INT32_MAX, le=_INT32_MAX)
    reasoning_effort: str | None = None
    # Deprecated in OpenAI's API in favour of tools / tool_choice, and mapped onto them.
    functions: list[FunctionDefinition] | None = None
    function_call: LegacyFunctionCall | None = None
    # Who the request is for: the end user (`safety_identifier`, or the older `user`) and labels (`metadata`).
    safety_identifier: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    # Prompt caching: OpenAI's key, and LiteLLM's name for a Gemini explicit cache (door_cache.py).
    prompt_cache_key: str | None = None
    cached_content: str | None = None
    llmmesh: MeshOptions | None = None


@dataclass(slots=True)
class BodyFields:
    """How the caller spelled the request, for naming fields in errors."""

    max_tokens_field: str = "max_completion_tokens"
    # Router message indices whose caller content was a string.
    string_content: set[int] = field(default_factory=set)
    fallbacks_from_header: bool = False
    # The caller's message index of each router message (empty assistant turns are left out).
    message_indices: list[int] = field(default_factory=list)
    # The caller sent the deprecated `functions` / `function_call`: answers and errors use them too.
    legacy_functions: bool = False
    # Which body field carried the end user (CallerContext.user).
    user_field: str = "safety_identifier"


@dataclass(frozen=True, slots=True)
class ParsedChat:
    """A chat-completions body turned into a router request."""

    request: rpb.ChatRequest | rpb.StreamChatRequest
    stream: bool
    include_usage: bool
    fields: BodyFields


_R = TypeVar("_R", rpb.ChatRequest, rpb.StreamChatRequest)


def parse_chat_body(payload: object, *, fallback_header: str | None = None) -> ParsedChat:
    """Validates an OpenAI body and maps it; raises MeshError(INVALID_ARGUMENT) naming the caller's field."""
    if not isinstance(payload, dict):
        raise invalid_argument("body", "must be a JSON object with model and messages")
    # Before anything walks the body recursively (pydantic, Struct.update, the adapters).
    for path, value in _free_form(payload):
        if python_depth_exceeds(value):
            raise too_deep(path)
    if python_depth_exceeds(payload, MAX_BODY_DEPTH):
        raise too_deep("body", MAX_BODY_DEPTH, "a request body")
    _check_unicode(payload)
    try:
        body = ChatCompletionBody.model_validate(payload)
    except ValidationError as error:
        raise validation_problem(error) from None
    if body.n not in (None, 1):
        raise invalid_argument("n", f"{body.n} is not supported; the mesh returns one choice (omit n or send 1)")
    fields = BodyFields(
        max_tokens_field="max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens",
        legacy_functions=_legacy_functions(body),
    )
    cls: type[rpb.ChatRequest] | type[rpb.StreamChatRequest] = rpb.StreamChatRequest if body.stream else rpb.ChatRequest
    request = _build(cls(), body, fallback_header, fields)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return ParsedChat(request=request, stream=bool(body.stream), include_usage=include_usage, fields=fields)


def _legacy_functions(body: ChatCompletionBody) -> bool:
    """Whether the caller uses deprecated function calling; both spellings at once are refused."""
    if body.functions is not None and body.tools is not None:
        raise invalid_argument("functions", "and tools are both set; send tools only (functions is deprecated)")
    if body.function_call is not None and body.tool_choice is not None:
        raise invalid_argument(
            "function_call", "and tool_choice are both set; send tool_choice only (function_call is deprecated)"
        )
    return body.functions is not None or body.function_call is not None


def _free_form(payload: dict[str, Any]) -> Iterator[tuple[str, object]]:
    """The caller's free-form JSON (schemas, extensions, tool arguments) with its field path."""
    for index, tool in enumerate(_list(payload.get("tools"))):
        function = _dict(_dict(tool).get("function"))
        if "parameters" in function:
            yield f"tools[{index}].function.parameters", function["parameters"]
    for index, function in enumerate(_list(payload.get("functions"))):
        if "parameters" in _dict(function):
            yield f"functions[{index}].parameters", function["parameters"]
    json_schema = _dict(_dict(payload.get("response_format")).get("json_schema"))
    if "schema" in json_schema:
        yield "response_format.json_schema.schema", json_schema["schema"]
    mesh = _dict(payload.get("llmmesh"))
    if "extensions" in mesh:
        yield "llmmesh.extensions", mesh["extensions"]
    for index, message in enumerate(_list(payload.get("messages"))):
        for call_index, call in enumerate(_list(_dict(message).get("tool_calls"))):
            function = _dict(_dict(call).get("function"))
            if "arguments" in function:
                yield f"messages[{index}].tool_calls[{call_index}].function.arguments", function["arguments"]
        legacy_call = _dict(_dict(message).get("function_call"))
        if "arguments" in legacy_call:
            yield f"messages[{index}].function_call.arguments", legacy_call["arguments"]


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_unicode(payload: dict[str, Any]) -> None:
    """Refuses a lone UTF-16 surrogate (`\\ud800` in JSON): it has no UTF-8 form, so protobuf cannot carry it."""
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument(
            _surrogate_path(payload),
            "holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair), which is not Unicode text; "
            "send valid UTF-8 / paired escapes",
        ) from None


def _surrogate_path(payload: dict[str, Any]) -> str:
    """The field path of the first key or string with a lone surrogate (iterative, bounded)."""
    stack: list[tuple[str, object]] = [("", payload)]
    for _ in range(_SURROGATE_SEARCH_LIMIT):
        if not stack:
            break
        path, node = stack.pop()
        if isinstance(node, str) and not _encodable(node):
            return path or "body"
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            if isinstance(key, str) and not _encodable(key):
                return _join(path, _printable(key))
            stack.append((_join(path, key), child))
    return "body"


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _build(request: _R, body: ChatCompletionBody, fallback_header: str | None, fields: BodyFields) -> _R:
    request.model = body.model
    apply_caller(request.caller, body.safety_identifier, body.user, body.metadata, fields)
    if not request.caller.ListFields():
        request.ClearField("caller")
    tool_names: dict[str, str] = {}
    legacy_calls: dict[str, str] = {}
    for index, message in enumerate(body.messages):
        if _says_nothing(message):
            # An assistant turn with no text, refusal or call (`content: null` alone) gives the model nothing to read.
            continue
        mapped = _message(index, _modern(index, message, legacy_calls), tool_names)
        if isinstance(message.content, str):
            fields.string_content.add(len(request.messages))
        fields.message_indices.append(index)
        request.messages.append(mapped)
    definitions = body.tools if body.tools is not None else [Tool(function=f) for f in body.functions or ()]
    for tool_index, tool in enumerate(definitions):
        definition = request.tools.add(name=tool.function.name, description=tool.function.description)
        if tool.cache_control is not None:
            definition.cache_control.CopyFrom(
                door_cache.cache_control(f"tools[{tool_index}].cache_control", tool.cache_control)
            )
        if tool.function.parameters is not None:
            definition.parameters.update(tool.function.parameters)
        if tool.function.strict is not None:
            definition.strict = tool.function.strict
    choice = body.tool_choice if body.tool_choice is not None else body.function_call
    if isinstance(choice, str):
        request.tool_choice.mode = _TOOL_CHOICE_MODES[choice]
    elif isinstance(choice, NamedToolChoice):
        request.tool_choice.mode = chat_pb2.TOOL_CHOICE_MODE_NAMED
        request.tool_choice.name = choice.function.name
    elif isinstance(choice, AllowedToolsChoice):
        request.tool_choice.mode = _TOOL_CHOICE_MODES[choice.allowed_tools.mode]
        request.tool_choice.allowed_tools.extend(tool.function.name for tool in choice.allowed_tools.tools)
    elif choice is not None:
        request.tool_choice.mode = chat_pb2.TOOL_CHOICE_MODE_NAMED
        request.tool_choice.name = choice.name
    if body.parallel_tool_calls is not None and request.tools:
        # Only with tools, where it means something (OpenAI refuses it without them).
        request.tool_choice.parallel_tool_calls = body.parallel_tool_calls
    _settings(request.settings, body)
    if not request.settings.ListFields():
        request.ClearField("settings")
    options = body.llmmesh or MeshOptions.model_validate({})
    apply_routing(request.routing, options, fallback_header, fields)
    if not request.routing.ListFields():
        request.ClearField("routing")
    if options.extensions:
        request.extensions.update(options.extensions)
    return request


def _says_nothing(message: Message) -> bool:
    if message.role != "assistant" or message.tool_calls or message.function_call or message.refusal:
        return False
    if message.reasoning_details or message.reasoning_content:
        return False
    return not message.content


def _modern(index: int, message: Message, legacy_calls: dict[str, str]) -> Message:
    """History as OpenAI returns it, in the current spelling: legacy calls as tool calls.

    A deprecated `function_call` becomes a tool call with an id of the door's
    own, which the `function` turn that answers it (matched by name) echoes.
    (A refusal, or refusal parts, becomes `Message.refusal` in `_message`.)
    """
    update: dict[str, Any] = {}
    if message.role == "assistant" and message.function_call is not None and not message.tool_calls:
        call_id = f"call_legacy_{index}"
        legacy_calls[message.function_call.name] = call_id
        update["tool_calls"] = [ToolCall(id=call_id, function=message.function_call)]
    if message.role == "function":
        name = message.name or ""
        update["tool_call_id"] = legacy_calls.get(name, f"call_legacy_{name}")
    return message.model_copy(update=update) if update else message


def _message(index: int, message: Message, tool_names: dict[str, str]) -> chat_pb2.Message:
    result = chat_pb2.Message(role=_ROLES[message.role], name=message.name or "")
    if message.role in ("tool", "function"):
        call_id = message.tool_call_id or ""
        # OpenAI tool messages carry no name; Gemini matches results by name, so
        # take it from the assistant turn that made the call.
        result.tool_result.CopyFrom(
            chat_pb2.ToolResult(tool_call_id=call_id, name=tool_names.get(call_id, message.name or ""))
        )
        _tool_content(index, message.content, result.tool_result, message.cache_control)
        return result
    if message.role == "assistant":
        # Reasoning first, as the model produced it before its answer.
        path = f"messages[{index}].reasoning_details"
        result.content.extend(
            door_reasoning.parts_from_details(path, message.reasoning_details, message.reasoning_content)
        )
    refusals = [message.refusal] if message.refusal and message.role == "assistant" else []
    if isinstance(message.content, str):
        result.content.add(text=message.content)
    else:
        for part_index, part in enumerate(message.content or ()):
            if part.type == "refusal" and message.role == "assistant":
                door_cache.refuse_breakpoint(
                    f"messages[{index}].content[{part_index}].cache_control", part.cache_control, "a refusal part"
                )
                refusals.append(part.refusal or "")  # OpenAI returns refusals as parts too
                continue
            result.content.append(_part(f"messages[{index}].content[{part_index}]", part))
    result.refusal = "".join(refusals)
    for call in message.tool_calls or ():
        arguments = call.function.arguments
        arguments_json = arguments if isinstance(arguments, str) else json.dumps(arguments)
        result.tool_calls.add(id=call.id, name=call.function.name, arguments_json=arguments_json)
        tool_names[call.id] = call.function.name
    if message.cache_control is not None:
        door_cache.mark_last_part(f"messages[{index}]", result, message.cache_control)
    return result


def _part(path: str, part: ContentPart) -> chat_pb2.ContentPart:
    mapped = _part_kind(path, part)
    if part.citations is not None:
        if not mapped.HasField("document"):
            raise invalid_argument(f"{path}.citations", "is taken on file parts only; leave it out here")
        mapped.document.enable_citations = citations_enabled(f"{path}.citations", part.citations)
    if part.cache_control is not None:
        mapped.cache_control.CopyFrom(door_cache.cache_control(f"{path}.cache_control", part.cache_control))
    return mapped


def _part_kind(path: str, part: ContentPart) -> chat_pb2.ContentPart:
    if part.type == "text":
        if part.text is None:
            raise invalid_argument(f"{path}.text", "is required on a text part")
        return chat_pb2.ContentPart(text=part.text)
    if part.type == "image_url":
        if part.image_url is None:
            raise invalid_argument(f"{path}.image_url", "is required on an image_url part; set image_url.url")
        detail = image_detail(f"{path}.image_url.detail", part.image_url.detail)
        return chat_pb2.ContentPart(image=chat_pb2.ImagePart(url=part.image_url.url, detail=detail))
    if part.type == "file":
        if part.file is None:
            raise invalid_argument(f"{path}.file", "is required on a file part; set file.file_data or file.file_id")
        return chat_pb2.ContentPart(
            document=document(f"{path}.file", part.file.file_data, part.file.file_id, part.file.filename)
        )
    if part.type == "input_audio":
        if part.input_audio is None:
            raise invalid_argument(f"{path}.input_audio", "is required on an input_audio part; set data and format")
        data = decode_base64(f"{path}.input_audio.data", part.input_audio.data)
        return chat_pb2.ContentPart(audio=chat_pb2.AudioPart(data=data, format=part.input_audio.format))
    raise invalid_argument(
        f"{path}.type", f"{part.type!r} is not supported; use 'text', 'image_url', 'file' or 'input_audio'"
    )


_IMAGE_DETAILS = {
    None: chat_pb2.IMAGE_DETAIL_UNSPECIFIED,
    "auto": chat_pb2.IMAGE_DETAIL_AUTO,
    "low": chat_pb2.IMAGE_DETAIL_LOW,
    "high": chat_pb2.IMAGE_DETAIL_HIGH,
}
#: A bare base64 file_data is typed by its filename's extension; PDF when the name says nothing.
_DOCUMENT_EXTENSIONS = {".pdf": "application/pdf", ".txt": "text/plain"}


def image_detail(path: str, detail: str | None) -> chat_pb2.ImageDetail.ValueType:
    """OpenAI's `detail` word → ImageDetail (shared by both OpenAI APIs of the door)."""
    if detail not in _IMAGE_DETAILS:
        raise invalid_argument(path, f"{detail!r} is not supported by the mesh; use 'auto', 'low' or 'high'")
    return _IMAGE_DETAILS[detail]


def decode_base64(path: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(path, "is not valid base64") from None


def citations_enabled(path: str, value: Any) -> bool:
    """`{"enabled": true|false}`: whether the model should cite the document."""
    if not isinstance(value, dict) or set(value) != {"enabled"} or not isinstance(value["enabled"], bool):
        raise invalid_argument(path, 'must be {"enabled": true} or {"enabled": false}')
    return value["enabled"]


def document(path: str, file_data: str | None, file_id: str | None, filename: str | None) -> chat_pb2.DocumentPart:
    """OpenAI's file input (`file_data` as a data URL or bare base64, or `file_id`) → DocumentPart;
    `path` names the object holding them (`...file` on Chat, the `input_file` part on Responses)."""
    out = chat_pb2.DocumentPart(filename=filename or "")
    if file_data is not None and file_id is not None:
        raise invalid_argument(f"{path}.file_data", "and file_id are both set; send one of them")
    if file_id is not None:
        out.file_id = file_id
        return out
    if file_data is None:
        raise invalid_argument(path, "needs file_data (a base64 data URL) or file_id")
    if file_data.startswith("data:"):
        header, _, payload = file_data[len("data:") :].partition(",")
        mime_type, _, encoding = header.partition(";")
        if encoding != "base64":
            raise invalid_argument(f"{path}.file_data", "must be a base64 data URL: data:application/pdf;base64,...")
        out.mime_type = mime_type
    else:
        payload = file_data
        suffix = (filename or "").lower()
        out.mime_type = next(
            (mime for ending, mime in _DOCUMENT_EXTENSIONS.items() if suffix.endswith(ending)), "application/pdf"
        )
    out.data = decode_base64(f"{path}.file_data", payload)
    return out


def _tool_content(
    index: int, content: str | list[ContentPart] | None, result: chat_pb2.ToolResult, marked: object = None
) -> None:
    """A tool message's content: a string or text parts as `content` (joined), as ever; with an image
    among them, or a cache breakpoint (`marked`: the message's own), every part in order as `parts`."""
    parts = content if isinstance(content, list) else []
    breakpoint_set = marked is not None or any(part.cache_control is not None for part in parts)
    if (content is None or isinstance(content, str)) and not breakpoint_set:
        result.content = content or ""
        return
    for part_index, part in enumerate(parts):
        if part.type not in ("text", "image_url"):
            raise invalid_argument(
                f"messages[{index}].content[{part_index}].type", "tool results take text and image_url parts only"
            )
    if all(part.type == "text" for part in parts) and not breakpoint_set:
        result.content = "".join(part.text or "" for part in parts)
        return
    if isinstance(content, str) or content is None:
        result.parts.add(text=content or "")
    for part_index, part in enumerate(parts):
        result.parts.append(_part(f"messages[{index}].content[{part_index}]", part))
    if marked is not None:
        door_cache.mark_last(f"messages[{index}]", result.parts, marked)


def _settings(settings: chat_pb2.GenerationSettings, body: ChatCompletionBody) -> None:
    if body.temperature is not None:
        settings.temperature = body.temperature
    if body.top_p is not None:
        settings.top_p = body.top_p
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens is not None:
        settings.max_output_tokens = max_tokens
    if body.stop is not None:
        settings.stop.extend([body.stop] if isinstance(body.stop, str) else body.stop)
    if body.seed is not None:
        settings.seed = body.seed
    if body.logprobs:
        settings.logprobs = True
    if body.top_logprobs is not None:
        settings.top_logprobs = body.top_logprobs
    door_cache.apply_prompt_cache(settings, body.prompt_cache_key, body.cached_content)
    # With an effort, thoughts are asked for: the door returns them as reasoning_content.
    reasoning = door_reasoning.reasoning_settings("reasoning_effort", body.reasoning_effort, include_thoughts=True)
    if reasoning is not None:
        settings.reasoning.CopyFrom(reasoning)
    if body.response_format is not None:
        response_format = settings.response_format
        response_format.type = _RESPONSE_FORMATS[body.response_format.type]
        schema = body.response_format.json_schema
        if schema is not None:
            response_format.schema_name = schema.name
            if schema.schema_ is not None:
                response_format.json_schema.update(schema.schema_)
            if schema.strict is not None:
                response_format.strict = schema.strict


def apply_caller(
    caller: chat_pb2.CallerContext,
    safety_identifier: str | None,
    user: str | None,
    metadata: dict[str, str] | None,
    fields: BodyFields,
) -> None:
    """OpenAI's end-user fields and `metadata` as the CallerContext (validated with the rest of the request)."""
    if safety_identifier:
        caller.user = safety_identifier
    elif user:
        caller.user = user
        fields.user_field = "user"
    caller.labels.update(metadata or {})


def apply_routing(
    routing: rpb.RoutingPolicy, options: MeshOptions, fallback_header: str | None, fields: BodyFields
) -> None:
    fallbacks = options.fallback_models
    if not fallbacks and fallback_header:
        fallbacks = [name.strip() for name in fallback_header.split(",") if name.strip()]
        fields.fallbacks_from_header = True
    routing.fallback_models.extend(fallbacks)
    if options.strategy is not None:
        routing.strategy = _STRATEGIES[options.strategy]
    if options.hedge_delay_ms is not None:
        routing.hedge_delay.FromNanoseconds(int(options.hedge_delay_ms * 1e6))
    if options.per_attempt_timeout_ms is not None:
        routing.per_attempt_timeout.FromNanoseconds(int(options.per_attempt_timeout_ms * 1e6))
    if options.max_retries is not None:
        routing.max_retries = options.max_retries
    routing.allow_mid_stream_continuation = options.allow_mid_stream_continuation
    routing.fallback_on_content_filter = options.fallback_on_content_filter


# pydantic names union branches and validators in error locations; they are not fields.
_NOT_FIELDS = {"str", "int", "float", "bool", "list", "dict", "none"}


def validation_problem(error: ValidationError) -> MeshError:
    """The most specific problem (longest field path) as INVALID_ARGUMENT."""
    best: tuple[str, str] | None = None
    best_depth = -1
    for issue in error.errors():
        parts = [part for part in issue["loc"] if isinstance(part, int) or _is_field(part)]
        depth = len(parts)
        if depth > best_depth:
            best, best_depth = (_path(parts), _message_of(issue)), depth
    assert best is not None
    return invalid_argument(best[0] or "body", best[1])


def _is_field(part: str) -> bool:
    # Union branches are named by type (`literal[...]`, `function-after[...]`) or by class (`NamedToolChoice`).
    return part not in _NOT_FIELDS and "[" not in part and "-" not in part and not part[:1].isupper()


def _path(parts: list[int | str]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path.replace("schema_", "schema")


# pydantic's wording for a wrong type names the door's classes: say what JSON the field takes instead.
_CLASS_NAMED = re.compile(r"a valid dictionary or instance of \w+")


def _message_of(issue: Any) -> str:
    message = str(issue["msg"]).removeprefix("Value error, ")
    if issue["type"] == "missing":
        return "is required"
    if issue["type"] == "extra_forbidden":
        return "is not a known option; see the llmmesh extension fields in the README"
    message = _CLASS_NAMED.sub("a JSON object", message)
    return message[:1].lower() + message[1:]

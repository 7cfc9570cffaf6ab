"""OpenAI Responses request bodies (`POST /v1/responses`) → router requests.

The door is stateless: nothing is stored, so `previous_response_id`,
`conversation`, `store: true`, `background: true` and `item_reference`
inputs are refused with a 400 naming the field (send the whole history in
`input` instead). What maps onto the chat contract:

* `instructions` → a leading system message; `input` as a string → one user
  message; input items: `message` (any role; input_text, input_image with
  its detail, input_file, input_audio, output_text and refusal parts), `function_call` (joined to the assistant
  turn before it, as Responses output lists them one item per call) and
  `function_call_output` (a tool result, named after its call; its output a
  string, or input_text and input_image parts).
* `reasoning.effort` → `settings.reasoning.effort`; `reasoning.summary`
  (any value) asks for the thoughts (`include_thoughts`). `reasoning` items
  in `input` become reasoning parts of the assistant turn they precede, with
  their `summary` texts and what their `encrypted_content` packed
  (door_reasoning.py); an item without it is unsigned text that adapters
  leave out.
* `text.format` (text, json_object, json_schema) → the response format;
  `max_output_tokens`, `temperature`, `top_p` → generation settings;
  function tools and `tool_choice` as in chat. Built-in tools (web search,
  file search, ...) are refused: the mesh runs function tools only.
* the `llmmesh` body field and the fallback header as in chat completions.

`ResponsesFields` remembers where each router message came from, so errors
name the caller's field (`input[3].content[0].text`, `instructions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import invalid_argument
from services.router import door_cache, door_reasoning
from services.router.openai_errors import openai_param
from services.router.openai_request import (
    BodyFields,
    MeshOptions,
    ParsedChat,
    apply_caller,
    apply_routing,
    citations_enabled,
    decode_base64,
    document,
    image_detail,
    validation_problem,
)

_INT32_MAX = 2**31 - 1
_ROLES = {
    "system": chat_pb2.ROLE_SYSTEM,
    "developer": chat_pb2.ROLE_SYSTEM,
    "user": chat_pb2.ROLE_USER,
    "assistant": chat_pb2.ROLE_ASSISTANT,
}
_TOOL_CHOICE_MODES = {
    "auto": chat_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": chat_pb2.TOOL_CHOICE_MODE_NONE,
    "required": chat_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
_FORMATS = {
    "text": chat_pb2.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
_LOGPROBS_INCLUDE = "message.output_text.logprobs"
_STATELESS = "the mesh's Responses API is stateless and stores nothing; send the whole conversation in input"


class _Lenient(BaseModel):
    """Fields the mesh does not map (include, truncation, user, ...) are ignored, as in chat."""

    model_config = ConfigDict(extra="ignore")


class Reasoning(_Lenient):
    effort: str | None = None
    summary: str | None = None


class TextFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str = ""
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(_Lenient):
    format: TextFormat | None = None


class ResponsesBody(_Lenient):
    """The parts of OpenAI's Responses request the mesh maps; items and tools are read by hand."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = Field(None, ge=-_INT32_MAX, le=_INT32_MAX)
    stream: bool | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None
    top_logprobs: int | None = Field(None, ge=-_INT32_MAX, le=_INT32_MAX)
    include: list[str] | None = None
    # Prompt caching (door_cache.py).
    prompt_cache_key: str | None = None
    cached_content: str | None = None
    llmmesh: MeshOptions | None = None


@dataclass(slots=True)
class MessageSource:
    """Where one router message came from in the caller's body."""

    path: str
    string_content: bool = False
    call_paths: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ResponsesFields(BodyFields):
    """How the caller spelled the request, for naming its fields in errors."""

    messages: list[MessageSource] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ParsedResponses:
    """A Responses body as a router request, and what the answer echoes back."""

    chat: ParsedChat
    body: ResponsesBody

    @property
    def fields(self) -> ResponsesFields:
        assert isinstance(self.chat.fields, ResponsesFields)
        return self.chat.fields


def parse_responses_body(payload: object, *, fallback_header: str | None = None) -> ParsedResponses:
    """Validates a Responses body and maps it; raises MeshError(INVALID_ARGUMENT) naming the caller's field."""
    if not isinstance(payload, dict):
        raise invalid_argument("body", "must be a JSON object with model and input")
    try:
        body = ResponsesBody.model_validate(payload)
    except ValidationError as error:
        raise validation_problem(error) from None
    _refuse_state(body)
    stream = bool(body.stream)
    fields = ResponsesFields(max_tokens_field="max_output_tokens")
    cls: type[rpb.ChatRequest] | type[rpb.StreamChatRequest] = rpb.StreamChatRequest if stream else rpb.ChatRequest
    request = cls(model=body.model)
    apply_caller(request.caller, body.safety_identifier, body.user, body.metadata, fields)
    if not request.caller.ListFields():
        request.ClearField("caller")
    _messages(request, body, fields)
    _tools(request, body)
    _settings(request.settings, body)
    if not request.settings.ListFields():
        request.ClearField("settings")
    options = body.llmmesh or MeshOptions.model_validate({})
    apply_routing(request.routing, options, fallback_header, fields)
    if not request.routing.ListFields():
        request.ClearField("routing")
    if options.extensions:
        request.extensions.update(options.extensions)
    # Streams always carry usage: response.completed reports it.
    chat = ParsedChat(request=request, stream=stream, include_usage=True, fields=fields)
    return ParsedResponses(chat=chat, body=body)


def _refuse_state(body: ResponsesBody) -> None:
    if body.previous_response_id is not None:
        raise invalid_argument("previous_response_id", f"is not supported; {_STATELESS}")
    if body.conversation is not None:
        raise invalid_argument("conversation", f"is not supported; {_STATELESS}")
    if body.store:
        raise invalid_argument("store", f"true is not supported; {_STATELESS} (omit store or send false)")
    if body.background:
        raise invalid_argument("background", "true is not supported; the mesh answers in the request (omit it)")


# -- input ------------------------------------------------------------------------------------


def _messages(request: rpb.ChatRequest | rpb.StreamChatRequest, body: ResponsesBody, fields: ResponsesFields) -> None:
    tool_names: dict[str, str] = {}
    if body.instructions is not None:
        request.messages.add(role=chat_pb2.ROLE_SYSTEM).content.add(text=body.instructions)
        fields.messages.append(MessageSource("instructions", string_content=True))
    if isinstance(body.input, str):
        request.messages.add(role=chat_pb2.ROLE_USER).content.add(text=body.input)
        fields.messages.append(MessageSource("input", string_content=True))
        return
    for index, item in enumerate(body.input):
        _item(request, f"input[{index}]", item, fields, tool_names)


def _item(
    request: rpb.ChatRequest | rpb.StreamChatRequest,
    path: str,
    item: dict[str, Any],
    fields: ResponsesFields,
    tool_names: dict[str, str],
) -> None:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        message = _message(path, item, fields)
        last = request.messages[-1] if request.messages else None
        if message.role == chat_pb2.ROLE_ASSISTANT and last is not None and _reasoning_only(last):
            # The assistant's answer after its reasoning items: one turn, as the model made it.
            last.content.extend(message.content)
            fields.messages.pop()
            return
        request.messages.append(message)
    elif kind == "function_call":
        door_cache.refuse_breakpoint(f"{path}.cache_control", item.get("cache_control"), "a function call")
        _function_call(request, path, item, fields, tool_names)
    elif kind == "function_call_output":
        door_cache.refuse_breakpoint(f"{path}.cache_control", item.get("cache_control"))
        call_id = _string(item, "call_id", path)
        result = chat_pb2.ToolResult(tool_call_id=call_id, name=tool_names.get(call_id, ""))
        _output(path, item.get("output"), result)
        request.messages.add(role=chat_pb2.ROLE_TOOL, tool_result=result)
        fields.messages.append(MessageSource(path))
    elif kind == "reasoning":
        _reasoning_item(request, path, item, fields)
    elif kind == "item_reference":
        raise invalid_argument(f"{path}.type", f"'item_reference' needs stored items; {_STATELESS}")
    elif kind is None:
        raise invalid_argument(f"{path}.type", "is required on an item without a role")
    else:
        raise invalid_argument(
            f"{path}.type",
            f"{kind!r} is not supported; send 'message', 'function_call', 'function_call_output' or 'reasoning' items",
        )


def _reasoning_only(message: chat_pb2.Message) -> bool:
    return (
        message.role == chat_pb2.ROLE_ASSISTANT
        and not message.tool_calls
        and all(part.WhichOneof("kind") == "reasoning" for part in message.content)
    )


def _reasoning_item(
    request: rpb.ChatRequest | rpb.StreamChatRequest, path: str, item: dict[str, Any], fields: ResponsesFields
) -> None:
    """A reasoning item opens the assistant turn that follows it (or joins one still only reasoning)."""
    summary = item.get("summary") or []
    if not isinstance(summary, list) or not all(isinstance(part, dict) for part in summary):
        raise invalid_argument(f"{path}.summary", "must be a list of summary_text parts, as the output gave it")
    text = "".join(str(part.get("text") or "") for part in summary)
    part = door_reasoning.unpack(f"{path}.encrypted_content", text, item.get("encrypted_content"))
    last = request.messages[-1] if request.messages else None
    if last is None or not _reasoning_only(last):
        last = request.messages.add(role=chat_pb2.ROLE_ASSISTANT)
        fields.messages.append(MessageSource(path))
    last.content.add(reasoning=part)


def _message(path: str, item: dict[str, Any], fields: ResponsesFields) -> chat_pb2.Message:
    role = item.get("role")
    if role not in _ROLES:
        raise invalid_argument(f"{path}.role", f"{role!r} is not a role; use user, assistant, system or developer")
    message = chat_pb2.Message(role=_ROLES[role])
    content = item.get("content")
    if isinstance(content, str):
        message.content.add(text=content)
    elif isinstance(content, list):
        for index, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "refusal" and role == "assistant":
                door_cache.refuse_breakpoint(
                    f"{path}.content[{index}].cache_control", part.get("cache_control"), "a refusal part"
                )
                # The model's refusal in history: Message.refusal, which each adapter sends back its way.
                message.refusal += _string(part, "refusal", f"{path}.content[{index}]")
                continue
            message.content.append(_part(f"{path}.content[{index}]", part))
    elif content is not None:
        raise invalid_argument(f"{path}.content", "must be a string or a list of content parts")
    if item.get("cache_control") is not None:
        door_cache.mark_last_part(path, message, item["cache_control"])
    fields.messages.append(MessageSource(path, string_content=isinstance(content, str)))
    return message


def _part(path: str, part: object) -> chat_pb2.ContentPart:
    mapped = _part_kind(path, part)
    assert isinstance(part, dict)
    if part.get("cache_control") is not None:
        mapped.cache_control.CopyFrom(door_cache.cache_control(f"{path}.cache_control", part["cache_control"]))
    return mapped


def _part_kind(path: str, part: object) -> chat_pb2.ContentPart:
    if not isinstance(part, dict):
        raise invalid_argument(path, "must be a content part object with a type")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return chat_pb2.ContentPart(text=_string(part, "text", path))
    if kind == "refusal":
        # A refusal in history stays visible to the model as the assistant's words.
        return chat_pb2.ContentPart(text=_string(part, "refusal", path))
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise invalid_argument(
                f"{path}.image_url", "is required on an input_image part (a URL or data: URL; file_id needs storage)"
            )
        detail = image_detail(f"{path}.detail", _optional_string(part, "detail", path))
        return chat_pb2.ContentPart(image=chat_pb2.ImagePart(url=url, detail=detail))
    if kind == "input_file":
        return chat_pb2.ContentPart(document=_input_file(path, part))
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise invalid_argument(f"{path}.input_audio", "is required on an input_audio part; set data and format")
        data = decode_base64(f"{path}.input_audio.data", _string(audio, "data", f"{path}.input_audio"))
        return chat_pb2.ContentPart(
            audio=chat_pb2.AudioPart(data=data, format=_string(audio, "format", f"{path}.input_audio"))
        )
    raise invalid_argument(
        f"{path}.type", f"{kind!r} is not supported; use 'input_text', 'input_image', 'input_file' or 'input_audio'"
    )


def _input_file(path: str, part: dict[str, Any]) -> chat_pb2.DocumentPart:
    """`input_file`: file_data (a data URL or bare base64), file_id or file_url, with its filename."""
    if image_detail(f"{path}.detail", _optional_string(part, "detail", path)) not in (
        chat_pb2.IMAGE_DETAIL_UNSPECIFIED,
        chat_pb2.IMAGE_DETAIL_AUTO,
    ):
        raise invalid_argument(f"{path}.detail", "is taken on images only; leave it unset on input_file")
    file_url = _optional_string(part, "file_url", path)
    file_data, file_id = _optional_string(part, "file_data", path), _optional_string(part, "file_id", path)
    filename = _optional_string(part, "filename", path)
    if file_url is not None:
        if file_data is not None or file_id is not None:
            raise invalid_argument(f"{path}.file_url", "is set with file_data or file_id; send one of them")
        out = chat_pb2.DocumentPart(url=file_url, filename=filename or "")
    else:
        out = document(path, file_data, file_id, filename)
    if part.get("citations") is not None:
        out.enable_citations = citations_enabled(f"{path}.citations", part["citations"])
    return out


def _optional_string(item: dict[str, Any], key: str, path: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid_argument(f"{path}.{key}", "must be a string")
    return value


def _function_call(
    request: rpb.ChatRequest | rpb.StreamChatRequest,
    path: str,
    item: dict[str, Any],
    fields: ResponsesFields,
    tool_names: dict[str, str],
) -> None:
    """A call joins the assistant turn just before it; Responses output lists one item per call."""
    call_id, name = _string(item, "call_id", path), _string(item, "name", path)
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise invalid_argument(f"{path}.arguments", "must be a string of JSON (as the function_call output gave it)")
    last = request.messages[-1] if request.messages else None
    if last is None or last.role != chat_pb2.ROLE_ASSISTANT:
        last = request.messages.add(role=chat_pb2.ROLE_ASSISTANT)
        fields.messages.append(MessageSource(path))
    last.tool_calls.add(id=call_id, name=name, arguments_json=arguments)
    fields.messages[-1].call_paths.append(path)
    tool_names[call_id] = name


def _output(path: str, output: object, result: chat_pb2.ToolResult) -> None:
    """A function_call_output's output: a string or text parts as `content` (joined), as ever; with
    an input_image among them, every part in order as `parts`."""
    if isinstance(output, str):
        result.content = output
        return
    if not isinstance(output, list):
        raise invalid_argument(f"{path}.output", "is required: the tool's result as a string")
    for index, part in enumerate(output):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "input_image"):
            raise invalid_argument(f"{path}.output[{index}]", "tool results take input_text and input_image parts only")
    if all(part.get("type") != "input_image" for part in output):
        result.content = "".join(_string(part, "text", f"{path}.output[{index}]") for index, part in enumerate(output))
        return
    for index, part in enumerate(output):
        result.parts.append(_part(f"{path}.output[{index}]", part))


def _string(item: dict[str, Any], key: str, path: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise invalid_argument(f"{path}.{key}", "is required and must be a string")
    return value


# -- tools and settings -----------------------------------------------------------------------


def _tools(request: rpb.ChatRequest | rpb.StreamChatRequest, body: ResponsesBody) -> None:
    for index, tool in enumerate(body.tools or ()):
        if tool.get("type") != "function":
            raise invalid_argument(
                f"tools[{index}].type", f"{tool.get('type')!r} is not supported; the mesh runs function tools only"
            )
        description = tool.get("description") or ""
        definition = request.tools.add(name=_string(tool, "name", f"tools[{index}]"), description=str(description))
        parameters = tool.get("parameters")
        if isinstance(parameters, dict):
            definition.parameters.update(parameters)
        elif parameters is not None:
            raise invalid_argument(f"tools[{index}].parameters", "must be a JSON Schema object")
        strict = tool.get("strict")
        if isinstance(strict, bool):
            definition.strict = strict
        elif strict is not None:
            raise invalid_argument(f"tools[{index}].strict", "must be true, false or null")
        if tool.get("cache_control") is not None:
            definition.cache_control.CopyFrom(
                door_cache.cache_control(f"tools[{index}].cache_control", tool["cache_control"])
            )
    choice = body.tool_choice
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            raise invalid_argument(
                "tool_choice", f"{choice!r} is not supported; use auto, none, required or a function"
            )
        request.tool_choice.mode = _TOOL_CHOICE_MODES[choice]
    elif choice is not None and choice.get("type") == "allowed_tools":
        _allowed_tools(request, choice)
    elif choice is not None:
        if choice.get("type") != "function":
            raise invalid_argument(
                "tool_choice.type", "only {'type': 'function', 'name': ...} or 'allowed_tools' is supported"
            )
        request.tool_choice.mode = chat_pb2.TOOL_CHOICE_MODE_NAMED
        request.tool_choice.name = _string(choice, "name", "tool_choice")
    if body.parallel_tool_calls is not None and request.tools:
        request.tool_choice.parallel_tool_calls = body.parallel_tool_calls


def _allowed_tools(request: rpb.ChatRequest | rpb.StreamChatRequest, choice: dict[str, Any]) -> None:
    """`{"type": "allowed_tools", "mode": "auto" | "required", "tools": [{"type": "function", "name"}]}`."""
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise invalid_argument("tool_choice.mode", "must be 'auto' or 'required' with allowed_tools")
    tools = choice.get("tools")
    if not isinstance(tools, list) or not tools:
        raise invalid_argument(
            "tool_choice.tools", "must list the allowed tools, e.g. [{'type': 'function', 'name': ...}]"
        )
    request.tool_choice.mode = _TOOL_CHOICE_MODES[mode]
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid_argument(
                f"tool_choice.tools[{index}]", "only function tools are supported: {'type': 'function', 'name': ...}"
            )
        request.tool_choice.allowed_tools.append(_string(tool, "name", f"tool_choice.tools[{index}]"))


def _settings(settings: chat_pb2.GenerationSettings, body: ResponsesBody) -> None:
    # include's "message.output_text.logprobs" asks for them; top_logprobs alone does too.
    if _LOGPROBS_INCLUDE in (body.include or ()) or body.top_logprobs is not None:
        settings.logprobs = True
    if body.top_logprobs is not None:
        settings.top_logprobs = body.top_logprobs
    door_cache.apply_prompt_cache(settings, body.prompt_cache_key, body.cached_content)
    if body.temperature is not None:
        settings.temperature = body.temperature
    if body.top_p is not None:
        settings.top_p = body.top_p
    if body.max_output_tokens is not None:
        settings.max_output_tokens = body.max_output_tokens
    if body.reasoning is not None:
        thoughts = body.reasoning.summary is not None
        reasoning = door_reasoning.reasoning_settings(
            "reasoning.effort", body.reasoning.effort, include_thoughts=thoughts
        )
        if reasoning is None and thoughts:
            reasoning = chat_pb2.ReasoningSettings(include_thoughts=True)
        if reasoning is not None:
            settings.reasoning.CopyFrom(reasoning)
    text_format = body.text.format if body.text is not None else None
    if text_format is not None:
        settings.response_format.type = _FORMATS[text_format.type]
        if text_format.type == "json_schema":
            settings.response_format.schema_name = text_format.name
            if text_format.schema_ is not None:
                settings.response_format.json_schema.update(text_format.schema_)
            if text_format.strict is not None:
                settings.response_format.strict = text_format.strict


# -- field names in errors --------------------------------------------------------------------

_MESSAGE = re.compile(r"^messages\[(\d+)\](.*)$")
_PART = re.compile(r"^\.content\[(\d+)\](.*)$")
_CALL = re.compile(r"^\.tool_calls\[(\d+)\](.*)$")
_FLAT = [
    (re.compile(r"^messages$"), "input"),
    (re.compile(r"^settings\.max_output_tokens$"), "max_output_tokens"),
    (re.compile(r"^settings\.reasoning(\..*)?$"), "reasoning.effort"),
    (re.compile(r"^settings\.response_format\.json_schema$"), "text.format.schema"),
    (re.compile(r"^settings\.response_format\.schema_name$"), "text.format.name"),
    (re.compile(r"^settings\.response_format.*$"), "text.format"),
    (re.compile(r"^tools\[(\d+)\]\.(name|description|parameters)$"), r"tools[\1].\2"),
    (re.compile(r"^tool_choice\.name$"), "tool_choice.name"),
    (re.compile(r"^tool_choice\.allowed_tools(.*)$"), r"tool_choice.tools\1"),
    (re.compile(r"^tool_choice\.parallel_tool_calls$"), "parallel_tool_calls"),
]


def responses_param(path: str, fields: BodyFields | None) -> str:
    """The Responses request field for a router field path (`messages[1].content[0]` → `input[0].content[0]`)."""
    for pattern, replacement in _FLAT:
        if (match := pattern.match(path)) is not None:
            return match.expand(replacement)
    match = _MESSAGE.match(path)
    if match is not None and isinstance(fields, ResponsesFields) and int(match.group(1)) < len(fields.messages):
        return _message_param(fields.messages[int(match.group(1))], match.group(2))
    return openai_param(path, fields)


def _message_param(source: MessageSource, rest: str) -> str:
    if (part := _PART.match(rest)) is not None:
        if source.string_content:
            return source.path if source.path in ("input", "instructions") else f"{source.path}.content"
        return f"{source.path}.content[{part.group(1)}]{_part_tail(part.group(2))}"
    if (call := _CALL.match(rest)) is not None and int(call.group(1)) < len(source.call_paths):
        tail = {".arguments_json": ".arguments", ".id": ".call_id"}.get(call.group(2), call.group(2))
        return f"{source.call_paths[int(call.group(1))]}{tail}"
    if (output := _OUTPUT_PART.match(rest)) is not None:
        return f"{source.path}.output[{output.group(1)}]{_part_tail(output.group(2))}"
    if rest.startswith(".tool_result"):
        return f"{source.path}.call_id" if rest.endswith("tool_call_id") else f"{source.path}.output"
    return source.path


_OUTPUT_PART = re.compile(r"^\.tool_result\.parts\[(\d+)\](.*)$")
#: A content part's router field → the Responses part's own field.
_PART_TAILS = [
    (".image.url", ".image_url"),
    (".image.detail", ".detail"),
    (".image", ".image_url"),
    (".document.file_id", ".file_id"),
    (".document.url", ".file_url"),
    (".document.filename", ".filename"),
    (".document", ".file_data"),
    (".audio.data", ".input_audio.data"),
    (".audio", ".input_audio.format"),
]


def _part_tail(tail: str) -> str:
    for prefix, replacement in _PART_TAILS:
        if tail.startswith(prefix):
            return replacement
    return tail


def echoed_tools(parsed: ParsedResponses) -> list[dict[str, Any]]:
    """The function tools as the Response object echoes them."""
    echoed = []
    for tool in parsed.body.tools or ():
        echoed.append(
            {
                "type": "function",
                "name": tool.get("name"),
                "description": tool.get("description"),
                "parameters": tool.get("parameters"),
                "strict": tool.get("strict", True),
            }
        )
    return echoed

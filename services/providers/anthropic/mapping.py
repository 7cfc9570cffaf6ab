"""Unified chat request → keyword arguments for `AsyncAnthropic.messages.create`.

Every refusal is an INVALID_ARGUMENT naming the request field, raised before
any upstream call: reason UNSUPPORTED_FEATURE when Anthropic lacks what the
request uses (another candidate may serve it), INVALID_REQUEST when the
request itself is wrong. See the package docstring for the extension keys.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeAlias

from anthropic import transform_schema
from google.protobuf import json_format, struct_pb2

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb
from services.common.errors import invalid_argument, unsupported_feature
from services.common.extensions import ANTHROPIC_OTHER_OPTIONS, ANTHROPIC_TOP_LEVEL_OPTIONS
from services.common.prompt_cache import wire_cache_control
from services.common.reasoning import effort_name, own_reasoning, reasoning_of

PROVIDER = "anthropic"

Request: TypeAlias = pb.ProviderServiceChatRequest | pb.ProviderServiceStreamChatRequest

# Base64 image types the Messages API takes (types/base64_image_source_param.py).
IMAGE_MIME_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

# Request options a caller may pass in extensions["anthropic"], and where they go.
_TOP_LEVEL_OPTIONS = ANTHROPIC_TOP_LEVEL_OPTIONS
_OTHER_OPTIONS = ANTHROPIC_OTHER_OPTIONS
ALLOWED_OPTIONS = (*_TOP_LEVEL_OPTIONS, *_OTHER_OPTIONS)

# Anthropic's smallest thinking budget (ThinkingConfigEnabledParam: "Must be ≥1024").
MIN_THINKING_BUDGET = 1024
# settings.reasoning.effort alone, on a model not listed as adaptive: a manual budget.
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
# The shared efforts as output_config.effort words (Anthropic has no "minimal").
_ADAPTIVE_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}

# JSON-object mode, the way Anthropic's tool-use docs give it: one forced tool whose input is the answer.
JSON_OBJECT_TOOL = "json_object"
_JSON_OBJECT_TOOL_PARAM = {
    "name": JSON_OBJECT_TOOL,
    "description": "Give your whole answer as a JSON object: the input of this tool is the answer.",
    "input_schema": {"type": "object"},
}

# The Messages API takes at most this many cache_control breakpoints per request.
MAX_CACHE_BREAKPOINTS = 4

# GenerationSettings the SDK 2.10 signature has no parameter for. temperature and
# top_p go in the body to models the routing file marks `sampling: true` (the
# router says so in llmmesh-model-capabilities); the rest are dropped and
# reported in the response's extensions.anthropic.ignored_settings.
_UNMAPPED_SETTINGS = ("temperature", "top_p", "seed")
# Anthropic's temperature range ("Ranges from 0.0 to 1.0"); the mesh's goes to 2.
MAX_TEMPERATURE = 1.0


def struct_to_plain(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; whole floats become ints (protobuf has only doubles)."""
    return _integral(json_format.MessageToDict(struct))


def extension_of(holder: Any) -> dict[str, Any]:
    """The "anthropic" entry of an `extensions` Struct field, or {}."""
    field = holder.extensions.fields.get(PROVIDER)
    if field is None:
        return {}
    if field.WhichOneof("kind") != "struct_value":
        raise invalid_argument("extensions.anthropic", "must be an object")
    return struct_to_plain(field.struct_value)


def sampling_sent(request: Request, *, sampling: bool) -> dict[str, float]:
    """The sampling settings that go to the model (top-level body fields, as `extra_body` would put them).

    Only to models that take them (`sampling`), and one of the two:
    Anthropic's docs say to alter temperature or top_p, not both, and its
    newest models refuse both together, so with both set temperature goes
    and top_p is reported as ignored.
    """
    if not sampling or not request.HasField("settings"):
        return {}
    settings = request.settings
    if settings.HasField("temperature"):
        if settings.temperature > MAX_TEMPERATURE:
            raise unsupported_feature(
                "settings.temperature",
                f"Anthropic takes a temperature from 0 to {MAX_TEMPERATURE:g}; {settings.temperature:g} is above it",
            )
        return {"temperature": settings.temperature}
    if settings.HasField("top_p"):
        return {"top_p": settings.top_p}
    return {}


def ignored_settings(request: Request, *, sampling: bool = False) -> list[str]:
    """Names of the settings this request set that did not reach the model."""
    if not request.HasField("settings"):
        return []
    sent = sampling_sent(request, sampling=sampling)
    return [name for name in _UNMAPPED_SETTINGS if request.settings.HasField(name) and name not in sent]


def build_create_kwargs(
    request: Request,
    *,
    default_max_tokens: int,
    adaptive_models: frozenset[str] = frozenset(),
    sampling: bool = False,
) -> dict[str, Any]:
    """The `messages.create` arguments for `request` (without stream and timeout).

    `sampling`: the model takes temperature / top_p (see `sampling_sent`).
    """
    options = extension_of(request)
    for key in options:
        if key not in ALLOWED_OPTIONS:
            raise invalid_argument(
                f"extensions.anthropic.{key}", f"is not a supported option; use one of {', '.join(ALLOWED_OPTIONS)}"
            )
    system, messages = _map_messages(request.messages)
    settings = request.settings
    if settings.logprobs:
        raise unsupported_feature("settings.logprobs", "Anthropic returns no log probabilities")
    if settings.prompt_cache.cached_content:
        raise unsupported_feature(
            "settings.prompt_cache.cached_content", "Anthropic has no explicit caches (Gemini's cachedContents)"
        )
    _check_breakpoints(request, "cache_control" in options)
    # settings.prompt_cache.key (OpenAI's routing key) has no Anthropic field: a hint, served as a no-op.
    kwargs: dict[str, Any] = {
        "model": request.model,
        "max_tokens": settings.max_output_tokens if settings.HasField("max_output_tokens") else default_max_tokens,
        "messages": messages,
    }
    thinking, effort = _thinking(request, kwargs, adaptive=request.model in adaptive_models)
    if "thinking" not in options and thinking is not None:
        options["thinking"] = thinking
    if "effort" not in options and effort is not None:
        options["effort"] = effort
    if request.assistant_prefix:
        _prefill(messages, request.assistant_prefix, thinking=_thinking_on(options.get("thinking")))
    if system:
        kwargs["system"] = system
    if settings.stop:
        kwargs["stop_sequences"] = list(settings.stop)
    output_config = _output_config(settings.response_format)
    if answers_with_json_tool(request):
        _force_json_tool(request, kwargs, thinking=_thinking_on(options.get("thinking")))
    if "effort" in options:
        output_config["effort"] = options["effort"]
    if output_config:
        kwargs["output_config"] = output_config
    if request.tools:
        # Anthropic has no allowed-tools field: a choice limited to some tools sends only those.
        allowed = set(request.tool_choice.allowed_tools)
        kwargs["tools"] = [_tool(tool) for tool in request.tools if not allowed or tool.name in allowed]
    tool_choice = _tool_choice(request, options.get("disable_parallel_tool_use"))
    if tool_choice is not None:
        kwargs["tool_choice"] = tool_choice
    for key in _TOP_LEVEL_OPTIONS:
        if key in options:
            kwargs[key] = options[key]
    # SDK 2.10's create() has no temperature / top_p parameters; the wire takes them, and the adapter
    # posts this body as JSON itself (wire.body_bytes), as create(extra_body=...) would merge them.
    kwargs.update(sampling_sent(request, sampling=sampling))
    metadata = kwargs.get("metadata", {})
    if request.caller.user and isinstance(metadata, dict) and "user_id" not in metadata:
        # The end user, for Anthropic's abuse detection; extensions.anthropic.metadata.user_id wins.
        kwargs["metadata"] = {**metadata, "user_id": request.caller.user}
    return kwargs


def _thinking(request: Request, kwargs: dict[str, Any], *, adaptive: bool) -> tuple[dict[str, Any] | None, str | None]:
    """settings.reasoning → (thinking, output_config.effort); may raise max_tokens to fit the budget.

    A budget is a manual `enabled` budget (at least 1024, below max_tokens; 0
    turns thinking off). An effort alone is adaptive thinking with that effort
    on the models LLMMESH_ANTHROPIC_ADAPTIVE_THINKING_MODELS lists, else a
    manual budget from EFFORT_BUDGETS (every thinking model takes those).
    """
    reasoning = reasoning_of(request)
    if reasoning is None:
        return None, None
    effort = effort_name(reasoning)
    if reasoning.HasField("budget_tokens"):
        budget = reasoning.budget_tokens
        if budget == 0:
            return {"type": "disabled"}, None
        if budget < MIN_THINKING_BUDGET:
            raise unsupported_feature(
                "settings.reasoning.budget_tokens",
                f"Anthropic's smallest thinking budget is {MIN_THINKING_BUDGET} tokens; ask for at least that",
            )
    elif effort is None:
        return None, None
    elif adaptive:
        return {"type": "adaptive"}, _ADAPTIVE_EFFORTS[effort]
    else:
        budget = EFFORT_BUDGETS[effort]
    _fit_budget(request, kwargs, budget)
    return {"type": "enabled", "budget_tokens": budget}, None


def _fit_budget(request: Request, kwargs: dict[str, Any], budget: int) -> None:
    """Anthropic wants budget_tokens below max_tokens (thinking counts toward it)."""
    if budget < kwargs["max_tokens"]:
        return
    if request.settings.HasField("max_output_tokens"):
        raise unsupported_feature(
            "settings.reasoning.budget_tokens",
            f"{budget} is not below settings.max_output_tokens ({kwargs['max_tokens']}), as Anthropic requires; "
            "raise max_output_tokens or lower the budget",
        )
    # No limit was asked for: keep the default room for the answer on top of the thinking.
    kwargs["max_tokens"] = budget + kwargs["max_tokens"]


def _check_breakpoints(request: Request, top_level: bool) -> None:
    """More breakpoints than Anthropic takes is one this candidate cannot serve (another caches on its own)."""
    paths = [
        f"tools[{index}].cache_control" for index, tool in enumerate(request.tools) if tool.HasField("cache_control")
    ]
    paths += [
        f"messages[{index}].content[{part_index}].cache_control"
        for index, message in enumerate(request.messages)
        for part_index, part in enumerate(message.content)
        if part.HasField("cache_control")
    ]
    paths += [
        f"messages[{index}].tool_result.parts[{part_index}].cache_control"
        for index, message in enumerate(request.messages)
        for part_index, part in enumerate(message.tool_result.parts)
        if part.HasField("cache_control")
    ]
    limit = MAX_CACHE_BREAKPOINTS - (1 if top_level else 0)
    if len(paths) > limit:
        raise unsupported_feature(
            paths[limit],
            f"is breakpoint {limit + 1}; Anthropic takes at most {MAX_CACHE_BREAKPOINTS} cache_control "
            "breakpoints per request (extensions.anthropic.cache_control counts as one)",
        )


def _map_messages(messages: Any) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """System text hoisted out; the rest as alternating user/assistant turns.

    A system prompt with a cache breakpoint goes as a list of text blocks,
    the only form that carries cache_control; otherwise as one string.
    """
    system_parts: list[str] = []
    system_blocks: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        path = f"messages[{index}]"
        if message.role == chat_pb2.ROLE_SYSTEM:
            system_parts.append(_system_text(path, message))
            system_blocks.extend(_content_blocks(path, message, allow_images=False))
            continue
        if message.role == chat_pb2.ROLE_TOOL:
            role, blocks = "user", [_tool_result(path, message.tool_result)]
        elif message.role == chat_pb2.ROLE_ASSISTANT:
            role, blocks = "assistant", _assistant_blocks(path, message)
        else:
            role, blocks = "user", _content_blocks(path, message, allow_images=True)
        if not blocks:
            continue
        # Anthropic wants alternating turns: consecutive same-role messages (e.g.
        # several tool results of one turn, or a tool result then user text) merge.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise invalid_argument("messages", "has no user or assistant message; Anthropic needs at least one")
    if any("cache_control" in block for block in system_blocks):
        return system_blocks, turns
    return "\n\n".join(part for part in system_parts if part), turns


def prefill_text(prefix: str) -> str:
    """The prefix as Anthropic takes it: a final assistant turn may not end in whitespace."""
    return prefix.rstrip()


def _prefill(turns: list[dict[str, Any]], prefix: str, *, thinking: bool) -> None:
    """Ends the conversation with the prefix as the assistant's turn, which the model then continues."""
    if thinking:
        raise unsupported_feature("assistant_prefix", "Anthropic takes no assistant prefill with thinking on")
    text = prefill_text(prefix)
    if not text:
        return  # only whitespace was streamed: nothing to continue from
    if turns[-1]["role"] == "assistant":
        raise unsupported_feature(
            "assistant_prefix", "cannot continue when the conversation already ends with the assistant"
        )
    turns.append({"role": "assistant", "content": [{"type": "text", "text": text}]})


def _thinking_on(thinking: Any) -> bool:
    return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")


def _system_text(path: str, message: chat_pb2.Message) -> str:
    texts = []
    for part_index, part in enumerate(message.content):
        if part.WhichOneof("kind") != "text":
            raise unsupported_feature(f"{path}.content[{part_index}]", "Anthropic system prompts take text only")
        texts.append(part.text)
    return "\n".join(texts)


def _content_blocks(path: str, message: chat_pb2.Message, *, allow_images: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part_index, part in enumerate(message.content):
        part_path = f"{path}.content[{part_index}]"
        kind = part.WhichOneof("kind")
        if kind == "reasoning":
            continue  # replayed first, as thinking blocks (`_assistant_blocks`)
        if kind == "text":
            if part.text:  # Anthropic rejects empty text blocks
                blocks.append({"type": "text", "text": part.text})
            elif part.HasField("cache_control") and blocks:
                blocks[-1]["cache_control"] = wire_cache_control(part.cache_control)  # the prefix ends here too
                continue
            else:
                continue
        elif kind == "audio":
            raise unsupported_feature(f"{part_path}.audio", "Anthropic takes no audio input")
        elif kind == "document":
            blocks.append(_document_block(f"{part_path}.document", part.document))
        elif not allow_images:
            raise unsupported_feature(f"{part_path}.image", "Anthropic takes images in user messages only")
        else:
            blocks.append(_image_block(f"{part_path}.image", part.image))
        if part.HasField("cache_control"):
            blocks[-1]["cache_control"] = wire_cache_control(part.cache_control)
    return blocks


def _document_block(path: str, document: chat_pb2.DocumentPart) -> dict[str, Any]:
    """DocumentBlockParam: a PDF as base64, plain text as a text source, a URL, or an uploaded file's id."""
    source = document.WhichOneof("source")
    if source == "url":
        block_source: dict[str, Any] = {"type": "url", "url": document.url}
    elif source == "file_id":
        block_source = {"type": "file", "file_id": document.file_id}
    elif document.mime_type == "text/plain":
        block_source = {"type": "text", "media_type": "text/plain", "data": document.data.decode("utf-8")}
    else:
        encoded = base64.b64encode(document.data).decode("ascii")
        block_source = {"type": "base64", "media_type": "application/pdf", "data": encoded}
    block: dict[str, Any] = {"type": "document", "source": block_source}
    if document.title or document.filename:
        # Anthropic has no filename field: the title names the document to the model.
        block["title"] = document.title or document.filename
    if document.enable_citations:
        block["citations"] = {"enabled": True}
    return block


def _image_block(path: str, image: chat_pb2.ImagePart) -> dict[str, Any]:
    if image.detail in (chat_pb2.IMAGE_DETAIL_LOW, chat_pb2.IMAGE_DETAIL_HIGH):
        raise unsupported_feature(f"{path}.detail", "Anthropic takes no image detail level; leave it unset or AUTO")
    if image.WhichOneof("source") == "data":
        return _base64_image(path, image.mime_type, base64.b64encode(image.data).decode("ascii"))
    if image.url.startswith("data:"):
        header, _, payload = image.url.partition(",")
        mime_type = header[len("data:") :].split(";")[0]
        if ";base64" not in header:
            raise invalid_argument(f"{path}.url", "data: URLs must be base64-encoded")
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument(f"{path}.url", "data: URL payload is not valid base64") from None
        return _base64_image(path, mime_type, payload)
    return {"type": "image", "source": {"type": "url", "url": image.url}}


def _base64_image(path: str, mime_type: str, data: str) -> dict[str, Any]:
    if mime_type not in IMAGE_MIME_TYPES:
        raise unsupported_feature(
            f"{path}.mime_type", f"{mime_type!r} is not an image type Anthropic takes; use one of {IMAGE_MIME_TYPES}"
        )
    return {"type": "image", "source": {"type": "base64", "media_type": mime_type, "data": data}}


def _thinking_blocks(message: chat_pb2.Message) -> list[dict[str, Any]]:
    """This provider's reasoning parts as thinking / redacted_thinking blocks; other providers' are dropped."""
    blocks: list[dict[str, Any]] = []
    for part in own_reasoning(message, PROVIDER):
        if part.redacted_data:
            blocks.append({"type": "redacted_thinking", "data": part.redacted_data})
        else:
            blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    return blocks


def _assistant_blocks(path: str, message: chat_pb2.Message) -> list[dict[str, Any]]:
    # Thinking blocks go first, unchanged: Anthropic checks their signatures. Reasoning parts
    # are the contract's form; extensions.anthropic.thinking the older one, read when there are none.
    own = _thinking_blocks(message)
    thinking = own or extension_of(message).get("thinking", [])
    if not isinstance(thinking, list) or not all(
        isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking") for block in thinking
    ):
        raise invalid_argument(
            f"{path}.extensions.anthropic.thinking", "must be the list of thinking blocks a response returned"
        )
    blocks: list[dict[str, Any]] = [dict(block) for block in thinking]
    blocks.extend(_content_blocks(path, message, allow_images=False))
    if message.refusal:
        # The Messages API has no refusal block: what the assistant said, as text.
        blocks.append({"type": "text", "text": message.refusal})
    for call_index, call in enumerate(message.tool_calls):
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _arguments(f"{path}.tool_calls[{call_index}].arguments_json", call.arguments_json),
            }
        )
    return blocks


def _arguments(path: str, text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise invalid_argument(path, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid_argument(path, "must be a JSON object; Anthropic tool input is an object")
    return value


def _tool_result(path: str, result: chat_pb2.ToolResult) -> dict[str, Any]:
    content: str | list[dict[str, Any]] = result.content
    if result.parts:
        # ToolResultBlockParam content as text and image blocks, `content` first.
        blocks = [{"type": "text", "text": result.content}] if result.content else []
        for index, part in enumerate(result.parts):
            if part.WhichOneof("kind") == "image":
                blocks.append(_image_block(f"{path}.tool_result.parts[{index}].image", part.image))
            elif part.text:  # Anthropic rejects empty text blocks
                blocks.append({"type": "text", "text": part.text})
            elif not blocks:
                continue
            if part.HasField("cache_control"):
                # The inner block's cache_control (an empty text part's goes on the block before it).
                blocks[-1]["cache_control"] = wire_cache_control(part.cache_control)
        content = blocks
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result.tool_call_id, "content": content}
    if result.is_error:
        block["is_error"] = True
    return block


def _tool(tool: chat_pb2.ToolDefinition) -> dict[str, Any]:
    schema = struct_to_plain(tool.parameters) if tool.parameters.fields else {}
    schema.setdefault("type", "object")
    mapped: dict[str, Any] = {"name": tool.name, "input_schema": schema}
    if tool.description:
        mapped["description"] = tool.description
    if tool.HasField("strict"):
        mapped["strict"] = tool.strict
    if tool.HasField("cache_control"):
        mapped["cache_control"] = wire_cache_control(tool.cache_control)
    return mapped


def _disable_parallel(request: Request, option: Any) -> bool | None:
    """tool_choice.parallel_tool_calls (or the older extension option) as `disable_parallel_tool_use`."""
    if option is not None and not isinstance(option, bool):
        raise invalid_argument("extensions.anthropic.disable_parallel_tool_use", "must be true or false")
    if not request.tool_choice.HasField("parallel_tool_calls"):
        return option  # type: ignore[no-any-return]
    disable = not request.tool_choice.parallel_tool_calls
    if option is not None and option != disable:
        raise invalid_argument(
            "extensions.anthropic.disable_parallel_tool_use",
            "contradicts tool_choice.parallel_tool_calls; set only the shared field",
        )
    return disable


def _tool_choice(request: Request, option: Any) -> dict[str, Any] | None:
    mode = request.tool_choice.mode
    disable_parallel = _disable_parallel(request, option)
    if not request.tools:
        if mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED:
            raise invalid_argument("tool_choice.mode", "is REQUIRED but the request has no tools")
        return None
    if mode == chat_pb2.TOOL_CHOICE_MODE_NONE:
        return {"type": "none"}
    if mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED:
        choice: dict[str, Any] = {"type": "any"}
    elif mode == chat_pb2.TOOL_CHOICE_MODE_NAMED:
        choice = {"type": "tool", "name": request.tool_choice.name}
    elif mode == chat_pb2.TOOL_CHOICE_MODE_AUTO or disable_parallel is not None:
        choice = {"type": "auto"}
    else:
        return None
    if disable_parallel is not None:
        choice["disable_parallel_tool_use"] = disable_parallel
    return choice


def _output_config(response_format: chat_pb2.ResponseFormat) -> dict[str, Any]:
    if response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        # The SDK's own transform makes a schema fit structured outputs (adds
        # additionalProperties: false, moves unsupported keywords to descriptions).
        schema = transform_schema(struct_to_plain(response_format.json_schema))
        return {"format": {"type": "json_schema", "schema": schema}}
    return {}


def answers_with_json_tool(request: Request) -> bool:
    """JSON-object mode: Anthropic has no schema-less JSON format, so a forced tool carries the answer."""
    return request.settings.response_format.type == chat_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT


def _force_json_tool(request: Request, kwargs: dict[str, Any], *, thinking: bool) -> None:
    field = "settings.response_format.type"
    if request.tools:
        raise unsupported_feature(
            field, "Anthropic's JSON-object mode forces a tool of its own, so it cannot offer the request's tools too"
        )
    if thinking:
        raise unsupported_feature(field, "Anthropic's JSON-object mode forces a tool, which extended thinking forbids")
    kwargs["tools"] = [_JSON_OBJECT_TOOL_PARAM]
    kwargs["tool_choice"] = {"type": "tool", "name": JSON_OBJECT_TOOL}


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value

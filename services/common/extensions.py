"""Provider request options callers may send in `extensions`, per adapter kind: one list for all.

The adapters pass these on (and refuse any other key); the router checks a
request's `extensions` against the same lists before its first attempt
(`services/router/extensions.py`), so a bad option is refused once, naming
its field, instead of failing an attempt on every candidate.
"""

from __future__ import annotations

from types import MappingProxyType

#: `extensions["openai"]` keys passed as-is. `n`, `stream`, `stream_options`,
#: `functions`/`function_call`, `audio` and `modalities` stay out: they would change the answer's shape.
OPENAI_REQUEST_OPTIONS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "service_tier",
        "parallel_tool_calls",
        "metadata",
        "store",
        "verbosity",
        "prediction",
        "web_search_options",
    }
)
#: `extensions["openai"]` keys the OpenAI adapter reads itself.
OPENAI_ADAPTER_OPTIONS = frozenset({"json_schema_strict", "extra_body"})

#: `extensions["anthropic"]` keys that become top-level `messages.create` arguments.
ANTHROPIC_TOP_LEVEL_OPTIONS = ("thinking", "metadata", "service_tier", "inference_geo", "cache_control")
#: `extensions["anthropic"]` keys the Anthropic adapter places itself.
ANTHROPIC_OTHER_OPTIONS = ("effort", "disable_parallel_tool_use")

#: `extensions["google"]` keys passed through to GenerateContentConfig.
GOOGLE_REQUEST_OPTIONS = (
    "cached_content",
    "frequency_penalty",
    "presence_penalty",
    "response_schema",
    "safety_settings",
    "thinking_config",
    "top_k",
)

#: Every key each kind accepts; None: not checked (the mock reads none and ignores them).
OPTIONS_BY_KIND: MappingProxyType[str, frozenset[str] | None] = MappingProxyType(
    {
        "openai": OPENAI_REQUEST_OPTIONS | OPENAI_ADAPTER_OPTIONS,
        "anthropic": frozenset((*ANTHROPIC_TOP_LEVEL_OPTIONS, *ANTHROPIC_OTHER_OPTIONS)),
        "google": frozenset(GOOGLE_REQUEST_OPTIONS),
        "mock": None,
    }
)

#: Provider wire names the adapters fill from the shared request: an option under one of
#: these names would fight the mapped value, so the caller is sent to the shared field.
MAPPED_FIELDS = MappingProxyType(
    {
        "model": "model",
        "messages": "messages",
        "contents": "messages",
        "system": "messages (a ROLE_SYSTEM message)",
        "system_instruction": "messages (a ROLE_SYSTEM message)",
        "tools": "tools",
        "tool_choice": "tool_choice",
        "tool_config": "tool_choice",
        "temperature": "settings.temperature",
        "top_p": "settings.top_p",
        "seed": "settings.seed",
        "max_tokens": "settings.max_output_tokens",
        "max_completion_tokens": "settings.max_output_tokens",
        "max_output_tokens": "settings.max_output_tokens",
        "stop": "settings.stop",
        "stop_sequences": "settings.stop",
        "response_format": "settings.response_format",
        "response_mime_type": "settings.response_format",
        "output_config": "settings.response_format / settings.reasoning",
        "stream": "StreamChat",
        "stream_options": "StreamChat",
        "n": "routing.strategy FANOUT_ALL",
    }
)

"""The Anthropic adapter: ProviderService on the official `anthropic` SDK (Messages API).

Run it with `python -m services.providers.anthropic`. Settings:

    ANTHROPIC_API_KEY                      required; the process exits 2 without it
    LLMMESH_ANTHROPIC_BASE_URL             upstream base URL; else ANTHROPIC_BASE_URL; else the SDK default
    LLMMESH_ANTHROPIC_DEFAULT_MAX_TOKENS   max_tokens when a request sets none (Anthropic requires it); 4096
    LLMMESH_MODELS                         served models; else DEFAULT_MODELS below

Provider-only data lives under the key "anthropic" of the `extensions` fields:

Request options, `request.extensions["anthropic"]` (allowlist; any other key is
INVALID_ARGUMENT naming `extensions.anthropic.<key>`):

    thinking                   e.g. {"type": "adaptive"} or {"type": "enabled", "budget_tokens": 2048}
    effort                     "low" | "medium" | "high" | "xhigh" | "max"  → output_config.effort
    metadata                   {"user_id": "..."}
    service_tier               "auto" | "standard_only"
    inference_geo              region string
    cache_control              top-level prompt-cache marker, e.g. {"type": "ephemeral"}
    disable_parallel_tool_use  bool, folded into tool_choice (prefer the shared
                               tool_choice.parallel_tool_calls; the two may not contradict)

Assistant messages, `Message.extensions["anthropic"]`:

    thinking   ordered list of {"type": "thinking", "thinking": str, "signature": str} and
               {"type": "redacted_thinking", "data": str} blocks. Responses fill it; send it back
               unchanged on the same assistant message and the blocks are replayed first in
               that turn's content, as Anthropic requires for tool use with thinking.

Prompt caching: `cache_control` on content parts (system prompt parts
included: the system prompt then goes as a list of text blocks) and on tools
becomes each block's `cache_control` ({"type": "ephemeral", "ttl": "5m" | "1h"});
more than 4 breakpoints, or `settings.prompt_cache.cached_content` (Gemini's
explicit caches), are refused (UNSUPPORTED_FEATURE); `settings.prompt_cache.key`
has no Anthropic field and is a no-op. Usage: `cache_creation_input_tokens` is
`Usage.cache_write_input_tokens`, `cache_read_input_tokens` is
`cached_input_tokens`, both included in `input_tokens`.

`assistant_prefix` (set by the router to continue a stream mid-answer) becomes a
final assistant turn (prefill) without its trailing whitespace, which Anthropic
rejects; the stream then carries only the continuation, its leading whitespace
dropped once. Refused (UNSUPPORTED_FEATURE) with thinking on, which Anthropic
does not allow with prefill.

Responses, `ProviderServiceChatResponse.extensions["anthropic"]` and
`ProviderStreamFinal.extensions["anthropic"]`:

    stop_reason      the raw Anthropic stop reason (e.g. "pause_turn", "refusal")
    stop_sequence    the stop sequence that matched, when one did
    stop_details     refusal details ({"type": "refusal", "category": ..., "explanation": ...});
                     a stop_reason "refusal" also sets Message.refusal (streams: one
                     ChatDelta.refusal) and FINISH_REASON_REFUSAL
    ignored_settings settings set on the request that did not reach the model: "seed"
                     always; "temperature" and "top_p" unless the router said the model
                     takes them (routing file `capabilities.sampling: true`, sent as
                     llmmesh-model-capabilities); then one of them goes in the body,
                     temperature when both are set (Anthropic: alter one, not both),
                     and a temperature above 1 is refused (UNSUPPORTED_FEATURE)
    thinking         (stream final only) the thinking blocks of the streamed turn, to send back
                     as the assistant message's extensions; unary responses carry them on
                     `message.extensions` instead
"""

"""Builds the Anthropic adapter from its settings; `main()` runs the process."""

from __future__ import annotations

import os

import anthropic
from pydantic import Field

from services.common.settings import ConfigError, load_settings
from services.providers.anthropic.adapter import AnthropicAdapter
from services.providers.anthropic.mapping import PROVIDER
from services.providers.runner import ProviderSettings, run_provider

API_KEY_VARIABLE = "ANTHROPIC_API_KEY"
# The SDK's standard variable; LLMMESH_ANTHROPIC_BASE_URL wins over it.
SDK_BASE_URL_VARIABLE = "ANTHROPIC_BASE_URL"


class AnthropicSettings(ProviderSettings):
    """Anthropic-only settings (LLMMESH_ANTHROPIC_*); the key stays in ANTHROPIC_API_KEY."""

    anthropic_base_url: str = Field("", description="Upstream base URL; else ANTHROPIC_BASE_URL; else the SDK's.")
    anthropic_default_max_tokens: int = Field(
        4096, ge=1, le=1_000_000, description="max_tokens for requests that set none (Anthropic requires one)."
    )
    anthropic_adaptive_thinking_models: str = Field(
        "",
        description=(
            "Comma-separated models that take adaptive thinking: settings.reasoning.effort alone becomes "
            "thinking {type: adaptive} with output_config.effort there, a manual thinking budget elsewhere."
        ),
    )


def build_client(settings: AnthropicSettings, api_key: str) -> anthropic.AsyncAnthropic:
    """The process's one SDK client: retries off (the router owns them), prompts kept out of SDK spans."""
    base_url = settings.anthropic_base_url or os.environ.get(SDK_BASE_URL_VARIABLE) or None
    return anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        # Given explicitly so ANTHROPIC_OPEN_TELEMETRY_* cannot switch prompt capture on.
        open_telemetry={"traces": {"content_mode": "metadata_only"}},
    )


def build_anthropic_adapter(_: ProviderSettings) -> AnthropicAdapter:
    settings = load_settings(AnthropicSettings)
    api_key = os.environ.get(API_KEY_VARIABLE, "").strip()
    if not api_key:
        raise ConfigError(f"{API_KEY_VARIABLE} is not set; the anthropic adapter needs an Anthropic API key")
    return AnthropicAdapter(
        build_client(settings, api_key),
        models=settings.model_names,
        default_max_tokens=settings.anthropic_default_max_tokens,
        instance=settings.provider_instance or PROVIDER,
        adaptive_thinking_models=frozenset(
            name.strip() for name in settings.anthropic_adaptive_thinking_models.split(",") if name.strip()
        ),
    )


def main() -> None:
    run_provider(PROVIDER, build_anthropic_adapter)

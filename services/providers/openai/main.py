"""Builds the OpenAI adapter from the environment.

Variables:

* OPENAI_API_KEY — required; the process exits 2 naming it when unset.
  For keyless local servers (Ollama, llama.cpp, vLLM without --api-key) set
  LLMMESH_OPENAI_ALLOW_NO_KEY=true instead: the SDK then sends the
  placeholder `NO_KEY_PLACEHOLDER` as its bearer token, which such servers
  ignore.
* OPENAI_BASE_URL — the SDK's own variable for the upstream base URL;
  LLMMESH_OPENAI_BASE_URL overrides it (e.g. http://vllm:8000/v1).
* LLMMESH_OPENAI_MAX_TOKENS_FIELD — `max_completion_tokens` (default) or
  `max_tokens` for older compatible servers that only know the latter.
* LLMMESH_OPENAI_STREAM_USAGE — send `stream_options.include_usage`
  (default true) and fail a stream whose usage chunk never comes; turn off
  for servers that reject stream_options or never send usage (their streams
  then report usage 0).
* LLMMESH_PROVIDER_INSTANCE — e.g. `vllm-local` → service
  `llmmesh-provider-vllm-local`; the provider kind stays "openai".
* OPENAI_ORG_ID, OPENAI_PROJECT_ID, OPENAI_CUSTOM_HEADERS are read by the SDK
  itself.
"""

from __future__ import annotations

import os
from typing import Literal

import httpx2
from openai import AsyncOpenAI
from pydantic import Field

from services.common.settings import ConfigError, load_settings
from services.providers.openai.adapter import OpenAIAdapter
from services.providers.runner import ProviderSettings, run_provider

KEY_VARIABLE = "OPENAI_API_KEY"
BASE_URL_VARIABLE = "OPENAI_BASE_URL"
NO_KEY_PLACEHOLDER = "llmmesh-no-key"


class OpenAISettings(ProviderSettings):
    """OpenAI-only settings (LLMMESH_OPENAI_*)."""

    openai_base_url: str = Field("", description="Overrides OPENAI_BASE_URL, e.g. http://127.0.0.1:8000/v1.")
    openai_allow_no_key: bool = Field(False, description="Send a placeholder key to keyless local servers.")
    openai_max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = Field(
        # max_completion_tokens is what the SDK documents; max_tokens is deprecated
        # there and refused by OpenAI's reasoning (o-series) models.
        "max_completion_tokens",
        description="Request field that carries GenerationSettings.max_output_tokens.",
    )
    openai_stream_usage: bool = Field(
        True,
        description=(
            "Ask for usage in streams (stream_options.include_usage); a stream whose usage chunk never comes "
            "then fails as STREAM_TRUNCATED. Off for servers that never send usage."
        ),
    )


def _api_key(settings: OpenAISettings) -> str:
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if key:
        return key
    if settings.openai_allow_no_key:
        return NO_KEY_PLACEHOLDER
    raise ConfigError(
        f"{KEY_VARIABLE} is not set; set it to the provider key, "
        "or set LLMMESH_OPENAI_ALLOW_NO_KEY=true for a keyless OpenAI-compatible server"
    )


def build_openai_adapter(_: ProviderSettings) -> OpenAIAdapter:
    settings = load_settings(OpenAISettings)
    key = _api_key(settings)
    base_url = settings.openai_base_url or os.environ.get(BASE_URL_VARIABLE) or None
    if base_url:
        try:
            scheme = httpx2.URL(base_url).scheme
        except Exception as error:  # noqa: BLE001 - any parse failure is a config error
            raise ConfigError(f"LLMMESH_OPENAI_BASE_URL / {BASE_URL_VARIABLE}: not a URL ({error})") from None
        if scheme not in ("http", "https"):
            raise ConfigError(f"LLMMESH_OPENAI_BASE_URL / {BASE_URL_VARIABLE}: must be http(s)://, got {base_url!r}")
    # One client for the life of the process; retries off: the router owns them.
    client = AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0)
    return OpenAIAdapter(
        client,
        instance=settings.provider_instance or "openai",
        models=settings.model_names,
        max_tokens_field=settings.openai_max_tokens_field,
        stream_usage=settings.openai_stream_usage,
    )


def main() -> None:
    run_provider("openai", build_openai_adapter)

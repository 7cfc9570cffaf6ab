"""Builds the Gemini adapter from its settings and key variables.

Key: GOOGLE_API_KEY or GEMINI_API_KEY. When both are set GOOGLE_API_KEY wins,
the precedence google-genai itself documents (get_env_api_key), so the
adapter and the SDK never disagree about which key is in use.

LLMMESH_GOOGLE_BASE_URL: upstream base URL (default Google's endpoint), for
proxies, regional endpoints and tests; passed as HttpOptions.base_url.
LLMMESH_GOOGLE_API_VERSION: "v1beta" by default. google-genai 3.3.0 calls
/v1 unless told otherwise, but function calling with JSON Schema
(parametersJsonSchema), responseJsonSchema and thought signatures are
documented on v1beta, the version Google's own Gemini API docs use.
"""

from __future__ import annotations

import os

import structlog
from pydantic import Field

from services.common.settings import ConfigError, load_settings
from services.providers.google.adapter import GoogleAdapter
from services.providers.runner import ProviderSettings, run_provider

#: Checked in this order; the first non-empty one is used.
KEY_VARIABLES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")


class GoogleSettings(ProviderSettings):
    """Gemini-only settings."""

    google_base_url: str = Field(
        "https://generativelanguage.googleapis.com",
        pattern=r"^https?://\S+$",
        description="Gemini API base URL (proxies, regional endpoints, tests).",
    )
    google_api_version: str = Field("v1beta", pattern=r"^v\d+(alpha|beta)?\d*$", description="Gemini API version.")


def api_key_from_env() -> str:
    """The key to use, or ConfigError naming the variables to set."""
    present = [name for name in KEY_VARIABLES if os.environ.get(name, "").strip()]
    if not present:
        raise ConfigError("GEMINI_API_KEY (or GOOGLE_API_KEY) is not set; the Gemini adapter needs an API key")
    if len(present) > 1:
        # Names only: a key value never reaches a log line.
        structlog.get_logger(__name__).warning("both key variables set; using GOOGLE_API_KEY", variables=present)
    return os.environ[present[0]].strip()


def build_google_adapter(_: ProviderSettings) -> GoogleAdapter:
    settings = load_settings(GoogleSettings)
    return GoogleAdapter(
        api_key=api_key_from_env(),
        base_url=settings.google_base_url,
        api_version=settings.google_api_version,
        models=settings.model_names,
        instance=settings.provider_instance or "google",
        max_connections=settings.max_in_flight,
    )


def main() -> None:
    run_provider("google", build_google_adapter)

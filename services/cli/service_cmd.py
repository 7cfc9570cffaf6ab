"""`llmmesh router`, `llmmesh provider <kind>`, `llmmesh agent-server`: run one service process.

Their `--help` lists the LLMMESH_* settings each reads, from the settings
classes themselves (services.common.settings.setting_docs), so it cannot
fall behind the code. docs/settings.md has every variable of every process.
"""

from __future__ import annotations

import argparse
import importlib

from services.common.settings import settings_help as format_settings

# The settings classes each service command loads, by module and class name.
_TELEMETRY = ("services.common.telemetry", "TelemetrySettings")
_SETTINGS: dict[str, list[tuple[str, str]]] = {
    "router": [("services.router.main", "RouterSettings"), ("services.common.consul_discovery.watch", "WatchSettings")],
    "agent-server": [
        ("services.agent.main", "AgentSettings"),
        ("services.common.consul_discovery.watch", "WatchSettings"),
    ],
    "provider": [("services.providers.runner", "ProviderSettings")],
}
_PROVIDER_SETTINGS = {
    "mock": "MockSettings",
    "openai": "OpenAISettings",
    "anthropic": "AnthropicSettings",
    "google": "GoogleSettings",
}
_REGISTRATION = ("services.common.consul_discovery.registration", "RegistrationSettings")
_KEYS = {
    "openai": "OPENAI_API_KEY (LLMMESH_OPENAI_ALLOW_NO_KEY=true for keyless servers)",
    "anthropic": "ANTHROPIC_API_KEY",
    "google": "GOOGLE_API_KEY, else GEMINI_API_KEY",
}


def router(_: argparse.Namespace) -> None:
    importlib.import_module("services.router.main").main()


def provider(args: argparse.Namespace) -> None:
    importlib.import_module(f"services.providers.{args.kind}.main").main()


def agent(_: argparse.Namespace) -> None:
    importlib.import_module("services.agent.main").main()


def settings_help(command: str, kind: str | None = None) -> str:
    """The settings `command` reads, one per line with its default, for --help."""
    classes = list(_SETTINGS[command])
    if command == "provider" and kind is not None:
        classes[0] = (f"services.providers.{kind}.main", _PROVIDER_SETTINGS[kind])
    if command == "provider":
        classes.append(_REGISTRATION)
    classes.append(_TELEMETRY)
    lines = [format_settings([getattr(importlib.import_module(module), name) for module, name in classes])]
    if command == "provider":
        key = _KEYS.get(kind or "", "each real adapter's own key variable (e.g. OPENAI_API_KEY)")
        lines.append(f"  API key: {key}" if kind != "mock" else "  API key: none (the mock needs no key)")
    lines.append("Also the standard OTEL_* variables; every variable of every process: docs/settings.md")
    return "\n".join(lines)

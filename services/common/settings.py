"""Process settings from LLMMESH_* environment variables (pydantic-settings).

Each service extends `ServiceSettings` with its own fields. `load_settings`
turns validation failures into a `ConfigError` that names the variable.
"""

from __future__ import annotations

import errno
import inspect
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LLMMESH_"


class ConfigError(Exception):
    """Bad configuration: the process must refuse to start and say why."""


class ServiceSettings(BaseSettings):
    """Settings every llmmesh process reads."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 in containers.")
    port: int = Field(
        0,
        ge=0,
        le=65535,
        description="gRPC port; 0 picks a free one. Each service sets its own default (below).",
        json_schema_extra={"default_shown": "per service"},
    )
    grace_seconds: float = Field(10.0, ge=0, le=3600, description="Time in-flight calls get to finish on shutdown.")
    drain_seconds: float = Field(
        0.0,
        ge=0,
        le=600,
        description="Time between NOT_SERVING (and deregistration) and refusing new calls.",
    )
    max_connection_age_seconds: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Clients get GOAWAY after this (±10%) and reconnect, spreading over new replicas; 0: never.",
    )
    max_connection_age_grace_seconds: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Time calls in flight on an aged connection get to finish before it closes.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    ready_file: str = Field("", description="If set, the bound port is written here as JSON once SERVING.")


_S = TypeVar("_S", bound=BaseSettings)


@dataclass(frozen=True)
class SettingDoc:
    """One field of a settings class as a person reads it: the variables, default and meaning."""

    names: tuple[str, ...]  # any one of these environment variables sets it
    field: str
    owner: type  # the class that declares the field
    required: bool
    default: str  # as shown to people; "" when there is none
    description: str


def setting_docs(cls: type[BaseSettings]) -> list[SettingDoc]:
    """Every field of `cls`, inherited ones included, with the class that declares it.

    The one place that turns a settings class into variable names (aliases
    honoured): `--help`, docs/settings.md and the Kubernetes check read it.
    """
    prefix = str(cls.model_config.get("env_prefix", ""))
    docs = []
    for name, info in cls.model_fields.items():
        owner = next(base for base in cls.__mro__ if name in inspect.get_annotations(base))
        alias = info.validation_alias or info.alias
        if isinstance(alias, str):
            names: tuple[str, ...] = (alias.upper(),)
        elif isinstance(alias, AliasChoices):
            names = tuple(choice.upper() for choice in alias.choices if isinstance(choice, str))
        else:
            names = ((prefix + name).upper(),)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown = extra.get("default_shown")
        default = str(shown) if shown is not None else _shown_default(info.get_default(call_default_factory=True))
        description = info.description or ""
        choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal else ()
        if choices:
            description = (description + " " if description else "") + "One of: " + ", ".join(map(str, choices)) + "."
        docs.append(SettingDoc(names, name, owner, info.is_required(), default, description))
    return docs


def settings_help(classes: Sequence[type[BaseSettings]]) -> str:
    """The variables of `classes` for --help: one per line with its default, then its meaning."""
    lines = ["settings (environment variables; unset ones take the default shown):"]
    seen: set[tuple[str, ...]] = set()
    for cls in classes:
        # The class's own settings first, then the shared ones it inherits.
        for doc in sorted(setting_docs(cls), key=lambda doc: cls.__mro__.index(doc.owner)):
            if doc.names in seen:
                continue
            seen.add(doc.names)
            default = f" [default: {doc.default}]" if doc.default else ""
            lines.append(f"  {' / '.join(doc.names)}{default}")
            if doc.description:
                lines += textwrap.wrap(doc.description, 88, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def _shown_default(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def load_settings(cls: type[_S]) -> _S:
    """Reads `cls` from the environment or raises ConfigError naming each bad variable."""
    try:
        return cls()
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            name = ENV_PREFIX + "_".join(str(part) for part in issue["loc"]).upper()
            problems.append(f"{name}: {issue['msg']} (got {issue.get('input')!r})")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


def listen_error(
    address: str, error: OSError, port_setting: str = "LLMMESH_PORT", host_setting: str = "LLMMESH_HOST"
) -> ConfigError:
    """One line saying which address could not be listened on, why, and which setting to change."""
    if error.errno == errno.EADDRINUSE:
        return ConfigError(
            f"cannot listen on {address}: the port is already in use (another llmmesh process?); "
            f"stop it, or set {port_setting} to a free port (0 picks one)"
        )
    return ConfigError(
        f"cannot listen on {address}: {error.strerror or error}; check {host_setting} and {port_setting}"
    )

"""Process settings from LLMMESH_* environment variables (pydantic-settings).

Each service extends `ServiceSettings` with its own fields. `load_settings`
turns validation failures into a `ConfigError` that names the variable.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LLMMESH_"


class ConfigError(Exception):
    """Bad configuration: the process must refuse to start and say why."""


class ServiceSettings(BaseSettings):
    """Settings every llmmesh process reads."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 in containers.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
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

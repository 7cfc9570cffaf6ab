"""CORS on the HTTP door, so browser clients can call it: off unless origins are listed.

Starlette's CORSMiddleware answers preflights (`OPTIONS` with
`Access-Control-Request-Method`) and adds the allow headers to answers for
the listed origins only; any other origin gets no CORS headers, so the
browser refuses to hand it the answer. Credentials mode stays off: callers
authenticate with `Authorization: Bearer`, which a preflight allows like
any other header, and no cookies are involved.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from services.common.settings import ENV_PREFIX

# What browser code may read from answers: request id, the mesh's attempts, and what retries need.
EXPOSED_HEADERS = (
    "x-request-id",
    "x-llmmesh-attempts",
    "x-llmmesh-provider",
    "x-llmmesh-error-reason",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
)


class CorsSettings(BaseSettings):
    """CORS for the OpenAI-compatible HTTP door (LLMMESH_HTTP_CORS_*)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    http_cors_origins: str = Field(
        "",
        description="Comma-separated browser origins allowed to call the HTTP door (https://app.example.com); "
        "`*` for any; empty: CORS off.",
    )
    http_cors_max_age_seconds: int = Field(600, ge=0, le=86_400, description="How long browsers cache a preflight.")

    @field_validator("http_cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        for origin in _split(value):
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.endswith("/")):
                raise ValueError(f"{origin!r} is not an origin; write scheme://host[:port] with no path, or *")
        return value

    @property
    def cors_origins(self) -> list[str]:
        return _split(self.http_cors_origins)


def _split(value: str) -> list[str]:
    return [origin.strip() for origin in value.split(",") if origin.strip()]


def cors_middleware(settings: CorsSettings | None) -> list[Middleware]:
    """The middleware list for the door: empty when no origins are configured."""
    if settings is None or not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=settings.http_cors_max_age_seconds,
        )
    ]

"""TLS and mutual TLS for every hop, from PEM files named in LLMMESH_TLS_* settings.

One set of files per process, the usual shape of an internal mesh with one CA:

* `LLMMESH_TLS_CERT_FILE` / `LLMMESH_TLS_KEY_FILE`: this process's identity.
  A server with both serves TLS; on outbound channels the same pair is the
  client certificate for mTLS (issue it with serverAuth and clientAuth).
* `LLMMESH_TLS_CA_FILE`: the CA bundle peers are checked against. Outbound
  channels use TLS when it is set; a server with `LLMMESH_TLS_CLIENT_AUTH=require`
  refuses clients without a certificate from it.
* `LLMMESH_TLS_SERVER_NAME`: the name expected in servers' certificates when
  it differs from the dialled host (e.g. dialling pod IPs).

Nothing set: plaintext, the local default (loopback only; the server warns
when it binds another address without TLS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import ENV_PREFIX, ConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost", "[::1]"})


class TLSSettings(BaseSettings):
    """TLS files and modes (LLMMESH_TLS_*); mixed into each process's settings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    tls_cert_file: str = Field("", description="PEM certificate chain of this process (server, and client for mTLS).")
    tls_key_file: str = Field("", description="PEM private key for tls_cert_file.")
    tls_ca_file: str = Field("", description="PEM CA bundle that peers' certificates are checked against.")
    tls_client_auth: Literal["none", "require"] = Field(
        "none", description="require: servers refuse clients without a certificate from the CA (mTLS)."
    )
    tls_server_name: str = Field("", description="Name expected in servers' certificates; empty: the dialled host.")


@dataclass(frozen=True)
class ChannelSecurity:
    """How outbound channels connect: credentials (None: plaintext) and channel options."""

    credentials: grpc.ChannelCredentials | None = None
    options: tuple[tuple[str, Any], ...] = ()
    description: str = "plaintext"

    @property
    def secure(self) -> bool:
        return self.credentials is not None


PLAINTEXT = ChannelSecurity()


def server_credentials(
    settings: TLSSettings, *, extra_client_ca: tuple[str, str] = ("", "")
) -> grpc.ServerCredentials | None:
    """TLS server credentials, or None for plaintext; ConfigError naming the setting when files are wrong.

    `extra_client_ca` (setting name, PEM file) adds a CA whose client certificates
    are accepted too (the Consul agents' own CA, for their health checks).
    """
    if not settings.tls_cert_file and not settings.tls_key_file:
        if settings.tls_client_auth == "require":
            raise ConfigError(
                "LLMMESH_TLS_CLIENT_AUTH=require needs LLMMESH_TLS_CERT_FILE and LLMMESH_TLS_KEY_FILE (mTLS is TLS first)"
            )
        return None
    if not settings.tls_cert_file or not settings.tls_key_file:
        missing = "LLMMESH_TLS_CERT_FILE" if not settings.tls_cert_file else "LLMMESH_TLS_KEY_FILE"
        raise ConfigError(f"{missing} is empty; TLS needs both a certificate and its key")
    certificate = _read("LLMMESH_TLS_CERT_FILE", settings.tls_cert_file, b"CERTIFICATE")
    key = _read("LLMMESH_TLS_KEY_FILE", settings.tls_key_file, b"PRIVATE KEY")
    require_client = settings.tls_client_auth == "require"
    roots = None
    if settings.tls_ca_file:
        roots = _read("LLMMESH_TLS_CA_FILE", settings.tls_ca_file, b"CERTIFICATE")
    elif require_client:
        raise ConfigError("LLMMESH_TLS_CLIENT_AUTH=require needs LLMMESH_TLS_CA_FILE to check client certificates")
    extra_setting, extra_file = extra_client_ca
    if extra_file:
        if not require_client:
            raise ConfigError(f"{extra_setting} adds client certificates: it needs LLMMESH_TLS_CLIENT_AUTH=require")
        roots = (roots or b"").rstrip(b"\n") + b"\n" + _read(extra_setting, extra_file, b"CERTIFICATE")
    return grpc.ssl_server_credentials(
        [(key, certificate)], root_certificates=roots, require_client_auth=require_client
    )


def channel_security(settings: TLSSettings) -> ChannelSecurity:
    """Outbound TLS when a CA is configured, presenting this process's certificate when it has one."""
    if not settings.tls_ca_file:
        return PLAINTEXT
    roots = _read("LLMMESH_TLS_CA_FILE", settings.tls_ca_file, b"CERTIFICATE")
    key = certificate = None
    if settings.tls_cert_file and settings.tls_key_file:
        certificate = _read("LLMMESH_TLS_CERT_FILE", settings.tls_cert_file, b"CERTIFICATE")
        key = _read("LLMMESH_TLS_KEY_FILE", settings.tls_key_file, b"PRIVATE KEY")
    options: Sequence[tuple[str, Any]] = ()
    if settings.tls_server_name:
        options = (("grpc.ssl_target_name_override", settings.tls_server_name),)
    return ChannelSecurity(
        credentials=grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=certificate
        ),
        options=tuple(options),
        description="mTLS" if certificate else "TLS",
    )


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _read(setting: str, path: str, marker: bytes) -> bytes:
    """The file's bytes; refuses unreadable files and files that are not the PEM kind expected."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{setting}={path}: cannot read: {error.strerror}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise ConfigError(f"{setting}={path}: not a PEM file with a {marker.decode()} block")
    return data

"""Tenants and their API keys (LLMMESH_AUTH_FILE), and checking a presented key.

The file stores SHA-256 hashes of the keys, never the keys:

```yaml
tenants:
  - name: search-team
    keys:
      - {id: search-2026-01, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
      - {id: search-old, sha256: ..., revoked: true}
    allowed_models: [gpt-4o-mini, claude-haiku, "auto:cheap"]   # "*": every model
    limits: {requests_per_minute: 600, tokens_per_minute: 200000, cost_per_day_usd: 25}
revoked_keys: [<sha256>, ...]                                     # revoked wherever listed
```

Why a plain SHA-256 and not bcrypt/argon2: keys are 256-bit random tokens
(`new_api_key`), not passwords people choose. A slow KDF protects
low-entropy secrets from guessing; against 2^256 possibilities a fast hash is
already out of reach, and it keeps the check cheap on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import grpc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.errors import MeshError
from services.common.yamlconfig import ConfigProblem, load_yaml_model

KEY_PREFIX = "llmk_"
REASON_MISSING_CREDENTIALS = "MISSING_CREDENTIALS"
REASON_MALFORMED_CREDENTIALS = "MALFORMED_CREDENTIALS"
REASON_INVALID_API_KEY = "INVALID_API_KEY"
REASON_API_KEY_REVOKED = "API_KEY_REVOKED"
ALL_MODELS = "*"

_SHA256_HEX = r"^[0-9a-f]{64}$"


def new_api_key() -> str:
    """A fresh key: 256 random bits, URL-safe, with a prefix that secret scanners can spot."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """What the tenants file stores for `key`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyEntry(_Strict):
    """One API key of a tenant, by hash."""

    sha256: str = Field(pattern=_SHA256_HEX, description="hashlib.sha256(key).hexdigest(), lower-case hex")
    #: A label for logs and messages (never the key); defaults to the hash's first 8 characters.
    id: str = ""
    revoked: bool = False

    @property
    def label(self) -> str:
        return self.id or self.sha256[:8]


class Limits(_Strict):
    """Per-tenant quotas; unset means unlimited. Enforced by the router across its replicas."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    cost_per_day_usd: float | None = Field(None, gt=0)


class TenantEntry(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    keys: list[KeyEntry] = Field(min_length=1)
    #: Model names, aliases, `auto` / `auto:<tier>`, or "*" for every model.
    allowed_models: list[str] = Field(min_length=1)
    #: Revokes every key of the tenant.
    revoked: bool = False
    limits: Limits = Field(default_factory=Limits)


class TenantsFile(_Strict):
    tenants: list[TenantEntry] = Field(min_length=1)
    revoked_keys: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> TenantsFile:
        names: set[str] = set()
        hashes: dict[str, str] = {}
        for index, tenant in enumerate(self.tenants):
            if tenant.name in names:
                raise ConfigProblem(("tenants", index, "name"), f"tenant {tenant.name!r} appears twice")
            names.add(tenant.name)
            for key_index, key in enumerate(tenant.keys):
                if key.sha256 in hashes:
                    raise ConfigProblem(
                        ("tenants", index, "keys", key_index, "sha256"),
                        f"this key hash is already a key of tenant {hashes[key.sha256]!r}",
                    )
                hashes[key.sha256] = tenant.name
        for index, revoked in enumerate(self.revoked_keys):
            if len(revoked) != 64 or any(c not in "0123456789abcdef" for c in revoked):
                raise ConfigProblem(("revoked_keys", index), "must be a lower-case sha256 hex digest of the key")
        return self


@dataclass(frozen=True, slots=True)
class Tenant:
    """An authenticated caller."""

    name: str
    key_id: str
    allowed_models: tuple[str, ...]
    limits: Limits

    @property
    def allows_all(self) -> bool:
        return ALL_MODELS in self.allowed_models


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    entry: KeyEntry
    tenant: TenantEntry


class KeyStore:
    """Checks bearer keys against the tenants file."""

    def __init__(self, tenants: TenantsFile) -> None:
        self.file = tenants
        self._keys = [_Key(bytes.fromhex(key.sha256), key, tenant) for tenant in tenants.tenants for key in tenant.keys]
        self._revoked = frozenset(tenants.revoked_keys)

    @classmethod
    def from_file(cls, path: str) -> KeyStore:
        return cls(load_yaml_model(TenantsFile, path))

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant for an `authorization` metadata value; UNAUTHENTICATED otherwise (never echoing it)."""
        if not authorization:
            raise _unauthenticated(
                "no credentials: send gRPC metadata 'authorization: Bearer <api key>'", REASON_MISSING_CREDENTIALS
            )
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _unauthenticated(
                "the authorization metadata is not of the form 'Bearer <api key>'", REASON_MALFORMED_CREDENTIALS
            )
        digest = hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()
        found: _Key | None = None
        # Every entry is compared, in constant time, so the time taken says nothing about which matched.
        for candidate in self._keys:
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate
        if found is None:
            raise _unauthenticated(
                "the API key is not valid: check it was copied whole, or ask for a new one", REASON_INVALID_API_KEY
            )
        entry, tenant = found.entry, found.tenant
        if entry.revoked or tenant.revoked or entry.sha256 in self._revoked:
            raise _unauthenticated(
                f"the API key {entry.label!r} of tenant {tenant.name!r} was revoked; ask for a new key",
                REASON_API_KEY_REVOKED,
                metadata={"tenant": tenant.name, "key_id": entry.label},
            )
        return Tenant(tenant.name, entry.label, tuple(tenant.allowed_models), tenant.limits)


def _unauthenticated(message: str, reason: str, metadata: dict[str, str] | None = None) -> MeshError:
    return MeshError(grpc.StatusCode.UNAUTHENTICATED, message, reason=reason, metadata=metadata)

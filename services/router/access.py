"""Which models a tenant may use, checked after resolution (aliases, fallbacks, `auto`).

* A model the caller names (the model, an alias of it, or a request
  fallback) that the tenant may not use: PERMISSION_DENIED naming both.
* Fallbacks from the routing file and `auto` candidates the tenant may not
  use are dropped: the caller did not ask for them, so they must not fail
  the request, and must never be called.
* `allowed_models` entries: model names, aliases, `auto` (the default tier),
  `auto:<tier>` (every model of that tier, when reached through it), `*`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import grpc

from services.common.errors import MeshError
from services.common.tenants import Tenant
from services.router import auto
from services.router.config import Candidate, RoutingTable

REASON_MODEL_NOT_ALLOWED = "MODEL_NOT_ALLOWED"


def permitted(
    tenant: Tenant | None,
    table: RoutingTable,
    requested_model: str,
    candidates: Sequence[Candidate],
    named: Sequence[tuple[str, Candidate]],
) -> list[Candidate]:
    """The candidates `tenant` may use, in order; `named` are (field, candidate) the caller asked for by name."""
    if tenant is None or tenant.allows_all:
        return list(candidates)
    models, tiers = _allowed(tenant, table)
    for field, candidate in named:
        if candidate.name not in models:
            raise _denied(
                tenant, f"{field}: tenant {tenant.name!r} may not use model {candidate.name!r}", models, tiers
            )
    if auto.is_auto(requested_model):
        tier = _tier_of(requested_model, table)
        if tier in tiers:
            models = models | set(table.routing.auto.tiers[tier].models)
    allowed = [candidate for candidate in candidates if candidate.name in models]
    if not allowed:
        raise _denied(
            tenant,
            f"model: tenant {tenant.name!r} may use none of the models {requested_model!r} resolves to "
            f"({', '.join(candidate.name for candidate in candidates)})",
            models,
            tiers,
        )
    return allowed


def nameable(tenant: Tenant | None, table: RoutingTable) -> set[str] | None:
    """Canonical names of the models `tenant` may call by name; None: every model."""
    if tenant is None or tenant.allows_all:
        return None
    return _allowed(tenant, table)[0]


def close_matches(tenant: Tenant | None, table: RoutingTable, name: str, limit: int = 3) -> list[str]:
    """Model names and aliases close to `name`, among those `tenant` may call (never another tenant's)."""
    names = nameable(tenant, table)
    if names is None:
        return table.close_matches(name, limit)
    spellings = [*names, *(alias for alias, model in table.aliases() if model in names)]
    return difflib.get_close_matches(name, spellings, n=limit, cutoff=0.4)


def _allowed(tenant: Tenant, table: RoutingTable) -> tuple[set[str], set[str]]:
    """Canonical model names and auto tier names from the tenant's `allowed_models`."""
    models: set[str] = set()
    tiers: set[str] = set()
    for entry in tenant.allowed_models:
        if auto.is_auto(entry):
            tiers.add(_tier_of(entry, table))
            continue
        candidate = table.lookup(entry)
        if candidate is not None:
            models.add(candidate.name)
    return models, tiers


def _tier_of(model: str, table: RoutingTable) -> str:
    return model.partition(":")[2] or table.routing.auto.default_tier


def _denied(tenant: Tenant, message: str, models: set[str], tiers: set[str]) -> MeshError:
    allowed = sorted(models) + sorted(f"auto:{tier}" for tier in tiers)
    return MeshError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{message}; allowed: {', '.join(allowed) or 'none'}",
        reason=REASON_MODEL_NOT_ALLOWED,
        metadata={"tenant": tenant.name},
    )

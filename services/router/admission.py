"""The one admission path of both doors (gRPC RouterService and the HTTP door).

Before the engine: the input limits (LLMMESH_MAX_*), the routing policy's
enums and durations, the model name (NOT_FOUND hints list only models the
tenant may use), and the tenant's quota (requests per minute). After an
answer: its tokens and estimated cost go to the tenant's token and daily
budget windows, fan-out alternatives included. The doors differ only in how
they read a request and write an answer; what they admit and count is here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

import grpc
from google.protobuf import duration_pb2

from llmmesh.v1 import router_service_pb2 as rpb
from services.common.auth import current_tenant
from services.common.errors import REASON_MODEL_NOT_FOUND, MeshError, invalid_argument
from services.common.tenants import Tenant
from services.common.validation import DEFAULT_LIMITS, InputLimits, validate_chat_request, validate_embed_request
from services.router import access, auto, extensions
from services.router.config import Candidate, ModelRoute, RoutingTable
from services.router.quotas import QuotaGate

if TYPE_CHECKING:
    from services.router.served import Served

# Longest hedge delay and per-attempt timeout a caller may ask for: the router's own deadline cap.
MAX_POLICY_SECONDS = 3600.0
_STRATEGIES = frozenset(rpb.RoutingStrategy.values())

RouterRequest: TypeAlias = rpb.ChatRequest | rpb.StreamChatRequest
Answer: TypeAlias = rpb.ChatResponse | rpb.StreamChatFinal


class Admission:
    """Checks and counts a caller's request the same way at every door."""

    def __init__(
        self, table: RoutingTable, *, limits: InputLimits = DEFAULT_LIMITS, quotas: QuotaGate | None = None
    ) -> None:
        self.table = table
        self._limits = limits
        self._quotas = quotas

    async def admit(self, request: RouterRequest, served: Served | None = None) -> Tenant | None:
        """Raises INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED; returns the tenant to record usage for.

        `served` (the door's request record) learns the model, call shape and tenant first, so refusals
        are counted under them too.
        """
        tenant = current_tenant.get()
        if served is not None:
            served.request(request.model, stream=isinstance(request, rpb.StreamChatRequest), tenant=tenant)
        validate_chat_request(request, limits=self._limits)
        if served is not None and request.caller.labels:
            served.attribute(request.caller.labels)
        if request.HasField("routing"):
            validate_routing(request.routing)
        if request.HasField("extensions"):
            extensions.validate(request.extensions, self.table.routing)
        if not auto.is_auto(request.model):
            candidate = self.table.lookup(request.model)
            if candidate is None:
                raise self.not_found(request.model, tenant, "ListModels")
            if candidate.dimensions:
                raise invalid_argument(
                    "model",
                    f"{request.model!r} is an embedding model; call Embed (/v1/embeddings), or name a chat model",
                )
        if self._quotas is not None:
            await self._quotas.admit(tenant)
        return tenant

    async def admit_embed(
        self, request: rpb.EmbedRequest, listing: str = "ListModels", served: Served | None = None
    ) -> Tenant | None:
        """The same for Embed: input limits, routing policy, an embedding model by name, the quota."""
        tenant = current_tenant.get()
        if served is not None:
            served.request(request.model, stream=False, tenant=tenant)
        validate_embed_request(request, limits=self._limits)
        if request.HasField("routing"):
            validate_routing(request.routing)
        if auto.is_auto(request.model):
            raise invalid_argument("model", "`auto` chooses chat models; name an embedding model")
        candidate = self.table.lookup(request.model)
        if candidate is None:
            raise self.not_found(request.model, tenant, listing)
        if not candidate.dimensions:
            embedding = [name for name, _, entry in self.visible_models(tenant) if entry.dimensions]
            raise invalid_argument(
                "model",
                f"{request.model!r} is a chat model; name an embedding model "
                f"({', '.join(embedding) or 'none in the routing file'})",
            )
        if self._quotas is not None:
            await self._quotas.admit(tenant)
        return tenant

    async def record_embed(self, tenant: Tenant | None, input_tokens: int, cost: float) -> None:
        """An embeddings answer's tokens and cost (every fan-out answer paid for) to the tenant's windows."""
        if self._quotas is not None:
            await self._quotas.record(tenant, input_tokens, cost)

    async def record(self, tenant: Tenant | None, answers: Iterable[Answer]) -> None:
        """Adds the answers' tokens and estimated cost to the tenant's windows."""
        if self._quotas is None:
            return
        answers = list(answers)
        tokens = sum(answer.usage.input_tokens + answer.usage.output_tokens for answer in answers)
        await self._quotas.record(tenant, tokens, sum(answer.estimated_cost_usd for answer in answers))

    def visible_models(self, tenant: Tenant | None) -> list[tuple[str, ModelRoute, Candidate]]:
        """The routing table's models that `tenant` may name."""
        names = access.nameable(tenant, self.table)
        return [entry for entry in self.table.models() if names is None or entry[0] in names]

    def not_found(self, model: str, tenant: Tenant | None, listing: str) -> MeshError:
        """NOT_FOUND for an unknown (or, to this tenant, invisible) model, with hints it may use."""
        matches = access.close_matches(tenant, self.table, model)
        hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else f"; see {listing}"
        return MeshError(
            grpc.StatusCode.NOT_FOUND,
            f"model: {model!r} is not a known model or alias{hint}",
            reason=REASON_MODEL_NOT_FOUND,
            metadata={"close_matches": ",".join(matches)},
        )


def validate_routing(policy: rpb.RoutingPolicy) -> None:
    """Enum values the router knows and durations in range; INVALID_ARGUMENT naming the field."""
    if policy.strategy not in _STRATEGIES:
        known = ", ".join(name for name, number in rpb.RoutingStrategy.items() if number)
        raise invalid_argument("routing.strategy", f"{policy.strategy} is not a known routing strategy; use {known}")
    _check_duration(policy, "hedge_delay", allow_zero=True)
    _check_duration(policy, "per_attempt_timeout", allow_zero=False)
    if policy.HasField("max_retries") and not 0 <= policy.max_retries <= 10:
        raise invalid_argument("routing.max_retries", f"{policy.max_retries} is outside 0..10")


def _check_duration(policy: rpb.RoutingPolicy, name: str, *, allow_zero: bool) -> None:
    if not policy.HasField(name):
        return
    value: duration_pb2.Duration = getattr(policy, name)
    field = f"routing.{name}"
    if abs(value.nanos) > 999_999_999 or (value.seconds and value.nanos and (value.seconds < 0) != (value.nanos < 0)):
        raise invalid_argument(field, "is not a valid Duration (nanos must be within ±999999999, same sign as seconds)")
    seconds = value.seconds + value.nanos / 1e9
    low = "0" if allow_zero else "(0"
    if seconds < 0 or (seconds == 0 and not allow_zero) or seconds > MAX_POLICY_SECONDS:
        raise invalid_argument(
            field, f"{seconds:g} s is outside {low}, {MAX_POLICY_SECONDS:g}] s; omit it to use the routing file's"
        )

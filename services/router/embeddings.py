"""Embed on the router: the chat engine's planning and executor, for embedding models.

The plan (model, fallbacks, the tenant's allowed models, routing options)
comes from `RouterEngine.plan` and the attempts run on
`RouterEngine.run_attempts`, so embeddings get the same deadlines, retries,
hedges, breakers and balancing as chat. What is particular to embeddings is
checked here first: the model must be an embedding model and every fallback
must have its dimensions (a vector of another length would not fit the
caller's index), and a shortened `dimensions` must fit the model.
"""

from __future__ import annotations

import difflib

import grpc

from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import REASON_MODEL_NOT_FOUND, MeshError, invalid_argument
from services.router import auto
from services.router.balancer import Instance
from services.router.config import Candidate, RoutingTable
from services.router.engine import RouterEngine


class EmbeddingRouter:
    """Runs Embed requests over the routing table's embedding models."""

    def __init__(self, engine: RouterEngine) -> None:
        self._engine = engine

    @property
    def table(self) -> RoutingTable:
        return self._engine.table

    async def embed(self, request: rpb.EmbedRequest, deadline: float) -> tuple[rpb.EmbedResponse, float]:
        """The answer, and the estimated cost of every answer paid for (fan-out included)."""
        self._check(request)
        # The engine plans from the fields chat and embeddings share: model and routing.
        plan = self._engine.plan(rpb.ChatRequest(model=request.model, routing=request.routing))

        async def attempt(candidate: Candidate, instance: Instance, budget: float) -> ppb.ProviderServiceEmbedResponse:
            answer: ppb.ProviderServiceEmbedResponse = await instance.stub.Embed(
                _provider_request(request, candidate), timeout=budget
            )
            self._engine.headroom.record(candidate.provider, answer.headroom)
            return answer

        winners, attempts = await self._engine.run_attempts(plan, deadline, attempt)
        candidate, answer = winners[0]
        usage = answer.usage
        response = rpb.EmbedResponse(
            embeddings=answer.embeddings,
            dimensions=len(answer.embeddings[0].values) if answer.embeddings else 0,
            usage=usage,
            model=candidate.name,
            provider=candidate.provider,
            response_model=answer.response_model,
            attempts=attempts,
            estimated_cost_usd=candidate.cost(usage.input_tokens, 0, 0),
        )
        paid = sum(c.cost(a.usage.input_tokens, 0, 0) for c, a in winners)
        return response, paid

    def _check(self, request: rpb.EmbedRequest) -> None:
        """Refuses a model, fallbacks or `dimensions` that do not suit embeddings, naming the field."""
        if auto.is_auto(request.model):
            raise invalid_argument("model", "`auto` chooses chat models; name an embedding model")
        primary = self.table.lookup(request.model)
        if primary is None:
            raise _not_found(self.table, request.model)
        if not primary.dimensions:
            raise invalid_argument(
                "model",
                f"{request.model!r} is a chat model; name an embedding model "
                f"({', '.join(_embedding_models(self.table)) or 'none in the routing file'})",
            )
        for index, name in enumerate(request.routing.fallback_models):
            fallback = self.table.lookup(name)
            if fallback is not None and fallback.dimensions != primary.dimensions:
                raise invalid_argument(
                    f"routing.fallback_models[{index}]",
                    f"{name!r} has {fallback.dimensions or 'no'} dimensions, {primary.name!r} {primary.dimensions}; "
                    "embedding fallbacks need the same dimensions",
                )
        if request.HasField("dimensions") and request.dimensions > primary.dimensions:
            raise invalid_argument(
                "dimensions",
                f"{request.dimensions} is above {primary.name}'s {primary.dimensions}; ask for fewer or omit it",
            )


def _embedding_models(table: RoutingTable) -> list[str]:
    return [name for name, _, candidate in table.models() if candidate.dimensions]


def _not_found(table: RoutingTable, model: str) -> MeshError:
    embedding = _embedding_models(table)
    matches = difflib.get_close_matches(model, embedding, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else "; see ListModels"
    return MeshError(
        grpc.StatusCode.NOT_FOUND,
        f"model: {model!r} is not a known model or alias{hint}",
        reason=REASON_MODEL_NOT_FOUND,
        metadata={"close_matches": ",".join(matches)},
    )


def _provider_request(request: rpb.EmbedRequest, candidate: Candidate) -> ppb.ProviderServiceEmbedRequest:
    provider_request = ppb.ProviderServiceEmbedRequest(
        model=candidate.upstream_model, inputs=request.inputs, user=request.user
    )
    if request.HasField("dimensions"):
        provider_request.dimensions = request.dimensions
    # Provider-only options reach adapters of that provider only.
    own = request.extensions.fields.get(candidate.kind)
    if own is not None:
        provider_request.extensions.fields[candidate.kind].CopyFrom(own)
    return provider_request

"""Embed on the router: the chat engine's plan, race and executor, for embedding models.

The plan (model, fallbacks, the tenant's allowed models, routing options)
comes from `RouterEngine.plan`, and attempts run through the same `Race` and
`Executor` as unary chat, so embeddings get the same deadlines, retries,
hedges, breakers and balancing. Admission (limits, model kind, quota) is in
admission.py, shared by both doors. What is particular to embeddings is
checked here: every fallback must have the model's dimensions (a vector of
another length would not fit the caller's index), and a shortened
`dimensions` must fit the model.
"""

from __future__ import annotations

from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import invalid_argument
from services.router.config import Candidate, RoutingTable
from services.router.engine import RouterEngine
from services.router.executor import Executor
from services.router.race import Flight, Race


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
        engine = self._engine
        # The engine plans from the fields chat and embeddings share: model and routing.
        plan = engine.plan(rpb.ChatRequest(model=request.model, routing=request.routing))
        race = Race(engine, plan, deadline)

        async def call(flight: Flight) -> ppb.ProviderServiceEmbedResponse:
            answer: ppb.ProviderServiceEmbedResponse = await flight.instance.stub.Embed(
                _provider_request(request, flight.candidate), timeout=flight.budget
            )
            engine.headroom.record(flight.candidate.provider, answer.headroom)
            return answer

        with engine.margin.request():
            winners = await Executor(race, call).run()
        candidate, answer = winners[0].candidate, winners[0].answer
        usage = answer.usage
        response = rpb.EmbedResponse(
            embeddings=answer.embeddings,
            dimensions=len(answer.embeddings[0].values) if answer.embeddings else 0,
            usage=usage,
            model=candidate.name,
            provider=candidate.provider,
            response_model=answer.response_model,
            attempts=race.attempts,
            estimated_cost_usd=candidate.cost(usage.input_tokens, 0, 0),
        )
        paid = sum(flight.candidate.cost(flight.answer.usage.input_tokens, 0, 0) for flight in winners)
        return response, paid

    def _check(self, request: rpb.EmbedRequest) -> None:
        """Refuses fallbacks or `dimensions` that do not suit the (admitted) embedding model, naming the field."""
        primary = self.table.lookup(request.model)
        assert primary is not None, "admission checks the model first"
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

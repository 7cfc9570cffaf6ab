"""One answer shape for unary and streamed replies.

`ChatResponse` and `StreamChatFinal` describe an answer with the same fields
(tests/contracts/test_response_shapes.py keeps the protos in step); this
module fills them from the adapter's answer in one place, so a field added
for one path reaches the other too.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as ppb
from llmmesh.v1 import router_service_pb2 as rpb
from services.router.config import Candidate

ProviderAnswer: TypeAlias = ppb.ProviderServiceChatResponse | ppb.ProviderStreamFinal


def answer_fields(
    candidate: Candidate,
    answer: ProviderAnswer,
    attempts: list[rpb.Attempt],
    *,
    usage: chat_pb2.Usage | None = None,
    cost_usd: float | None = None,
) -> dict[str, Any]:
    """The fields both ChatResponse and StreamChatFinal carry, for the answer `candidate` gave.

    `usage` and `cost_usd` replace the answer's own when a streamed answer
    took several attempts (each counted at its own price).
    """
    usage = usage if usage is not None else answer.usage
    if cost_usd is None:
        cost_usd = candidate.usage_cost(usage)
    return {
        "finish_reason": answer.finish_reason,
        "usage": usage,
        "model": candidate.name,
        "provider": candidate.provider,
        "response_model": answer.response_model,
        "response_id": answer.response_id,
        "attempts": attempts,
        "estimated_cost_usd": cost_usd,
        "extensions": answer.extensions if answer.HasField("extensions") else None,
    }

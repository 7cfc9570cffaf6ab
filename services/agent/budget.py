"""What the next step will spend at least, so a step that would cross a budget is refused, not paid for.

The agent resends the whole conversation on every step, so the next step's
input is at least the previous step's input, plus the previous answer (its
output tokens come back as input), plus the tool results added since
(counted at 4 characters a token, the estimate the router uses too). That
is known before the step starts; the next answer's length is not, and
counts as zero: a step is refused only for what it must spend.

The cost of those tokens uses the previous step's own rate: its estimated
cost (the router's price table, applied by the router) divided by its
tokens. The agent does not hold the price table, and the previous step's
rate already reflects the model that answered (after fallbacks). Output is
usually the dearer side, so the averaged rate leans high on input, which
the uncounted next answer more than offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmmesh.v1 import chat_pb2

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class StepEstimate:
    """The input tokens the next step sends at least, and their estimated cost."""

    input_tokens: int
    cost_usd: float


def next_step(previous: chat_pb2.Usage, previous_cost_usd: float, *, added_chars: int) -> StepEstimate:
    """The next step's known spend, from the previous step's usage and cost."""
    previous_tokens = previous.input_tokens + previous.output_tokens
    # At least one token: a step never sends nothing, so a spent budget always stops the run.
    tokens = max(previous_tokens + math.ceil(added_chars / CHARS_PER_TOKEN), 1)
    rate = previous_cost_usd / previous_tokens if previous_tokens else 0.0
    return StepEstimate(input_tokens=tokens, cost_usd=tokens * rate)

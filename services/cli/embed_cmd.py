"""`llmmesh embed`: one Embed call to the router; a summary per vector, or the whole answer as JSON."""

from __future__ import annotations

import argparse
import json
import time

from llmmesh.v1 import router_service_pb2 as rpb
from services.cli.chat_cmd import report_errors, router_address
from services.client import MeshClient

_SHOWN_VALUES = 4


def embed(args: argparse.Namespace) -> None:
    target = router_address(args)
    routing = rpb.RoutingPolicy(fallback_models=args.fallback)

    async def run() -> None:
        async with MeshClient(target, timeout=args.timeout) as client:
            started = time.perf_counter()
            answer = await client.embed(args.model, args.texts, dimensions=args.dimensions, routing=routing)
            seconds = time.perf_counter() - started
        print(json.dumps(_as_json(answer)) if args.json else _summary(answer, seconds))

    report_errors(run(), target=target, timeout=args.timeout)


def _summary(answer: rpb.EmbedResponse, seconds: float) -> str:
    lines = []
    for item in answer.embeddings:
        head = ", ".join(f"{value:+.4f}" for value in item.values[:_SHOWN_VALUES])
        lines.append(f"[{item.index}] {len(item.values)} dims  {head}, ...")
    lines.append(
        f"-- model {answer.model} via {answer.provider} · {answer.dimensions} dimensions · {seconds * 1000:.1f} ms"
    )
    lines.append(f"-- usage {answer.usage.input_tokens} in · est. ${answer.estimated_cost_usd:.6f}")
    return "\n".join(lines)


def _as_json(answer: rpb.EmbedResponse) -> dict[str, object]:
    return {
        "model": answer.model,
        "provider": answer.provider,
        "dimensions": answer.dimensions,
        "embeddings": [list(item.values) for item in answer.embeddings],
        "input_tokens": answer.usage.input_tokens,
        "estimated_cost_usd": answer.estimated_cost_usd,
    }

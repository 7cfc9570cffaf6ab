"""Scenario 2: router → OpenAI adapter (the real openai SDK) → the loopback fake OpenAI API.

The adapter is also called directly, side by side, so the router's share of
the path shows. The fake (tests.bench.fake_upstream, on uvicorn) is a process of its
own and its CPU is reported too: it is part of the load, not of the mesh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bench import requests as req
from tests.bench.load import LoadSpec, LoadWorker
from tests.bench.settings import BenchSettings
from tests.bench.summary import figures, median_figures
from tests.bench.topology import Topology

MODEL = "gpt-4o-mini"
ROUTING = {
    "providers": {"openai": {"kind": "openai"}},
    "models": {MODEL: {"provider": "openai", "context_window": 128000}},
}


def run(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    with Topology(workdir) as topology:
        fake = topology.fake_openai("fake-openai")
        adapter = topology.openai_adapter("openai", f"http://{fake.address}/v1", [MODEL])
        router = topology.router("router", ROUTING, {"llmmesh-provider-openai": [adapter.address]})
        pids = {"router": router.pid, "adapter": adapter.pid, "fake": fake.pid}
        routes = {
            "adapter": (adapter.address, req.PROVIDER_CHAT, req.provider_chat(MODEL)),
            "router": (router.address, req.ROUTER_CHAT, req.router_chat(MODEL)),
        }
        rows = []
        for concurrency in settings.real_path_concurrencies:
            per_target: dict[str, list[dict[str, Any]]] = {"adapter": [], "router": []}
            for _ in range(settings.runs):
                for target, (address, method, request) in routes.items():
                    watched = pids if target == "router" else {k: v for k, v in pids.items() if k != "router"}
                    outcome = worker.run(
                        LoadSpec(
                            target=address,
                            method=method,
                            request=request,
                            concurrency=concurrency,
                            duration_s=settings.duration_s,
                            warmup_s=settings.warmup_s,
                            watch_pids=watched,
                            ramp_s=min(0.002 * concurrency, 0.5),
                        )
                    )
                    per_target[target].append(figures(outcome))
            rows.append(
                {
                    "concurrency": concurrency,
                    "targets": {target: median_figures(runs) for target, runs in per_target.items()},
                    "raw": per_target,
                }
            )
    return {"rows": rows}

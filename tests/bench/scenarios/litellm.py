"""Scenario 7: the mesh against LiteLLM's proxy, side by side, on the same fake upstream and load client.

Four paths to the one fake OpenAI upstream (tests.bench.fake_upstream):
straight to it over HTTP (the floor), LiteLLM's proxy (one worker, its own
venv: services.testing.litellm_venv), the mesh over gRPC (router → OpenAI
adapter with the real SDK) and the mesh's HTTP door (the same router and
adapter). The HTTP paths share one client (httpx2); within one run the
paths take turns, so the machine's other load falls on all of them alike.

Unary at each of `litellm_concurrencies`, then streams of `stream_chunks`
chunks at `litellm_stream_concurrency`: CPU per chunk is each process's
CPU per stream over the chunks in it. The ratios the issue's goals name are
computed here; when the LiteLLM venv cannot be made the scenario says why
and is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.testing import litellm_venv
from tests.bench import litellm_proxy
from tests.bench import requests as req
from tests.bench.load import LoadSpec, LoadWorker
from tests.bench.settings import BenchSettings
from tests.bench.stats import percentile, ratio
from tests.bench.summary import figures, median_figures
from tests.bench.topology import Topology

MODEL = "gpt-4o-mini"
ROUTING = {
    "providers": {"openai": {"kind": "openai"}},
    "models": {MODEL: {"provider": "openai", "context_window": 128000}},
}
PATHS = ("upstream", "litellm", "mesh_grpc", "mesh_http")
MESH_PROCESSES = ("router", "adapter")


def run(settings: BenchSettings, worker: LoadWorker, workdir: Path) -> dict[str, Any]:
    ready, reason = litellm_venv.ensure_venv(log_file=workdir / "litellm-install.log")
    if not ready:
        return {"skipped": reason}
    with Topology(workdir) as topology:
        fake = topology.fake_openai("fake-openai", stream_chunks=settings.stream_chunks)
        base_url = f"http://{fake.address}/v1"
        adapter = topology.openai_adapter("openai", base_url, [MODEL])
        router = topology.router(
            "router", ROUTING, {"llmmesh-provider-openai": [adapter.address]}, extra_env={"LLMMESH_HTTP_PORT": "0"}
        )
        config = litellm_proxy.write_config(workdir / "litellm.yaml", MODEL, base_url)
        try:
            litellm = litellm_proxy.start(litellm_venv.VENV_DIR, config.resolve(), workdir)
        except (RuntimeError, TimeoutError) as error:
            # LiteLLM's own trouble (a changed start-up check, say) skips the comparison, not the bench.
            return {"skipped": f"litellm did not start ({str(error).splitlines()[0]}); log {workdir / 'litellm.log'}"}
        try:
            door = f"http://127.0.0.1:{router.ready['http_port']}/v1/chat/completions"
            mesh_pids = {"router": router.pid, "adapter": adapter.pid, "fake": fake.pid}
            paths = {
                "upstream": ("http", f"{base_url}/chat/completions", "", {"fake": fake.pid}),
                "litellm": (
                    "http",
                    f"{litellm.base_url}/v1/chat/completions",
                    "",
                    {"litellm": litellm.pid, "fake": fake.pid},
                ),
                "mesh_grpc": ("grpc", router.address, "router", mesh_pids),
                "mesh_http": ("http", door, "", mesh_pids),
            }
            unary = [_compare(settings, worker, paths, c, streaming=False) for c in settings.litellm_concurrencies]
            streaming = _compare(settings, worker, paths, settings.litellm_stream_concurrency, streaming=True)
        finally:
            litellm.stop()
    return {
        "litellm_version": litellm_venv.LITELLM_PIN.partition("==")[2],
        "venv": reason,
        "unary": unary,
        "streaming": streaming,
        "ratios": _ratios(unary, streaming, settings.stream_chunks),
    }


def _spec(
    settings: BenchSettings, path: tuple[str, str, str, dict[str, int]], concurrency: int, streaming: bool
) -> LoadSpec:
    protocol, target, kind, pids = path
    if protocol == "grpc":
        method = req.ROUTER_STREAM if streaming else req.ROUTER_CHAT
        request = req.router_stream(MODEL) if streaming else req.router_chat(MODEL)
    else:
        method, request = "", req.openai_chat_json(MODEL, stream=streaming)
    return LoadSpec(
        target=target,
        method=method,
        request=request,
        concurrency=concurrency,
        duration_s=settings.duration_s,
        warmup_s=settings.warmup_s,
        streaming=streaming,
        watch_pids=pids,
        ramp_s=min(0.002 * concurrency, 0.5),
        protocol=protocol,
        # Lag is read from the router's messages and from SSE; the upstream's own chunks have it too.
        lag=streaming and (protocol == "http" or kind == "router"),
        timeout_s=30.0,
    )


def _compare(
    settings: BenchSettings,
    worker: LoadWorker,
    paths: dict[str, tuple[str, str, str, dict[str, int]]],
    concurrency: int,
    *,
    streaming: bool,
) -> dict[str, Any]:
    """Each run loads every path in turn; figures are medians over runs."""
    per_path: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for _ in range(settings.runs):
        for name, path in paths.items():
            outcome = worker.run(_spec(settings, path, concurrency, streaming))
            found = figures(outcome)
            if streaming:
                found["chunks_per_stream"] = outcome.chunks / outcome.measured if outcome.measured else 0.0
                found["lag_p50_ms"] = percentile(outcome.lags_s, 0.50) * 1000
                found["lag_p99_ms"] = percentile(outcome.lags_s, 0.99) * 1000
            per_path[name].append(found)
    return {
        "concurrency": concurrency,
        "targets": {name: median_figures(runs) for name, runs in per_path.items()},
        "raw": per_path,
    }


def _mesh_cpu(found: dict[str, Any]) -> float:
    cpu = found.get("cpu_us_per_request", {})
    return sum(cpu.get(name, float("nan")) for name in MESH_PROCESSES)


def _ratios(unary: list[dict[str, Any]], streaming: dict[str, Any], chunks: int) -> dict[str, Any]:
    """The issue's goals: RPS at the highest concurrency, added p50 at the lowest, CPU per chunk."""
    out: dict[str, Any] = {}
    if unary:
        top, low = unary[-1], unary[0]
        out["rps_concurrency"] = top["concurrency"]
        out["p50_concurrency"] = low["concurrency"]
        lite = top["targets"]["litellm"]["rps"]
        for door in ("mesh_grpc", "mesh_http"):
            out[f"{door}_over_litellm_rps"] = ratio(top["targets"][door]["rps"], lite)
        floor = low["targets"]["upstream"]["p50_ms"]
        added = {name: low["targets"][name]["p50_ms"] - floor for name in ("litellm", "mesh_grpc", "mesh_http")}
        out["added_p50_ms"] = added
        for door in ("mesh_grpc", "mesh_http"):
            out[f"{door}_added_p50_over_litellm"] = ratio(added[door], added["litellm"])
        out["cpu_us_per_request"] = {
            "litellm": top["targets"]["litellm"]["cpu_us_per_request"].get("litellm", float("nan")),
            "mesh_grpc": _mesh_cpu(top["targets"]["mesh_grpc"]),
            "mesh_http": _mesh_cpu(top["targets"]["mesh_http"]),
        }
    per_chunk = {
        "litellm": streaming["targets"]["litellm"]["cpu_us_per_request"].get("litellm", float("nan")) / chunks,
        "mesh_grpc": _mesh_cpu(streaming["targets"]["mesh_grpc"]) / chunks,
        "mesh_http": _mesh_cpu(streaming["targets"]["mesh_http"]) / chunks,
    }
    out["cpu_us_per_chunk"] = per_chunk
    for door in ("mesh_grpc", "mesh_http"):
        out[f"{door}_cpu_per_chunk_over_litellm"] = ratio(per_chunk[door], per_chunk["litellm"])
    return out

"""Profile the router's hot path under the concurrency-64 load of scenario 1 (py-spy).

    python -m tests.bench.profile [--seconds 10] [--concurrency 64] [--native] [--top 25]
    python -m tests.bench.profile --path openai-stream [--process adapter|router] [--concurrency 16]

Starts a mock adapter and a router, drives the router with the load
generator, and samples the router with `py-spy record` meanwhile (raw
collapsed stacks, idle frames excluded). `--path openai-stream` instead
starts the fake OpenAI upstream (`--chunks` content chunks a stream, 50 unless told; 1 profiles the
per-stream start-up), the OpenAI adapter and a
router, drives StreamChat through the router and samples `--process`. Prints the functions with the most
samples on top of the stack (self) and anywhere on it (inclusive), and
writes the collapsed stacks (flamegraph input) and a speedscope-ready file
next to the JSON results.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bench import requests as req
from tests.bench.load import LoadSpec, LoadWorker
from tests.bench.scenarios import streaming
from tests.bench.scenarios.hop import MOCK_CONFIG, MODEL, ROUTING
from tests.bench.summary import figures
from tests.bench.topology import MOCK_SERVICE, Topology

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """`function (path/to/module.py:12)` → `function (module.py)`; native frames unchanged."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/services/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def summarise(collapsed: str, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Total samples, the top self (leaf) frames and the top inclusive frames."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";") if frame]
        # The first frame is the thread ("process 123:..." / "thread (0x...)"); skip it.
        frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own.most_common(top), inclusive.most_common(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--native", action="store_true", help="include C frames (grpc core, protobuf upb)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--path", choices=("router-unary", "openai-stream"), default="router-unary")
    parser.add_argument("--process", choices=("router", "adapter"), default="router", help="which one py-spy samples")
    parser.add_argument(
        "--chunks", type=int, default=50, help="openai-stream: content chunks per stream (1 profiles stream start-up)"
    )
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: `make setup` installs it (dev dependency)")
    args.out.mkdir(parents=True, exist_ok=True)
    collapsed_path = args.out / f"{args.process}-{args.path}-profile.collapsed.txt"
    with tempfile.TemporaryDirectory(prefix="llmmesh-profile-") as workdir, Topology(Path(workdir)) as topology:
        warmup = 2.0
        if args.path == "openai-stream":
            fake = topology.fake_openai("fake-openai", stream_chunks=args.chunks)
            adapter = topology.openai_adapter("openai", f"http://{fake.address}/v1", [streaming.MODEL])
            router = topology.router("router", streaming.ROUTING, {"llmmesh-provider-openai": [adapter.address]})
            request, method = req.router_stream(streaming.MODEL), req.ROUTER_STREAM
        else:
            adapter = topology.mock("mock", MOCK_CONFIG)
            router = topology.router("router", ROUTING, {MOCK_SERVICE: [adapter.address]})
            request, method = req.router_chat(MODEL), req.ROUTER_CHAT
        sampled = router if args.process == "router" else adapter
        spec = LoadSpec(
            target=router.address,
            method=method,
            request=request,
            concurrency=args.concurrency,
            duration_s=args.seconds + 1.0,
            warmup_s=warmup,
            streaming=method == req.ROUTER_STREAM,
            watch_pids={"router": router.pid, "adapter": adapter.pid},
            ramp_s=0.2,
            timeout_s=30.0,
        )
        with LoadWorker() as worker:
            worker.submit(spec)
            command = [
                py_spy,
                "record",
                "--pid",
                str(sampled.pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(collapsed_path),
                # Native stacks need the process paused while sampled; Python-only sampling need not.
                *(["--native"] if args.native else ["--nonblocking"]),
            ]
            # Start sampling once the warm-up is over.
            subprocess.run(["sleep", str(warmup)], check=True)
            profiled = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60)
            result = worker.result(spec)
    if profiled.returncode != 0:
        raise SystemExit(f"py-spy failed ({profiled.returncode}): {profiled.stderr.strip()}")
    load = figures(result)
    total, own, inclusive = summarise(collapsed_path.read_text(), args.top)
    print(
        f"{args.process} ({args.path}) under c={args.concurrency}: {load['rps']:,.0f} calls/s, p50 {load['p50_ms']:.1f} ms, "
        f"CPU µs/req {', '.join(f'{k} {v:,.0f}' for k, v in load['cpu_us_per_request'].items())}; "
        f"{total} samples (non-idle) over {args.seconds:.0f} s"
    )
    for title, rows in (("self (top of stack)", own), ("inclusive (anywhere on the stack)", inclusive)):
        print(f"\n{title}:")
        for frame, count in rows:
            print(f"  {count / total:6.1%}  {frame}")
    print(f"\ncollapsed stacks: {collapsed_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

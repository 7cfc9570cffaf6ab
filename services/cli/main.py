"""The `llmmesh` command: run services, the local mesh, and talk to it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from llmmesh.v1 import agent_service_pb2 as apb
from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.cli import agent_cmd, auth_cmd
from services.client import MeshClient, system, text_of, user
from services.common.errors import MeshError, code_from_number
from services.common.settings import ConfigError

PROVIDER_KINDS = ("mock", "openai", "anthropic", "google")


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        raise SystemExit(2)
    args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmmesh", description="A gRPC mesh for LLM providers.")
    commands = parser.add_subparsers(title="commands")

    up = commands.add_parser("up", help="run the local mesh until Ctrl-C")
    up.add_argument("--port", type=int, default=50051, help="router port (default 50051)")
    up.add_argument("--agent-port", type=int, help="agent port (default 50052 with the default --port, else free)")
    up.add_argument("--discovery", choices=("static", "consul"), default="static", help="how the router finds adapters")
    up.add_argument(
        "--consul", metavar="ADDR", help="Consul agent host:port (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)"
    )
    up.add_argument(
        "--traces",
        action="store_true",
        help="print each finished trace as a tree (starts a local OTLP receiver; the services export to it)",
    )
    up.set_defaults(run=_up)

    demo = commands.add_parser("demo", help="start the local mesh, send demo requests, stop")
    demo.add_argument("--no-traces", dest="traces", action="store_false", help="do not print the agent run's trace")
    demo.set_defaults(run=_demo)

    chat = commands.add_parser("chat", help="send one chat request to the router")
    chat.add_argument("prompt")
    chat.add_argument("--model", "-m", default="mock-small")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--stream", action="store_true", help="print the answer as it streams")
    chat.add_argument("--explain", action="store_true", help="list every attempt the router made")
    chat.add_argument("--fallback", action="append", default=[], help="fallback model (repeatable)")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    chat.add_argument("--router", help="router address (default $LLMMESH_ROUTER_ADDRESS or 127.0.0.1:50051)")
    chat.set_defaults(run=_chat)

    models = commands.add_parser("models", help="list the models the router offers")
    models.add_argument("--router")
    models.set_defaults(run=_models)

    router = commands.add_parser("router", help="run the router process (LLMMESH_* settings)")
    router.set_defaults(run=lambda _: importlib.import_module("services.router.main").main())

    provider = commands.add_parser("provider", help="run a provider adapter process")
    provider.add_argument("kind", choices=PROVIDER_KINDS)
    provider.set_defaults(run=lambda a: importlib.import_module(f"services.providers.{a.kind}.main").main())

    agent_cmd.add_parsers(commands)
    auth_cmd.add_parsers(commands)
    return parser


def _up(args: argparse.Namespace) -> None:
    from services.cli.mesh import LocalMesh, local_telemetry_env
    from services.common.otlp_receiver import OtlpReceiver, TracePrinter

    if args.consul and args.discovery != "consul":
        print("llmmesh up: --consul needs --discovery consul", file=sys.stderr)
        raise SystemExit(2)
    agent_port = args.agent_port if args.agent_port is not None else agent_cmd.default_agent_port(args.port)
    mesh = LocalMesh(
        router_port=args.port, agent_port=agent_port, discovery=args.discovery, consul_address=args.consul or ""
    )
    receiver: OtlpReceiver | None = None
    printer: TracePrinter | None = None
    if args.traces:
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            print("note: --traces sends telemetry to the local view, not to $OTEL_EXPORTER_OTLP_ENDPOINT")
        receiver = OtlpReceiver().start()
        printer = TracePrinter(receiver).start()
        mesh.env.update(local_telemetry_env(receiver))
    try:
        mesh.start()
    except (RuntimeError, TimeoutError, ConfigError) as error:
        print(f"llmmesh up: {error}", file=sys.stderr)
        if receiver is not None:
            receiver.stop()
        raise SystemExit(1) from None
    where = f" via {mesh.consul_address or 'CONSUL_HTTP_ADDR or 127.0.0.1:8500'}" if args.discovery == "consul" else ""
    print(f"llmmesh local mesh is up ({args.discovery} discovery{where}):")
    for name, process in mesh.processes.items():
        print(f"  {name:<20} {process.address:<18} SERVING   pid {process.pid}")
    print(f"  logs in {mesh.workdir}")
    print(f'try:  llmmesh chat --model mock-small --explain "hello"   (router {mesh.router_address})')
    print(f'      llmmesh agent --agent {mesh.agent_address} "What is the monthly total of 1234 over a year?"')
    if receiver is not None:
        print(f"traces: local OTLP receiver on {receiver.endpoint}; each finished trace prints below")
    print("Ctrl-C stops everything.", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    finally:
        print("stopping...")
        mesh.stop()
        if printer is not None and receiver is not None:
            printer.stop()
            receiver.stop()
        print("stopped.")


def _demo(args: argparse.Namespace) -> None:
    from services.cli.mesh import LocalMesh, local_telemetry_env
    from services.common.otlp_receiver import OtlpReceiver, format_trace

    print("starting the local mesh (mock adapter, router, agent; real adapters whose keys are set)...")
    receiver = OtlpReceiver().start() if getattr(args, "traces", True) else None
    mesh = LocalMesh(router_port=0, agent_port=0)
    if receiver is not None:
        mesh.env.update(local_telemetry_env(receiver))
    try:
        with mesh:
            for name, process in mesh.processes.items():
                print(f"  {name:<20} {process.address:<18} SERVING")
            asyncio.run(_demo_requests(mesh.router_address))
            asyncio.run(_demo_agent(mesh.agent_address))
        if receiver is not None:
            # The services flush their spans on shutdown; the agent run is the last GenAI trace.
            runs = [span for span in receiver.spans() if span.name.startswith("invoke_agent ")]
            if runs:
                print("\n$ llmmesh up --traces   (the agent run above, as one trace)")
                print(format_trace(receiver.spans(runs[-1].trace_id)))
    finally:
        if receiver is not None:
            receiver.stop()
    print("mesh stopped.")


async def _demo_agent(agent: str) -> None:
    question = "What is the monthly total of 1234 over a year?"
    print(f"\n$ llmmesh agent --model mock-agent '{question}'")
    await agent_cmd.stream_task(agent, apb.AgentTask(input=question, model="mock-agent"), timeout=20)


async def _demo_requests(router: str) -> None:
    async with MeshClient(router, timeout=10) as client:
        print("\n$ llmmesh chat --model mock-small --explain 'Hello, mesh!'")
        started = time.perf_counter()
        answer = await client.chat("mock-small", "Hello, mesh!")
        _print_response(answer, time.perf_counter() - started, explain=True)
        print("\n$ llmmesh chat --model mock-large --stream 'Stream this answer, please.'")
        await _stream(client, "mock-large", [user("Stream this answer, please.")], None, explain=False)


def _chat(args: argparse.Namespace) -> None:
    messages = [system(args.system)] if args.system else []
    messages.append(user(args.prompt))
    settings = chat_pb2.GenerationSettings()
    if args.max_tokens is not None:
        settings.max_output_tokens = args.max_tokens
    if args.temperature is not None:
        settings.temperature = args.temperature
    routing = rpb.RoutingPolicy(fallback_models=args.fallback)

    async def run() -> None:
        async with MeshClient(args.router, timeout=args.timeout) as client:
            if args.stream:
                await _stream(client, args.model, messages, settings, explain=args.explain, routing=routing)
                return
            started = time.perf_counter()
            answer = await client.chat(args.model, messages, settings=settings, routing=routing)
            _print_response(answer, time.perf_counter() - started, explain=args.explain)

    _run_reporting_errors(run())


def _models(args: argparse.Namespace) -> None:
    async def run() -> None:
        async with MeshClient(args.router, timeout=10) as client:
            for model in await client.list_models():
                state = "available" if model.available else "no instance"
                aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
                print(f"{model.name:<24} {model.provider:<10} {state:<12}{' MOCK' if model.mock else ''}{aliases}")

    _run_reporting_errors(run())


def _run_reporting_errors(coroutine: object) -> None:
    try:
        asyncio.run(coroutine)  # type: ignore[arg-type]
    except MeshError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        if error.retry_after is not None:
            print(f"       retry after {error.retry_after:.1f}s", file=sys.stderr)
        raise SystemExit(1) from None


async def _stream(
    client: MeshClient,
    model: str,
    messages: list[chat_pb2.Message],
    settings: chat_pb2.GenerationSettings | None,
    *,
    explain: bool,
    routing: rpb.RoutingPolicy | None = None,
) -> None:
    started = time.perf_counter()
    first_chunk: float | None = None
    async for event in client.stream_chat(model, messages, settings=settings, routing=routing):
        kind = event.WhichOneof("event")
        if kind == "delta":
            first_chunk = first_chunk or time.perf_counter() - started
            print(event.delta.text, end="", flush=True)
            for call in event.delta.tool_calls:
                if call.name:
                    print(f"\n[tool call {call.name}] ", end="")
                print(call.arguments_json_delta, end="", flush=True)
        elif kind == "continuation":
            print(f"\n[continued on {event.continuation.model}: {event.continuation.reason}] ", end="")
        elif kind == "final":
            final = event.final
            print()
            _print_answer(
                None,
                final.model,
                final.provider,
                final.usage,
                final.finish_reason,
                final.estimated_cost_usd,
                time.perf_counter() - started,
                final.attempts,
                explain=explain,
                first_chunk=first_chunk,
            )


def _print_response(answer: rpb.ChatResponse, seconds: float, *, explain: bool) -> None:
    _print_answer(
        text_of(answer.message),
        answer.model,
        answer.provider,
        answer.usage,
        answer.finish_reason,
        answer.estimated_cost_usd,
        seconds,
        answer.attempts,
        explain=explain,
        tool_calls=answer.message.tool_calls,
    )


def _print_answer(
    text: str | None,
    model: str,
    provider: str,
    usage: chat_pb2.Usage,
    finish_reason: int,
    cost: float,
    seconds: float,
    attempts: Sequence[rpb.Attempt],
    *,
    explain: bool,
    first_chunk: float | None = None,
    tool_calls: Sequence[chat_pb2.ToolCall] = (),
) -> None:
    if text is not None:
        print(text)
    for call in tool_calls:
        print(f"[tool call {call.name}] {call.arguments_json}")
    finish = chat_pb2.FinishReason.Name(finish_reason).removeprefix("FINISH_REASON_").lower()  # type: ignore[arg-type]
    timing = f"{seconds * 1000:.1f} ms" + (f" (first chunk {first_chunk * 1000:.1f} ms)" if first_chunk else "")
    print(f"-- model {model} via {provider} · finish {finish} · {timing}")
    print(
        f"-- usage {usage.input_tokens} in / {usage.output_tokens} out"
        f" ({usage.cached_input_tokens} cached) · est. ${cost:.6f}"
    )
    if explain:
        for index, attempt in enumerate(attempts, 1):
            outcome = rpb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
            code = code_from_number(attempt.code).name
            latency = attempt.latency.ToNanoseconds() / 1e6
            line = f"   attempt {index}: {attempt.model}@{attempt.provider} {attempt.instance or '-'} {outcome}"
            line += f" {code}" if attempt.outcome == rpb.ATTEMPT_OUTCOME_FAILED else ""
            line += f" {latency:.1f} ms" + (" (hedge)" if attempt.hedged else "")
            if attempt.message:
                line += f" — {attempt.message}"
            if attempt.moved_on_because:
                line += f" → moved on: {attempt.moved_on_because}"
            print(line)

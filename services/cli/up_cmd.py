"""`llmmesh up` (the local mesh until Ctrl-C) and `llmmesh demo` (start, send requests, stop)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import threading
import time

from llmmesh.v1 import agent_service_pb2 as apb
from services.cli import agent_cmd
from services.cli.chat_cmd import print_response, stream
from services.cli.errors import EXIT_USAGE, CliError
from services.cli.mesh import LocalMesh, local_telemetry_env
from services.client import MeshClient, user
from services.common.otlp_receiver import OtlpReceiver, TracePrinter, format_trace
from services.common.processes import ServiceExitedError
from services.common.server import check_can_listen
from services.common.settings import ConfigError

DEFAULT_ROUTER_PORT = 50051
DEFAULT_AGENT_PORT = 50052
# How often `up` looks for a process that died.
_WATCH_SECONDS = 0.5
_DEMO_QUESTION = "What is the monthly total of 1234 over a year?"


def default_agent_port(router_port: int) -> int:
    """`llmmesh up`'s agent port: 50052 beside the default router port, else a free one."""
    return DEFAULT_AGENT_PORT if router_port == DEFAULT_ROUTER_PORT else 0


def up(args: argparse.Namespace) -> None:
    if args.consul and args.discovery != "consul":
        raise CliError("--consul needs --discovery consul", EXIT_USAGE)
    if args.tool and args.discovery != "static":
        raise CliError("--tool is for static discovery; with Consul, ToolServices register themselves", EXIT_USAGE)
    agent_port = args.agent_port if args.agent_port is not None else default_agent_port(args.port)
    _check_ports(args, agent_port)
    mesh = LocalMesh(
        router_port=args.port,
        agent_port=agent_port,
        discovery=args.discovery,
        consul_address=args.consul or "",
        http_port=args.http_port,
        tools=args.tool,
    )
    receiver = printer = None
    if args.traces:
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            print("note: --traces sends telemetry to the local view, not to $OTEL_EXPORTER_OTLP_ENDPOINT")
        receiver = OtlpReceiver().start()
        printer = TracePrinter(receiver).start()
        mesh.env.update(local_telemetry_env(receiver))
    try:
        _start(mesh)
        _print_up(mesh, args)
        _serve_until_stopped(mesh)
    finally:
        if printer is not None:
            printer.stop()
        if receiver is not None:
            receiver.stop()


def _check_ports(args: argparse.Namespace, agent_port: int) -> None:
    """Refuses ports that are taken before starting anything, naming the flag that moves each."""
    http_setting = "--http-port" if args.http_port is not None else "LLMMESH_HTTP_PORT"
    http_port = args.http_port if args.http_port is not None else os.environ.get("LLMMESH_HTTP_PORT", "")
    checks = [(args.port, "--port"), (agent_port, "--agent-port")]
    if str(http_port).isdigit():
        checks.append((int(http_port), http_setting))
    for port, flag in checks:
        try:
            check_can_listen("127.0.0.1", port, flag)
        except ConfigError as error:
            raise CliError(str(error), EXIT_USAGE) from None


def _start(mesh: LocalMesh) -> None:
    try:
        mesh.start()
    except ServiceExitedError as error:
        # A child that refused its configuration exits 2: so does `up`.
        code = EXIT_USAGE if error.returncode == EXIT_USAGE else 1
        raise CliError(f"{error.name} did not start: {error.reason} (its log: {error.log_path})", code) from None
    except (RuntimeError, TimeoutError, ConfigError) as error:
        raise CliError(f"{str(error).splitlines()[0]} (logs in {mesh.workdir})") from None


def _print_up(mesh: LocalMesh, args: argparse.Namespace) -> None:
    where = f" via {mesh.consul_address or 'CONSUL_HTTP_ADDR or 127.0.0.1:8500'}" if args.discovery == "consul" else ""
    print(f"llmmesh local mesh is up ({args.discovery} discovery{where}):")
    for name, process in mesh.processes.items():
        print(f"  {name:<20} {process.address:<18} SERVING   pid {process.pid}")
    if mesh.http_address is not None:
        print(f"  {'http door':<20} http://{mesh.http_address}/v1   (OpenAI-compatible; the router's own port)")
    for tool in args.tool:
        print(f"  {'tools':<20} {tool:<18} (static discovery for the agent)")
    print(f"  logs in {mesh.workdir}")
    router_flag = "" if mesh.router_address == "127.0.0.1:50051" else f" --router {mesh.router_address}"
    agent_flag = "" if mesh.agent_address == "127.0.0.1:50052" else f" --agent {mesh.agent_address}"
    print(f'try:  llmmesh chat{router_flag} --model mock-small --explain "hello"')
    print(f'      llmmesh agent{agent_flag} "{_DEMO_QUESTION}"')
    if args.traces:
        print("traces: each finished trace prints below")
    print("Ctrl-C stops everything.", flush=True)


def _serve_until_stopped(mesh: LocalMesh) -> None:
    """Until Ctrl-C or SIGTERM, or until one process dies (then the rest are stopped and `up` fails)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    dead = None
    try:
        while not stop.wait(_WATCH_SECONDS):
            dead = mesh.exited()
            if dead is not None:
                break
    finally:
        print("stopping...", flush=True)
        mesh.stop()
    if dead is not None:
        code = dead.process.returncode
        raise CliError(
            f"{dead.name} (pid {dead.pid}) exited with {code}: {dead.last_log_line()} (its log: {dead.log_path})"
        )
    print("stopped.")


def demo(args: argparse.Namespace) -> None:
    print("starting the local mesh (mock adapter, router, agent; real adapters whose keys are set)...")
    receiver = OtlpReceiver().start() if args.traces else None
    mesh = LocalMesh(router_port=0, agent_port=0)
    if receiver is not None:
        mesh.env.update(local_telemetry_env(receiver))
    try:
        _start(mesh)
        try:
            for name, process in mesh.processes.items():
                print(f"  {name:<20} {process.address:<18} SERVING")
            asyncio.run(_demo_requests(mesh.router_address))
            asyncio.run(_demo_agent(mesh.agent_address))
        finally:
            mesh.stop()
        if receiver is not None:
            _print_agent_trace(receiver)
    except BaseException:
        print(f"the demo failed; its logs are in {mesh.workdir}")
        raise
    finally:
        if receiver is not None:
            receiver.stop()
    shutil.rmtree(mesh.workdir, ignore_errors=True)  # kept above when something failed
    print("mesh stopped.")


def _print_agent_trace(receiver: OtlpReceiver) -> None:
    # The services flush their spans on shutdown; the agent run is the last GenAI trace.
    runs = [span for span in receiver.spans() if span.name.startswith("invoke_agent ")]
    if runs:
        print("\n$ llmmesh up --traces   (the agent run above, as one trace)")
        print(format_trace(receiver.spans(runs[-1].trace_id)))


async def _demo_agent(agent: str) -> None:
    print(f"\n$ llmmesh agent --model mock-agent '{_DEMO_QUESTION}'")
    await agent_cmd.stream_task(agent, apb.AgentTask(input=_DEMO_QUESTION, model="mock-agent"), timeout=20)


async def _demo_requests(router: str) -> None:
    async with MeshClient(router, timeout=10) as client:
        print("\n$ llmmesh chat --model mock-small --explain 'Hello, mesh!'")
        started = time.perf_counter()
        answer = await client.chat("mock-small", "Hello, mesh!")
        print_response(answer, time.perf_counter() - started, explain=True)
        print("\n$ llmmesh chat --model mock-large --stream 'Stream this answer, please.'")
        await stream(client, "mock-large", [user("Stream this answer, please.")], None, explain=False)

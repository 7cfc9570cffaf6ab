"""The `llmmesh` command: run services, the local mesh, and talk to it.

This module only builds the argument parser: each command's module (and
grpc, protobuf, pydantic with it) is imported when that command runs, so
`llmmesh --help` and mistyped arguments answer at once.

Exit codes: 0 done, 1 the mesh answered with an error (or could not be
reached), 2 a usage or configuration error (one line on stderr), 3 an agent
run ended by a limit, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from services.cli.errors import EXIT_INTERRUPTED, CliError

PROVIDER_KINDS = ("mock", "openai", "anthropic", "google")
DEFAULT_ROUTER = "127.0.0.1:50051"
DEFAULT_AGENT = "127.0.0.1:50052"


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (and a pointer to --help) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        raise SystemExit(2)
    try:
        args.run(args)
    except CliError as error:
        print(f"{args.prog}: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt:
        print(f"\n{args.prog}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def build_parser() -> Parser:
    parser = Parser(prog="llmmesh", description="A gRPC mesh for LLM providers.")
    parser.add_argument("--version", action="version", version=f"llmmesh {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_up(commands)
    demo = _command(commands, "demo", "start the local mesh, send demo requests, stop", "up_cmd:demo")
    demo.add_argument("--no-traces", dest="traces", action="store_false", help="do not print the agent run's trace")
    _add_chat(commands)
    _add_embed(commands)
    models = _command(
        commands, "models", "list the models the router offers and whether they can answer", "chat_cmd:models"
    )
    _add_router_flag(models)
    _add_agent(commands)
    _command(commands, "router", "run the router process (LLMMESH_* settings)", "service_cmd:router", settings=True)
    provider = _command(
        commands,
        "provider",
        "run a provider adapter process (LLMMESH_* settings)",
        "service_cmd:provider",
        settings=True,
    )
    provider.add_argument("kind", choices=PROVIDER_KINDS, help="which adapter: " + ", ".join(PROVIDER_KINDS))
    _command(commands, "agent-server", "run the agent process (LLMMESH_* settings)", "service_cmd:agent", settings=True)
    _add_auth(commands)
    return parser


def _add_up(commands: Any) -> None:
    up = _command(commands, "up", "run the local mesh (adapters, router, agent) until Ctrl-C", "up_cmd:up")
    up.add_argument("--port", type=_port, default=50051, help="router port (default 50051)")
    up.add_argument("--agent-port", type=_port, help="agent port (default 50052 with the default --port, else free)")
    up.add_argument(
        "--http-port", type=_port, help="also open the router's OpenAI-compatible HTTP door here (default: off)"
    )
    up.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a ToolService the agent offers to models (repeatable; static discovery)",
    )
    up.add_argument("--discovery", choices=("static", "consul"), default="static", help="how the router finds adapters")
    up.add_argument(
        "--consul", metavar="ADDR", help="Consul agent host:port (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500)"
    )
    up.add_argument(
        "--traces",
        action="store_true",
        help="print each finished trace as a tree (starts a local OTLP receiver; the services export to it)",
    )


def _add_chat(commands: Any) -> None:
    chat = _command(commands, "chat", "send one chat request to the router", "chat_cmd:chat")
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("--model", "-m", default="mock-small", help="model, alias, 'auto' or 'auto:<tier>'")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--stream", action="store_true", help="print the answer as it streams")
    chat.add_argument("--explain", action="store_true", help="list every attempt, and requested models not tried")
    chat.add_argument("--fallback", action="append", default=[], metavar="MODEL", help="fallback model (repeatable)")
    chat.add_argument("--max-tokens", type=_positive_int, help="cap on output tokens")
    chat.add_argument("--temperature", type=float, help="sampling temperature, 0..2")
    chat.add_argument("--timeout", type=_seconds, default=60.0, help="deadline in seconds (default 60)")
    _add_router_flag(chat)


def _add_embed(commands: Any) -> None:
    embed = _command(commands, "embed", "embed texts through the router (one vector per text)", "embed_cmd:embed")
    embed.add_argument("texts", nargs="+", metavar="TEXT", help="the texts to embed, in one batch")
    embed.add_argument("--model", "-m", default="mock-embed", help="embedding model or alias (default mock-embed)")
    embed.add_argument("--dimensions", type=_positive_int, help="shorter vectors, for models that can shorten them")
    embed.add_argument("--fallback", action="append", default=[], metavar="MODEL", help="fallback model (repeatable)")
    embed.add_argument("--json", action="store_true", help="print the whole answer as JSON, full vectors included")
    embed.add_argument("--timeout", type=_seconds, default=60.0, help="deadline in seconds (default 60)")
    _add_router_flag(embed)


def _add_agent(commands: Any) -> None:
    agent = _command(commands, "agent", "ask the agent; streams its steps (think → act → observe)", "agent_cmd:agent")
    agent.add_argument("question", help="what the agent should answer or do")
    agent.add_argument("--profile", "-p", default="", help="agent profile (default: the agent's default)")
    agent.add_argument("--model", "-m", default="", help="model for every step; overrides the profile ('auto' ok)")
    agent.add_argument("--fallback", action="append", default=[], metavar="MODEL", help="fallback model (repeatable)")
    agent.add_argument(
        "--tool", action="append", default=[], metavar="NAME", help="only offer these tools (repeatable)"
    )
    agent.add_argument("--max-iterations", type=int, default=0, help="0: the profile's limit")
    agent.add_argument("--max-tokens", type=int, default=0, help="token budget for the run; 0: the profile's")
    agent.add_argument("--max-cost", type=float, default=0.0, help="cost budget in USD; 0: the profile's")
    agent.add_argument("--system", default="", help="system prompt; overrides the profile's")
    agent.add_argument("--timeout", type=_seconds, default=120.0, help="deadline for the whole run, in seconds")
    agent.add_argument("--agent", help=f"agent address (default $LLMMESH_AGENT_ADDRESS or {DEFAULT_AGENT})")


def _add_auth(commands: Any) -> None:
    auth = commands.add_parser("auth", help="make tenant API keys and their hashes")
    actions = auth.add_subparsers(title="actions", metavar="ACTION", required=True)
    new_key = _command(
        actions, "new-key", "print a new random key and the tenants-file entry for it", "auth_cmd:new_key"
    )
    new_key.add_argument("--tenant", default="my-team", help="tenant name for the printed entry")
    new_key.add_argument("--id", default="", help="key label for logs and messages (not secret)")
    _command(
        actions, "hash", "read a key (prompt or stdin) and print its sha256 for the tenants file", "auth_cmd:hash_key"
    )


def _add_router_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router", help=f"router address (default $LLMMESH_ROUTER_ADDRESS or {DEFAULT_ROUTER})")


def _command(commands: Any, name: str, summary: str, target: str, *, settings: bool = False) -> Parser:
    """A subcommand whose `run` imports `services.cli.<module>` only when it runs."""
    parser: Parser = commands.add_parser(name, help=summary, description=summary, add_help=not settings)
    if settings:
        # Service commands list their LLMMESH_* settings in --help (importing the service only then).
        parser.add_argument("-h", "--help", action=_SettingsHelp, help="show this help and the settings, then exit")
    parser.set_defaults(run=_lazy(target), prog=parser.prog)
    return parser


def _lazy(target: str) -> Any:
    module, _, function = target.partition(":")

    def run(args: argparse.Namespace) -> None:
        getattr(importlib.import_module(f"services.cli.{module}"), function)(args)

    return run


class _SettingsHelp(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: Any) -> None:
        from services.cli.service_cmd import settings_help

        parser.print_help()
        print()
        print(settings_help(parser.prog.split()[1], getattr(namespace, "kind", None)))
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmmesh")
    except PackageNotFoundError:  # running from a tree that was never installed
        return "unknown (not installed)"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0, e.g. 30")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535; 0 picks a free one)")
    return int(text)

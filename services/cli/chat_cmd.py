"""`llmmesh chat` and `llmmesh models`: talk to the router and print what it says."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import router_service_pb2 as rpb
from services.cli.errors import address, mesh_error
from services.cli.main import DEFAULT_ROUTER
from services.client import MeshClient, system, text_of, user
from services.common.errors import MeshError, code_from_number

_LIST_TIMEOUT_SECONDS = 10.0


def router_address(args: argparse.Namespace) -> str:
    return address(args.router, "LLMMESH_ROUTER_ADDRESS", DEFAULT_ROUTER, "--router")


def chat(args: argparse.Namespace) -> None:
    target = router_address(args)
    messages = [system(args.system)] if args.system else []
    messages.append(user(args.prompt))
    settings = chat_pb2.GenerationSettings()
    if args.max_tokens is not None:
        settings.max_output_tokens = args.max_tokens
    if args.temperature is not None:
        settings.temperature = args.temperature
    routing = rpb.RoutingPolicy(fallback_models=args.fallback)
    requested = [args.model, *args.fallback]

    async def run() -> None:
        async with MeshClient(target, timeout=args.timeout) as client:
            if args.stream:
                attempts = await stream(client, args.model, messages, settings, explain=args.explain, routing=routing)
            else:
                started = time.perf_counter()
                answer = await client.chat(args.model, messages, settings=settings, routing=routing)
                print_response(answer, time.perf_counter() - started, explain=args.explain)
                attempts = list(answer.attempts)
            if args.explain:
                await print_passed_over(client, requested, attempts)

    report_errors(run(), target=target, timeout=args.timeout)


def models(args: argparse.Namespace) -> None:
    target = router_address(args)

    async def run() -> None:
        async with MeshClient(target, timeout=_LIST_TIMEOUT_SECONDS) as client:
            for model in await client.list_models():
                state = "available" if model.available else "unreachable"
                aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
                print(f"{model.name:<24} {model.provider:<10} {state:<12}{' MOCK' if model.mock else ''}{aliases}")

    report_errors(run(), target=target, timeout=_LIST_TIMEOUT_SECONDS)


def report_errors(coroutine: Coroutine[Any, Any, None], *, target: str, timeout: float) -> None:
    """Runs `coroutine`; a MeshError becomes one line (services.cli.errors)."""
    try:
        asyncio.run(coroutine)
    except MeshError as error:
        raise mesh_error(
            error, target=target, service="router", flag="--router", variable="LLMMESH_ROUTER_ADDRESS", timeout=timeout
        ) from None


async def print_passed_over(client: MeshClient, requested: Sequence[str], attempts: Sequence[rpb.Attempt]) -> None:
    """Names the requested models the router made no attempt on, and whether any instance serves them."""
    tried = {attempt.model for attempt in attempts}
    offered = {name: model for model in await client.list_models() for name in (model.name, *model.aliases)}
    for name in dict.fromkeys(requested):
        model = offered.get(name)
        if model is None or model.name in tried:
            continue  # `auto`, or a model that was tried
        why = "an earlier candidate answered" if model.available else "no reachable instance, tried after the others"
        print(f"   not tried: {name} ({why})")


async def stream(
    client: MeshClient,
    model: str,
    messages: list[chat_pb2.Message],
    settings: chat_pb2.GenerationSettings | None,
    *,
    explain: bool,
    routing: rpb.RoutingPolicy | None = None,
) -> list[rpb.Attempt]:
    """Prints the answer as it streams; returns the final message's attempts."""
    started = time.perf_counter()
    first_chunk: float | None = None
    attempts: list[rpb.Attempt] = []
    refused = False
    async for event in client.stream_chat(model, messages, settings=settings, routing=routing):
        kind = event.WhichOneof("event")
        if kind == "delta":
            first_chunk = first_chunk or time.perf_counter() - started
            print(event.delta.text, end="", flush=True)
            if event.delta.refusal:
                print(("" if refused else "[refusal] ") + event.delta.refusal, end="", flush=True)
                refused = True
            for call in event.delta.tool_calls:
                if call.name:
                    print(f"\n[tool call {call.name}] ", end="")
                print(call.arguments_json_delta, end="", flush=True)
        elif kind == "continuation":
            print(f"\n[continued on {event.continuation.model}: {event.continuation.reason}] ", end="")
        elif kind == "final":
            final = event.final
            print()
            _print_answer(None, final, time.perf_counter() - started, explain=explain, first_chunk=first_chunk)
            attempts = list(final.attempts)
    return attempts


def print_response(answer: rpb.ChatResponse, seconds: float, *, explain: bool) -> None:
    text = text_of(answer.message)
    if answer.message.refusal:
        text += ("\n" if text else "") + f"[refusal] {answer.message.refusal}"
    _print_answer(text, answer, seconds, explain=explain, tool_calls=answer.message.tool_calls)


def _print_answer(
    text: str | None,
    answer: rpb.ChatResponse | rpb.StreamChatFinal,
    seconds: float,
    *,
    explain: bool,
    first_chunk: float | None = None,
    tool_calls: Sequence[chat_pb2.ToolCall] = (),
) -> None:
    if text is not None:
        print(text)
    for call in tool_calls:
        print(f"[tool call {call.name}] {call.arguments_json}")
    finish = chat_pb2.FinishReason.Name(answer.finish_reason).removeprefix("FINISH_REASON_").lower()
    timing = f"{seconds * 1000:.1f} ms" + (f" (first chunk {first_chunk * 1000:.1f} ms)" if first_chunk else "")
    usage = answer.usage
    print(f"-- model {answer.model} via {answer.provider} · finish {finish} · {timing}")
    print(
        f"-- usage {usage.input_tokens} in / {usage.output_tokens} out"
        f" ({usage.cached_input_tokens} cached) · est. ${answer.estimated_cost_usd:.6f}"
    )
    if explain:
        for index, attempt in enumerate(answer.attempts, 1):
            print(_attempt_line(index, attempt))


def _attempt_line(index: int, attempt: rpb.Attempt) -> str:
    outcome = rpb.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
    latency = attempt.latency.ToNanoseconds() / 1e6
    line = f"   attempt {index}: {attempt.model}@{attempt.provider} {attempt.instance or '-'} {outcome}"
    line += f" {code_from_number(attempt.code).name}" if attempt.outcome == rpb.ATTEMPT_OUTCOME_FAILED else ""
    line += f" {latency:.1f} ms" + (" (hedge)" if attempt.hedged else "")
    if attempt.message:
        line += f" — {attempt.message}"
    if attempt.moved_on_because:
        line += f" → moved on: {attempt.moved_on_because}"
    return line

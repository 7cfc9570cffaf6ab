"""CPU per call of one provider adapter, in process, against its loopback fake (no gRPC, no router).

    python tests/bench/adapter_cpu.py openai|anthropic|google [--calls 200] [--pieces 50] [--label base]

Calls the adapter's `stream_chat` (streams of about `--pieces` text deltas)
and `chat` one after another on uvloop and reads the CPU time of the event
loop's own thread (getrusage RUSAGE_THREAD) over the measured calls, after 20
unmeasured ones: the fake runs in its own threads and is not counted, so the
figure is the adapter's request building, SDK transport, parsing and mapping.
CPU time, not wall time, so a loaded machine changes it little.

Run as a script (not `-m`) so that PYTHONPATH alone picks the code under
test, e.g. an older commit side by side with this tree:

    git archive <commit> | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base:/tmp/base/gen .venv/bin/python tests/bench/adapter_cpu.py anthropic --label base
    .venv/bin/python tests/bench/adapter_cpu.py anthropic --label new
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable
from typing import Any

import uvloop

from llmmesh.v1 import chat_pb2
from llmmesh.v1 import provider_service_pb2 as pb

WARMUP_CALLS = 20
Setup = tuple[Any, Callable[[int, bool], None], Any, str]


def _thread_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def _user(text: str) -> chat_pb2.Message:
    return chat_pb2.Message(role=chat_pb2.ROLE_USER, content=[chat_pb2.ContentPart(text=text)])


def _anthropic(pieces: int) -> Setup:
    import anthropic

    from services.providers.anthropic.adapter import AnthropicAdapter
    from services.testing import fake_anthropic as fa

    fake = fa.FakeAnthropic(api_key="bench-key").start()
    body = fa.message(text="hello world " * 20)

    def script(count: int, stream: bool) -> None:
        fake.reset()
        reply = (lambda: fa.sse_reply(fa.stream_events(body, pieces=pieces))) if stream else lambda: fa.json_reply(body)
        fake.script(*[reply() for _ in range(count)])

    client = anthropic.AsyncAnthropic(api_key="bench-key", base_url=fake.url, max_retries=0)
    return fake, script, AnthropicAdapter(client, models=[], default_max_tokens=1024), "claude-haiku-4-5"


def _openai(pieces: int) -> Setup:
    from openai import AsyncOpenAI

    from services.providers.openai.adapter import OpenAIAdapter
    from services.testing import fake_openai as fo

    fake = fo.FakeOpenAI(keep_requests=False).start()
    words = [f"word{index} " for index in range(pieces)]

    def script(count: int, stream: bool) -> None:
        reply = (lambda: fo.Reply.stream(fo.text_stream(words))) if stream else lambda: fo.Reply.json(fo.completion())
        fake.script(*[reply() for _ in range(count)])

    client = AsyncOpenAI(api_key="bench-key", base_url=fake.url, max_retries=0)
    return fake, script, OpenAIAdapter(client, models=["gpt-4o-mini"]), "gpt-4o-mini"


def _google(pieces: int) -> Setup:
    from services.providers.google.adapter import GoogleAdapter
    from services.testing import fake_google as fg

    fake = fg.FakeGemini(api_key="bench-key").start()
    words = [f"word{index} " for index in range(pieces)]

    def script(count: int, stream: bool) -> None:
        if stream:
            fake.script(*[fg.Reply(events=fg.text_stream(words)) for _ in range(count)])
        else:
            body = fg.response([fg.text_part("".join(words))], usage_metadata=fg.usage(5, pieces))
            fake.script(*[fg.Reply(body=body) for _ in range(count)])

    adapter = GoogleAdapter(api_key="bench-key", base_url=fake.url, api_version="v1beta")
    return fake, script, adapter, "gemini-2.5-flash"


async def _measure(adapter: Any, script: Callable[[int, bool], None], model: str, calls: int, stream: bool) -> str:
    script(calls + WARMUP_CALLS, stream)
    before = 0.0
    deltas = 0
    for index in range(calls + WARMUP_CALLS):
        if index == WARMUP_CALLS:
            before = _thread_cpu_s()
        messages = [_user("hi")]
        if stream:
            events = [
                event
                async for event in adapter.stream_chat(
                    pb.ProviderServiceStreamChatRequest(model=model, messages=messages), timeout=10
                )
            ]
            if not events[-1].HasField("final"):
                raise SystemExit(f"stream ended without a final: {events[-1]}")
            deltas = len(events) - 1
        else:
            await adapter.chat(pb.ProviderServiceChatRequest(model=model, messages=messages), timeout=10)
    used_us = (_thread_cpu_s() - before) / calls * 1e6
    if stream:
        return f"stream {used_us:,.0f} us/call ({deltas} deltas, {used_us / max(deltas, 1):,.0f} us/delta)"
    return f"unary {used_us:,.0f} us/call"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("provider", choices=("openai", "anthropic", "google"))
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--pieces", type=int, default=50)
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    fake, script, adapter, model = {"openai": _openai, "anthropic": _anthropic, "google": _google}[args.provider](
        args.pieces
    )

    async def run() -> list[str]:
        try:
            return [await _measure(adapter, script, model, args.calls, stream) for stream in (True, False)]
        finally:
            await adapter.aclose()

    try:
        print(args.label, args.provider, "; ".join(uvloop.run(run())), flush=True)
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

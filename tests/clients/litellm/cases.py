"""The litellm SDK against the mesh's HTTP door: run with the LiteLLM venv's python, not llmmesh's.

`python tests/clients/litellm/cases.py BASE_URL API_KEY` runs every case once and prints
one JSON object on its last line, case name to what the client saw, or to the exception it
raised (class name, its bases, message); tests/router/test_litellm_client.py
asserts on it. Only litellm and the standard library are imported here:
llmmesh is not installed in that venv. Models are named the way a LiteLLM
user names any OpenAI-compatible server: `openai/<mesh model>` with
`api_base` the door.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import litellm

litellm.telemetry = False
litellm.suppress_debug_info = True  # else it prints a provider list to stdout with each exception

USER = [{"role": "user", "content": "hi there"}]
MONTHLY = [{"role": "user", "content": "what is the monthly total?"}]
# Above mock-small's 8192-token window, within mock-large's. Distinct words: the mock streams its echo word by
# word, and LiteLLM ends a stream repeating one chunk many times as a broken model's.
LONG = [{"role": "user", "content": " ".join(f"word{i}" for i in range(9000))}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"the {name} tool",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        },
    }
    for name in ("current_time", "calculator")
]
RESULTS = {"current_time": "12:00", "calculator": "14808"}
# A system prompt with a cache breakpoint, as LiteLLM documents prompt caching (4 + 5 of the mock's tokens).
CACHED = [
    {"role": "system", "content": [{"type": "text", "text": "a b c d e", "cache_control": {"type": "ephemeral"}}]},
    *USER,
]


def _calls(message: Any) -> list[dict[str, Any]]:
    return [
        {"id": call.id, "name": call.function.name, "arguments": json.loads(call.function.arguments)}
        for call in message.tool_calls or ()
    ]


def _chat(answer: Any) -> dict[str, Any]:
    choice = answer.choices[0]
    return {
        "text": choice.message.content,
        "model": answer.model,
        "finish_reason": choice.finish_reason,
        "tool_calls": _calls(choice.message),
        "prompt_tokens": answer.usage.prompt_tokens,
    }


class Door:
    def __init__(self, base_url: str, key: str) -> None:
        self.kwargs = {"api_base": f"{base_url}/v1", "api_key": key, "timeout": 30, "num_retries": 0}

    def chat(self) -> dict[str, Any]:
        return _chat(litellm.completion(model="openai/mock-small", messages=USER, **self.kwargs))

    async def achat(self) -> dict[str, Any]:
        return _chat(await litellm.acompletion(model="openai/mock-small", messages=USER, **self.kwargs))

    def stream(self) -> dict[str, Any]:
        chunks = list(litellm.completion(model="openai/mock-small", messages=USER, stream=True, **self.kwargs))
        return _streamed(chunks, USER)

    async def astream(self) -> dict[str, Any]:
        stream = await litellm.acompletion(model="openai/mock-small", messages=USER, stream=True, **self.kwargs)
        return _streamed([chunk async for chunk in stream], USER)

    def tools(self) -> dict[str, Any]:
        """The scripted agent model calls both tools, then answers from the results sent back."""
        first = litellm.completion(model="openai/mock-agent", messages=MONTHLY, tools=TOOLS, **self.kwargs)
        message = first.choices[0].message
        results = [
            {"role": "tool", "tool_call_id": call.id, "content": RESULTS[call.function.name]}
            for call in message.tool_calls or ()
        ]
        history = [*MONTHLY, message.model_dump(exclude_none=True), *results]
        second = litellm.completion(model="openai/mock-agent", messages=history, tools=TOOLS, **self.kwargs)
        return {"first": _chat(first), "second": _chat(second)}

    def stream_tools(self) -> dict[str, Any]:
        chunks = list(
            litellm.completion(model="openai/mock-agent", messages=MONTHLY, tools=TOOLS, stream=True, **self.kwargs)
        )
        return _streamed(chunks, MONTHLY)

    def responses(self) -> dict[str, Any]:
        answer = litellm.responses(model="openai/mock-small", input="hi there", instructions="be brief", **self.kwargs)
        return _response(answer)

    def responses_stream(self) -> dict[str, Any]:
        events = list(litellm.responses(model="openai/mock-small", input="hi there", stream=True, **self.kwargs))
        kinds = [str(getattr(event.type, "value", event.type)) for event in events]
        pairs = list(zip(events, kinds, strict=True))
        completed = [event.response for event, kind in pairs if kind == "response.completed"]
        return {
            "types": kinds,
            "deltas": "".join(event.delta for event, kind in pairs if kind == "response.output_text.delta"),
            "completed": _response(completed[0]) if completed else None,
        }

    def responses_tools(self) -> dict[str, Any]:
        tools = [{"type": "function", **tool["function"]} for tool in TOOLS]
        answer = litellm.responses(model="openai/mock-agent", input=MONTHLY[0]["content"], tools=tools, **self.kwargs)
        return _response(answer)

    def embedding(self) -> dict[str, Any]:
        answer = litellm.embedding(model="openai/vec-a", input=["hello", "world"], **self.kwargs)
        # LiteLLM passes `dimensions` to openai/ models named text-embedding-3* only, unless allowed.
        narrow = litellm.embedding(
            model="openai/vec-a", input="hello", dimensions=4, allowed_openai_params=["dimensions"], **self.kwargs
        )
        return {
            "vectors": [item["embedding"] for item in answer.data],
            "narrow": [item["embedding"] for item in narrow.data],
            "model": answer.model,
            "prompt_tokens": answer.usage.prompt_tokens,
        }

    def embedding_dimensions_unallowed(self) -> dict[str, Any]:
        """What a caller gets without `allowed_openai_params` (README says so): LiteLLM refuses before sending."""
        answer = litellm.embedding(model="openai/vec-a", input="hello", dimensions=4, **self.kwargs)
        return {"vectors": [item["embedding"] for item in answer.data]}

    def prompt_cache(self) -> dict[str, Any]:
        """A breakpoint on the system prompt; the usage as LiteLLM parsed it, on a first turn and a later one."""
        later = [*CACHED, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
        first = litellm.completion(model="openai/mock-small", messages=CACHED, **self.kwargs)
        second = litellm.completion(model="openai/mock-small", messages=later, **self.kwargs)
        return {"first": _cache_usage(first.usage), "later": _cache_usage(second.usage)}

    def context_window(self) -> dict[str, Any]:
        """No fallback given: the error as LiteLLM classifies it (the case records the exception)."""
        return _chat(litellm.completion(model="openai/mock-small", messages=LONG, **self.kwargs))

    def context_window_fallback_dict(self) -> dict[str, Any]:
        """litellm.completion's own kwarg: on ContextWindowExceededError it calls the mapped model."""
        fallbacks = {"openai/mock-small": "openai/mock-large"}
        return _chat(
            litellm.completion(
                model="openai/mock-small", messages=LONG, context_window_fallback_dict=fallbacks, **self.kwargs
            )
        )

    def _router(self) -> Any:
        deployment = {"api_base": self.kwargs["api_base"], "api_key": self.kwargs["api_key"]}
        return litellm.Router(
            model_list=[
                {"model_name": "small", "litellm_params": {"model": "openai/mock-small", **deployment}},
                {"model_name": "large", "litellm_params": {"model": "openai/mock-large", **deployment}},
            ],
            context_window_fallbacks=[{"small": ["large"]}],
            num_retries=0,
            timeout=30,
        )

    def router_fallback(self) -> dict[str, Any]:
        return _chat(self._router().completion(model="small", messages=LONG))

    async def router_afallback(self) -> dict[str, Any]:
        return _chat(await self._router().acompletion(model="small", messages=LONG))

    async def router_stream_fallback(self) -> dict[str, Any]:
        """Refused before its first token, a stream is an HTTP 400 too: the fallback streams instead."""
        stream = await self._router().acompletion(model="small", messages=LONG, stream=True)
        return _streamed([chunk async for chunk in stream], LONG)


def _streamed(chunks: list[Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    texts = [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
    built = litellm.stream_chunk_builder(chunks, messages=messages)
    return {
        "text": "".join(texts),
        "deltas": sum(1 for text in texts if text),
        "model": chunks[-1].model if chunks else None,
        "finish_reasons": [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices],
        "built": _chat(built),
    }


def _response(answer: Any) -> dict[str, Any]:
    items = []
    for item in answer.output:
        kind = getattr(item, "type", None)
        if kind == "message":
            items.append({"type": kind, "text": "".join(part.text for part in item.content)})
        elif kind == "function_call":
            items.append({"type": kind, "name": item.name, "arguments": json.loads(item.arguments)})
        else:
            items.append({"type": str(kind)})
    return {"status": answer.status, "model": answer.model, "output": items}


def _cache_usage(usage: Any) -> dict[str, Any]:
    details = usage.prompt_tokens_details
    return {
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": getattr(details, "cached_tokens", None),
        "cache_write_tokens": getattr(details, "cache_write_tokens", None),
        "cache_creation_input_tokens": getattr(usage, "cache_creation_input_tokens", None),
        "cache_read_input_tokens": getattr(usage, "cache_read_input_tokens", None),
    }


def _error(error: BaseException) -> dict[str, Any]:
    return {
        "error": type(error).__name__,
        "bases": [cls.__name__ for cls in type(error).__mro__],
        "message": str(error)[:800],
    }


SYNC = (
    "chat",
    "stream",
    "tools",
    "stream_tools",
    "responses",
    "responses_stream",
    "responses_tools",
    "embedding",
    "embedding_dimensions_unallowed",
    "prompt_cache",
    "context_window",
    "context_window_fallback_dict",
    "router_fallback",
)
ASYNC = ("achat", "astream", "router_afallback", "router_stream_fallback")


def _run(door: Door) -> dict[str, Any]:
    """The sync cases outside any event loop, then the async ones in one loop (LiteLLM caches its clients)."""
    out: dict[str, Any] = {"litellm_version": _version()}
    for name in SYNC:
        out[name] = _guarded(getattr(door, name))
    out.update(asyncio.run(_run_async(door)))
    return out


async def _run_async(door: Door) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ASYNC:
        try:
            out[name] = await getattr(door, name)()
        except Exception as error:  # noqa: BLE001 - each case reports its exception for the test to judge
            out[name] = _error(error)
    return out


def _guarded(case: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return case()
    except Exception as error:  # noqa: BLE001 - each case reports its exception for the test to judge
        return _error(error)


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("litellm")


if __name__ == "__main__":
    print(json.dumps(_run(Door(sys.argv[1], sys.argv[2]))))

"""Token log probabilities between providers' shapes and the contract's `TokenLogprob`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmmesh.v1 import chat_pb2


def _bytes(values: Iterable[int] | None) -> bytes:
    return bytes(values) if values else b""


def from_openai(items: Iterable[Any]) -> list[chat_pb2.TokenLogprob]:
    """OpenAI's ChatCompletionTokenLogprob objects (token, logprob, bytes, top_logprobs) as TokenLogprobs."""
    return [
        chat_pb2.TokenLogprob(
            token=item.token,
            logprob=item.logprob,
            token_bytes=_bytes(item.bytes),
            top_logprobs=[
                chat_pb2.TopLogprob(token=top.token, logprob=top.logprob, token_bytes=_bytes(top.bytes))
                for top in item.top_logprobs or []
            ],
        )
        for item in items
    ]


def to_openai(items: Iterable[chat_pb2.TokenLogprob]) -> list[dict[str, Any]]:
    """TokenLogprobs in OpenAI's wire shape (`bytes` is null where the provider gave none)."""
    return [
        {
            **_openai_entry(item),
            "top_logprobs": [_openai_entry(top) for top in item.top_logprobs],
        }
        for item in items
    ]


def _openai_entry(item: chat_pb2.TokenLogprob | chat_pb2.TopLogprob) -> dict[str, Any]:
    return {
        "token": item.token,
        "logprob": item.logprob,
        "bytes": list(item.token_bytes) if item.token_bytes else None,
    }

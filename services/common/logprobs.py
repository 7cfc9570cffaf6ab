"""Token log probabilities between providers' shapes and the contract's `TokenLogprob`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmmesh.v1 import chat_pb2


def _bytes(values: Iterable[int] | None) -> bytes:
    return bytes(values) if values else b""


def from_openai(items: Iterable[Any]) -> list[chat_pb2.TokenLogprob]:
    """OpenAI's `logprobs.content` entries as decoded JSON (token, logprob, bytes, top_logprobs) as TokenLogprobs."""
    return [
        chat_pb2.TokenLogprob(
            token=item.get("token"),
            logprob=item.get("logprob"),
            token_bytes=_bytes(item.get("bytes")),
            top_logprobs=[
                chat_pb2.TopLogprob(
                    token=top.get("token"), logprob=top.get("logprob"), token_bytes=_bytes(top.get("bytes"))
                )
                for top in item.get("top_logprobs") or []
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

"""Gemini's wire JSON read through `wire.Fields` maps exactly as the SDK's parsed GenerateContentResponse does."""

from __future__ import annotations

import base64
import binascii
import json
import warnings
from typing import Any

import pytest
from google.genai import models, types

from services.providers.google import wire
from services.providers.google.mapping import ResponseReader

SIG = base64.b64encode(b"\xfb\xff\x00sig").decode()
URLSAFE_SIG = base64.urlsafe_b64encode(b"\xfb\xff\x00sig").decode().rstrip("=")

BODIES: dict[str, dict[str, Any]] = {
    "text and usage": {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi "}, {"text": "there"}]}, "index": 0}],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
    },
    "thoughts, signatures, a call, the end": {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "think", "thought": True, "thoughtSignature": SIG},
                        {"text": " more", "thought": True},
                        {"text": "answer", "thoughtSignature": URLSAFE_SIG},
                        {
                            "functionCall": {"name": "get", "args": {"city": "Paris", "n": [1, 2.5, None]}},
                            "thoughtSignature": SIG,
                        },
                        {"functionCall": {"id": "up-1", "name": "put", "args": {}}},
                    ],
                },
                "finishReason": "STOP",
                "finishMessage": "done",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 7,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 2,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 21,
        },
    },
    "grounding, citations, logprobs": {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Paris is in France. é"}]},
                "finishReason": "MAX_TOKENS",
                "groundingMetadata": {
                    "groundingChunks": [
                        {"web": {"uri": "https://a.example", "title": "A"}},
                        {"retrievedContext": {"uri": "gs://b", "title": "B", "text": "t", "documentName": "d"}},
                        {"maps": {"uri": "https://m.example", "title": "M"}},
                    ],
                    "groundingSupports": [
                        {"segment": {"startIndex": 0, "endIndex": 5, "partIndex": 0}, "groundingChunkIndices": [0, 1]}
                    ],
                },
                "citationMetadata": {"citationSources": [{"uri": "https://c.example", "startIndex": 0, "endIndex": 9}]},
                "logprobsResult": {
                    "chosenCandidates": [{"token": "Paris", "logProbability": -0.5}],
                    "topCandidates": [{"candidates": [{"token": "Paris", "logProbability": -0.5}, {"token": "Rome"}]}],
                },
            }
        ],
    },
    "content filter": {"candidates": [{"finishReason": "PROHIBITED_CONTENT"}]},
    "an unknown finish reason": {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "NEW_KIND"}]},
    "prompt blocked": {"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "no"}},
    "empty": {},
}


def _sdk(body: dict[str, Any]) -> types.GenerateContentResponse:
    """The chunk as `AsyncModels._generate_content_stream` turns it into the SDK's model."""
    converted = models._GenerateContentResponse_from_mldev(json.loads(json.dumps(body)), None, None)
    return types.GenerateContentResponse._from_response(response=converted, kwargs={})


def _read(response: Any) -> tuple[Any, ...]:
    reader = ResponseReader(turn=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK's warning for an unknown enum value, on both sides
        deltas = reader.feed(response)
    return (
        [delta.SerializeToString(deterministic=True) for delta in deltas],
        reader.message().SerializeToString(deterministic=True),
        reader.unified_finish_reason(),
        reader.unified_usage().SerializeToString(deterministic=True),
        reader.response_extensions().SerializeToString(deterministic=True),
        reader.model_version,
        reader.response_id,
        reader.block_reason,
        reader.block_message,
        reader.saw_candidate,
    )


@pytest.mark.parametrize("name", list(BODIES))
def test_each_body_maps_as_the_sdk_model_does(name):
    body = BODIES[name]
    ours = _read(wire.answer(json.dumps(body)))
    assert ours == _read(_sdk(body))
    assert ours[0] or not body.get("candidates") or name == "content filter"  # the mapping did read something


def test_a_stream_of_chunks_folds_as_the_sdk_models_do():
    """Chunk after chunk in one reader (thought joining, citations seen once, usage from the last)."""
    chunks = [BODIES["text and usage"], BODIES["thoughts, signatures, a call, the end"]]
    ours, sdk = ResponseReader(turn=0), ResponseReader(turn=0)
    for chunk in chunks:
        assert [d.SerializeToString() for d in ours.feed(wire.answer(json.dumps(chunk)))] == [
            d.SerializeToString() for d in sdk.feed(_sdk(chunk))
        ]
    assert ours.message() == sdk.message()
    assert ours.unified_usage() == sdk.unified_usage()


@pytest.mark.parametrize("value", ["YWJj", "YWI", "YWI=", "ab+/", "ab-_", "", "Y", "ab+/ab-_", "YW Jj", "@@@@"])
def test_signatures_decode_as_pydantic_decodes_them(value):
    """Standard or URL-safe alphabet, padding optional; what pydantic refuses raises ValueError here."""
    try:
        expected: bytes | None = types.Part.model_validate({"thoughtSignature": value}).thought_signature
    except ValueError:
        expected = None
    if expected is None and value:
        with pytest.raises((ValueError, binascii.Error)):
            wire.signature_bytes(value)
    elif value:
        assert wire.signature_bytes(value) == expected


def test_a_body_of_the_wrong_shape_fails_in_the_mapping():
    """Not a JSON object, or a part list that is no list: a shape error the adapter reports as malformed."""
    with pytest.raises(AttributeError):
        ResponseReader(turn=0).feed(wire.answer("[1, 2]"))
    with pytest.raises(TypeError):
        ResponseReader(turn=0).feed(wire.answer('{"candidates": [{"content": {"parts": 5}}]}'))

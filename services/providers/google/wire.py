"""Gemini's answers as decoded JSON, without the SDK's per-response pydantic models.

The adapter builds the request with google-genai's own transform and sends it
through the SDK's API client (`async_request` / `async_request_streamed`: the
SDK still adds the API key and its headers, applies the per-call timeout and
raises its `APIError`s, error chunks inside a stream included), but reads each
answer as the decoded JSON. The SDK would turn every response (every streamed
chunk) into a `GenerateContentResponse` (`_GenerateContentResponse_from_mldev`,
then `_from_response`: extra-field pruning, type checks and pydantic
validation), which was half of the adapter's CPU per chunk.

`Fields` gives the decoded JSON the attribute reads mapping.py and
citations.py make on the SDK's models, with what those models would hold:

- snake_case names read the camelCase keys of the wire (`usage_metadata` →
  `usageMetadata`); `citation_metadata.citations` reads `citationSources`, as
  the SDK's `_CitationMetadata_from_mldev` renames it;
- on the response and on each candidate, only the keys the SDK's
  `_GenerateContentResponse_from_mldev` / `_Candidate_from_mldev` keep are
  read (the SDK drops the rest, `finishMessage` among them: google-genai
  3.3.0 never gives it on the Gemini API, so neither does this);
- a key the answer lacks reads as None (an optional field of the models);
- `thought_signature` is bytes, decoded from base64 as pydantic does (standard
  or URL-safe alphabet, padding optional; anything else raises ValueError,
  which the adapter reports as a body of the wrong shape);
- `finish_reason` and `block_reason` are the SDK's enums (`types.FinishReason`,
  `types.BlockedReason`), unknown values included, as the SDK builds them;
- a function call's `args` stays a dict (a `Fields` is one).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from google.genai import _common, errors, models, types

#: Names whose wire key is not the plain camelCase of the attribute.
_KEYS = {"citations": "citationSources"}
#: Attributes read as one of the SDK's enums.
_ENUMS: dict[str, type[_common.CaseInSensitiveEnum]] = {
    "finish_reason": types.FinishReason,
    "block_reason": types.BlockedReason,
}
_camel_cache: dict[str, str] = {}


def _camel(name: str) -> str:
    key = _camel_cache.get(name)
    if key is None:
        head, *rest = name.split("_")
        key = _KEYS.get(name) or head + "".join(word.capitalize() for word in rest)
        _camel_cache[name] = key
    return key


class Fields(dict[str, Any]):
    """A decoded JSON object read by snake_case attribute; nested objects come back as `Fields` too.

    Attribute reads never shadow dict methods (`items`, `get`, ...): no field the mapping reads has such a name.
    """

    __slots__ = ()

    #: The keys the SDK's `*_from_mldev` converter keeps at this level (None: all, as pydantic reads them).
    _kept: frozenset[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        key = _camel(name)
        if self._kept is not None and key not in self._kept:
            return None
        value = self.get(key)
        if value is None:
            return None
        if name == "thought_signature":
            return signature_bytes(value)
        enum = _ENUMS.get(name)
        if enum is not None:
            return _enum(enum, value)
        return wrap(value)


class Response(Fields):
    """A whole response or stream chunk: only what `_GenerateContentResponse_from_mldev` keeps."""

    __slots__ = ()
    _kept = frozenset({"candidates", "modelVersion", "promptFeedback", "responseId", "usageMetadata", "modelStatus"})

    def __getattr__(self, name: str) -> Any:
        if name == "candidates":
            value = self.get("candidates")
            if type(value) is list:
                return [Candidate(item) if type(item) is dict else item for item in value]
            return value
        return super().__getattr__(name)


class Candidate(Fields):
    """One candidate: only what `_Candidate_from_mldev` keeps (it drops `finishMessage`, for one)."""

    __slots__ = ()
    _kept = frozenset(
        {
            "content",
            "citationMetadata",
            "tokenCount",
            "finishReason",
            "groundingMetadata",
            "avgLogprobs",
            "index",
            "logprobsResult",
            "safetyRatings",
            "urlContextMetadata",
            "continuationToken",
        }
    )


def wrap(value: Any) -> Any:
    """Objects as `Fields`, lists of them likewise; anything else as it is."""
    if type(value) is dict:
        return Fields(value)
    if type(value) is list:
        return [Fields(item) if type(item) is dict else item for item in value]
    return value


def signature_bytes(value: Any) -> bytes:
    """A base64 field as pydantic's `val_json_bytes='base64'` reads it (one alphabet, padding optional)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a base64 string, got {type(value).__name__}")
    urlsafe = "-" in value or "_" in value
    if urlsafe and ("+" in value or "/" in value):
        raise binascii.Error("mixed base64 alphabets")
    padded = value + "=" * (-len(value) % 4)
    return base64.b64decode(padded, altchars=b"-_" if urlsafe else None, validate=True)


def _enum(enum: type[_common.CaseInSensitiveEnum], value: Any) -> Any:
    if not isinstance(value, str):
        raise TypeError(f"expected an enum name, got {type(value).__name__}")
    return enum(value)  # an unknown name: the SDK's warning and a member of that name, as pydantic gets


def answer(body: str | None) -> Any:
    """One response body (a unary answer or one stream chunk), decoded as the SDK decodes it.

    A body that is not a JSON object comes back as it decoded, and the mapping's first read fails on it.
    """
    decoded = json.loads(body) if body else {}
    return Response(decoded) if type(decoded) is dict else decoded


def request(
    api_client: Any, *, model: str, contents: list[types.Content], config: types.GenerateContentConfig, stream: bool
) -> tuple[str, dict[str, Any], types.HttpOptions | None]:
    """Path, body and per-call HTTP options, built as `AsyncModels._generate_content[_stream]` builds them.

    The Gemini Developer API only (the adapter never runs the client in Vertex mode).
    """
    parameters = types._GenerateContentParameters(model=model, contents=contents, config=config)
    body = models._GenerateContentParameters_to_mldev(api_client, parameters, None, parameters)
    method = "{model}:streamGenerateContent?alt=sse" if stream else "{model}:generateContent"
    url = body.get("_url")
    path = method.format_map(url) if url else method
    query = body.get("_query")
    if query:
        path = f"{path}?{urlencode(query)}"
    body.pop("config", None)
    http_options = parameters.config.http_options if parameters.config is not None else None
    body = _common.encode_unserializable_types(_common.convert_to_dict(body))
    return path, body, http_options


async def chunks(
    api_client: Any, path: str, body: dict[str, Any], http_options: types.HttpOptions | None
) -> AsyncIterator[Any]:
    """The stream's chunks as `Response` views, with `async_request_streamed`'s rules.

    That method hands each decoded SSE chunk on re-encoded as a JSON string (for the models to decode
    again); here the decoded chunk is read as it is. Its one check stays: a chunk whose first key is
    "error" (what its `json.dumps(chunk).startswith('{"error":')` tests) raises the SDK's APIError.
    """
    request = api_client._build_request("post", path, body, http_options)
    response = await api_client._async_request(http_request=request, http_options=http_options, stream=True)
    async for chunk in response.async_segments():
        if type(chunk) is dict and next(iter(chunk), None) == "error":
            await errors.APIError.raise_error_async(chunk.get("error", {}).get("code"), chunk, response)
        yield Response(chunk) if type(chunk) is dict else chunk

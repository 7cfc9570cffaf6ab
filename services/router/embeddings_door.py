"""POST /v1/embeddings on the HTTP door: OpenAI's wire format onto RouterService.Embed's path.

The body becomes an EmbedRequest and goes through the same admission (input
limits, model kind, quotas) and the same EmbeddingRouter (deadlines, retries,
fallbacks, breakers) as gRPC Embed. `encoding_format` exists only here: the
mesh carries float32 vectors, and base64 is those floats as little-endian
float32 bytes, as OpenAI sends them (the openai SDK asks for base64 by default).
"""

from __future__ import annotations

import array
import base64
import re
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from starlette.responses import JSONResponse, Response

from llmmesh.v1 import router_service_pb2 as rpb
from services.common.errors import MeshError, invalid_argument
from services.router import openai_response
from services.router.door_wire import ATTEMPTS_HEADER, attempts_header, error_response
from services.router.openai_request import BodyFields

Encoding = Literal["float", "base64"]
_INPUT_INDEX = re.compile(r"^inputs(\[\d+\])?")


@dataclass(frozen=True)
class ParsedEmbed:
    request: rpb.EmbedRequest
    encoding: Encoding
    #: The caller sent one string (not a list): errors then name `input`, not `input[0]`.
    single: bool


def parse(payload: object) -> ParsedEmbed:
    """The EmbedRequest for an OpenAI embeddings body; every problem names the caller's field."""
    if not isinstance(payload, dict):
        raise invalid_argument("body", "must be a JSON object with `model` and `input`")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_argument("model", "must be a non-empty string naming an embedding model (GET /v1/models)")
    inputs, single = _inputs(payload.get("input"))
    request = rpb.EmbedRequest(model=model, inputs=inputs)
    dimensions = payload.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise invalid_argument("dimensions", f"must be a positive integer, got {dimensions!r}")
        request.dimensions = dimensions
    raw_encoding = payload.get("encoding_format") or "float"
    if raw_encoding not in ("float", "base64"):
        raise invalid_argument("encoding_format", f"must be 'float' or 'base64', got {raw_encoding!r}")
    encoding: Encoding = "base64" if raw_encoding == "base64" else "float"
    user = payload.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise invalid_argument("user", "must be a string")
        request.user = user
    return ParsedEmbed(request=request, encoding=encoding, single=single)


def _inputs(value: object) -> tuple[list[str], bool]:
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list) or not value:
        raise invalid_argument("input", "must be a string or a non-empty array of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            # Token arrays would need the upstream's tokenizer; the mesh embeds text.
            raise invalid_argument(f"input[{index}]", "must be a string; token arrays are not supported, send text")
    return list(value), False


def answer(response: rpb.EmbedResponse, encoding: Encoding) -> Response:
    """OpenAI's CreateEmbeddingResponse, with the mesh's attempts and provider in headers."""
    data = [
        {"object": "embedding", "index": item.index, "embedding": _encoded(list(item.values), encoding)}
        for item in response.embeddings
    ]
    tokens = response.usage.input_tokens
    body: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": response.response_model or response.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "llmmesh": {
            "model": response.model,
            "provider": response.provider,
            "attempts": openai_response.attempts(response.attempts),
            "estimated_cost_usd": response.estimated_cost_usd,
        },
    }
    headers = {
        ATTEMPTS_HEADER: attempts_header(body["llmmesh"]["attempts"]),
        "x-llmmesh-provider": response.provider,
        "x-request-id": f"embd-{uuid.uuid4().hex}",
    }
    return JSONResponse(body, headers=headers)


def _encoded(values: list[float], encoding: Encoding) -> list[float] | str:
    if encoding == "float":
        return values
    packed = array.array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def error(failure: MeshError, parsed: ParsedEmbed | None) -> Response:
    single = parsed.single if parsed is not None else False

    def param_of(field: str, _fields: BodyFields | None) -> str:
        return _param(field, single)

    return error_response(failure, param_of=param_of)


def _param(field: str, single: bool) -> str:
    """The router's `inputs[i]` is the caller's `input[i]` (or `input` when it sent one string)."""
    if single:
        return _INPUT_INDEX.sub("input", field)
    return _INPUT_INDEX.sub(lambda match: "input" + (match.group(1) or ""), field)

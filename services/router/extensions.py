"""A chat request's `extensions`: checked once before the first attempt, then cut per candidate.

Keys are provider kinds (`openai`, `anthropic`, `google`, `mock`: every
instance of that kind gets the options) or provider instance names of the
routing file (`vllm-local`: that instance only). An attempt on an instance
gets its kind's options with its own instance's merged over them, key by
key, under its kind's name, as adapters expect.

Refused with INVALID_ARGUMENT naming the field, before any attempt: a key
that names no kind or instance, a value that is not an object, an option
under a name the adapter fills from the shared request (`temperature`: use
settings.temperature), and an option the adapter of that kind does not take.
"""

from __future__ import annotations

from google.protobuf import struct_pb2

from services.common.errors import invalid_argument
from services.common.extensions import MAPPED_FIELDS, OPTIONS_BY_KIND
from services.router.config import Candidate, RoutingFile


def validate(extensions: struct_pb2.Struct, routing: RoutingFile) -> None:
    """Raises INVALID_ARGUMENT naming the first bad `extensions` field."""
    for key, value in extensions.fields.items():
        field = f"extensions.{key}"
        kind = _kind_of(key, routing)
        if kind is None:
            instances = ", ".join(sorted(name for name in routing.providers if name not in OPTIONS_BY_KIND))
            raise invalid_argument(
                field,
                f"{key!r} names no provider; use a kind ({', '.join(OPTIONS_BY_KIND)})"
                + (f" or a provider instance of the routing file ({instances})" if instances else ""),
            )
        if value.WhichOneof("kind") != "struct_value":
            raise invalid_argument(field, f"must be an object of {kind} request options")
        allowed = OPTIONS_BY_KIND[kind]
        if kind == "openai":
            _check_extra_body(field, value.struct_value)
        for option in value.struct_value.fields:
            if allowed is not None and option in allowed:
                continue
            if option in MAPPED_FIELDS:
                raise invalid_argument(
                    f"{field}.{option}",
                    f"is filled by the adapter from the shared request; set {MAPPED_FIELDS[option]} instead",
                )
            if allowed is not None:
                raise invalid_argument(
                    f"{field}.{option}",
                    f"is not an option the {kind} adapter takes; use one of {', '.join(sorted(allowed))}",
                )


def _check_extra_body(field: str, options: struct_pb2.Struct) -> None:
    """OpenAI's `extra_body` is merged into the wire body: it must be an object and add, not replace."""
    extra = options.fields.get("extra_body")
    if extra is None:
        return
    if extra.WhichOneof("kind") != "struct_value":
        raise invalid_argument(f"{field}.extra_body", "must be an object")
    for option in extra.struct_value.fields:
        if option in MAPPED_FIELDS:
            raise invalid_argument(
                f"{field}.extra_body.{option}",
                f"is filled by the adapter from the shared request; set {MAPPED_FIELDS[option]} instead",
            )


def for_candidate(extensions: struct_pb2.Struct, candidate: Candidate) -> struct_pb2.Value | None:
    """The options an attempt on `candidate` carries under `extensions[<kind>]`, or None."""
    own = extensions.fields.get(candidate.kind)
    targeted = extensions.fields.get(candidate.provider) if candidate.provider != candidate.kind else None
    if targeted is None:
        return own
    merged = struct_pb2.Value()
    if own is not None:
        merged.CopyFrom(own)
    for option, value in targeted.struct_value.fields.items():
        merged.struct_value.fields[option].CopyFrom(value)
    if own is None:
        merged.struct_value.SetInParent()
    return merged


def _kind_of(key: str, routing: RoutingFile) -> str | None:
    provider = routing.providers.get(key)
    if provider is not None:
        return provider.kind or key
    return key if key in OPTIONS_BY_KIND else None

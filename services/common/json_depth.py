"""One nesting limit for the free-form JSON callers send: tool schemas, response schemas, extensions.

Checked with an explicit stack, before anything walks the value recursively
(protobuf's Struct conversions, the SDKs' schema transforms, json_format): a
schema nested a few hundred levels deep otherwise ends in RecursionError deep
inside a library, and protobuf refuses to decode past 100 message levels
(about 30 JSON levels, since each level is a Struct, a map entry and a Value).
"""

from __future__ import annotations

from google.protobuf import struct_pb2

from services.common.errors import MeshError, invalid_argument

#: Objects and arrays inside one another, the outermost counted as 1. A JSON Schema
#: spends two per object level (the schema and its `properties`): 8 object levels fit.
MAX_JSON_DEPTH = 16


def too_deep(field: str, limit: int = MAX_JSON_DEPTH, applies_to: str = "schemas and extensions") -> MeshError:
    return invalid_argument(
        field,
        f"nests objects and arrays more than {limit} levels deep (the limit for {applies_to}); "
        "flatten it, e.g. with $defs and $ref",
    )


def python_depth_exceeds(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if decoded JSON (dicts and lists) nests deeper than `limit`."""
    stack: list[tuple[object, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        # Only containers go on the stack: a long list of numbers costs one comprehension.
        stack.extend([(child, depth + 1) for child in children if type(child) in _CONTAINERS])
    return False


def struct_depth_exceeds(value: struct_pb2.Struct | struct_pb2.ListValue, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if a protobuf Struct (or ListValue) nests deeper than `limit`."""
    stack: list[tuple[struct_pb2.Struct | struct_pb2.ListValue, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.fields.values() if isinstance(node, struct_pb2.Struct) else node.values
        for child in children:
            kind = child.WhichOneof("kind")
            if kind == "struct_value":
                stack.append((child.struct_value, depth + 1))
            elif kind == "list_value":
                stack.append((child.list_value, depth + 1))
    return False


_CONTAINERS = (dict, list)

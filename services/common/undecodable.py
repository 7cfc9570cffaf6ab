"""Which field makes a request undecodable: for INVALID_ARGUMENT that names it, not just `request`.

protobuf refuses a whole message when one string in it is not UTF-8 (a
lone surrogate a client encoded anyway) or when it nests deeper than 100
message levels (a JSON schema in a Struct, about 30 JSON levels). The
message cannot be decoded to look at, so this walks the wire format: for
each length-delimited field of the message, try its own bytes; descend into
the field that fails, until a string or a JSON (Struct) field. Best effort:
None when no single field explains the failure.
"""

from __future__ import annotations

from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

_JSON_TYPES = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
_LENGTH_DELIMITED = 2
_SKIP = {0: -1, 1: 8, 5: 4}  # wire type → fixed size; -1: a varint
# Our contract nests a handful of message levels above any Struct; more means a loop.
_MAX_DESCENT = 32

Found = tuple[_descriptor.FieldDescriptor, int, bytes]


def locate(message_class: type[Message], data: bytes) -> str | None:
    """The path (`tools[0].parameters`, `messages[2].content[0].text`) of the field that does not decode."""
    descriptor, path = message_class.DESCRIPTOR, ""
    for _ in range(_MAX_DESCENT):
        try:
            found = _failing_field(descriptor, data)
        except DecodeError:  # bytes that are not protobuf at all
            found = None
        if found is None:
            return path or None
        field, index, data = found
        name = f"{field.name}[{index}]" if field.is_repeated else field.name
        path = f"{path}.{name}" if path else name
        kind = field.message_type
        if kind is None or kind.full_name in _JSON_TYPES or kind.GetOptions().map_entry:
            return path
        descriptor = kind
    return path or None


def _failing_field(descriptor: _descriptor.Descriptor, data: bytes) -> Found | None:
    seen: dict[int, int] = {}
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type != _LENGTH_DELIMITED:
            size = _SKIP.get(wire_type)
            if size is None:
                return None  # groups: not in our contract
            position = _varint(data, position)[1] if size < 0 else position + size
            continue
        length, position = _varint(data, position)
        chunk, position = data[position : position + length], position + length
        field = descriptor.fields_by_number.get(number)
        if field is None:
            continue
        index = seen.get(number, 0)
        seen[number] = index + 1
        if _fails(field, chunk):
            return field, index, chunk
    return None


def _fails(field: _descriptor.FieldDescriptor, chunk: bytes) -> bool:
    if field.type == _descriptor.FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False
    if field.type != _descriptor.FieldDescriptor.TYPE_MESSAGE:
        return False
    try:
        message_factory.GetMessageClass(field.message_type).FromString(chunk)
    except DecodeError:
        return True
    return False


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while position < len(data):
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            break
    raise DecodeError("truncated varint")

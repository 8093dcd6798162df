"""The protobuf wire format where the server handles bytes itself, so that every envelope is
stored and served exactly as its producer encoded it.

Parsing a message and serializing it again is not the identity: map entries come
out in hash order, fields in number order, repeated singular fields once. So the
server takes each envelope's bytes from the request as sent, and answers reads
with the stored records as they are (they are already EventBatch entries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from google.protobuf.message import Message

from pipeline_events.store.base import read_varint, varint

M = TypeVar("M", bound=Message)


class Received(NamedTuple, Generic[M]):
    """A request message and the bytes it was parsed from."""

    message: M
    data: bytes


def keeping_bytes(message_type: type[M]) -> Callable[[bytes], Received[M]]:
    """A request deserializer that parses `message_type` and keeps the bytes beside it."""

    def parse(data: bytes) -> Received[M]:
        return Received(message_type.FromString(data), data)

    parse.message_type = message_type  # type: ignore[attr-defined]  # named in errors
    return parse


_VARINT, _FIXED64, _LENGTH, _GROUP_START, _GROUP_END, _FIXED32 = range(6)


def field_bytes(data: bytes, number: int) -> list[bytes]:
    """The contents of every occurrence of length-delimited field `number` at the top level of
    a serialized message, in order: for a repeated message field, each element's bytes.

    `data` must be a message that parsed (this only walks what the parser accepted).
    """
    found: list[bytes] = []
    offset, end = 0, len(data)
    while offset < end:
        key, offset = read_varint(data, offset)
        wire_type = key & 7
        if wire_type == _LENGTH:
            length, offset = read_varint(data, offset)
            if key >> 3 == number:
                found.append(data[offset : offset + length])
            offset += length
        else:
            offset = _skip(data, offset, wire_type, key >> 3)
    return found


def _skip(data: bytes, offset: int, wire_type: int, number: int) -> int:
    """The offset after a field's value (other than length-delimited) that starts at `offset`."""
    if wire_type == _VARINT:
        return read_varint(data, offset)[1]
    if wire_type == _FIXED64:
        return offset + 8
    if wire_type == _FIXED32:
        return offset + 4
    if wire_type == _GROUP_START:
        while True:
            key, offset = read_varint(data, offset)
            if key & 7 == _GROUP_END and key >> 3 == number:
                return offset
            if key & 7 == _LENGTH:
                length, offset = read_varint(data, offset)
                offset += length
            else:
                offset = _skip(data, offset, key & 7, key >> 3)
    raise ValueError(f"wire type {wire_type} at offset {offset}")


def length_delimited(number: int, content: bytes) -> bytes:
    """Field `number` holding `content` (a message, or concatenated repeated elements' bytes)."""
    return varint(number << 3 | _LENGTH) + varint(len(content)) + content


def varint_field(number: int, value: int) -> bytes:
    """Field `number` holding the varint `value` (nothing for 0, as proto3 writes it)."""
    return varint(number << 3 | _VARINT) + varint(value) if value else b""

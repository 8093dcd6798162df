"""Field descriptions of the domain dataclasses, read once from their type hints.

Every converter (the protobuf adapter, the Rust JSON codec) walks these
instead of repeating the 16 events' field lists by hand.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import datetime

from pipeline_events import domain


class Kind(enum.Enum):
    """What a field holds, as far as encoding is concerned."""

    UUID = "uuid"
    STR = "str"
    U64 = "u64"
    BOOL = "bool"
    F64 = "f64"
    BYTES = "bytes"
    TIMESTAMP = "timestamp"
    DURATION = "duration"
    ENUM = "enum"
    PERMISSION = "permission"
    RECORD = "record"  # a nested domain dataclass
    LIST = "list"
    MAP = "map"  # string keys


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field: its name, kind, whether it is a Rust `Option`, and what it contains."""

    name: str
    kind: Kind
    optional: bool = False
    item: FieldSpec | None = None  # element of a LIST, value of a MAP
    type: type | None = None  # the enum or record class


_SCALARS: dict[object, Kind] = {
    uuid.UUID: Kind.UUID,
    str: Kind.STR,
    int: Kind.U64,
    bool: Kind.BOOL,
    float: Kind.F64,
    bytes: Kind.BYTES,
    datetime: Kind.TIMESTAMP,
    domain.Duration: Kind.DURATION,
}


def _spec(name: str, hint: object) -> FieldSpec:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))
        return dataclasses.replace(_spec(name, inner), optional=True)
    if hint == domain.Permission:
        return FieldSpec(name, Kind.PERMISSION)
    if hint in _SCALARS:
        return FieldSpec(name, _SCALARS[hint])
    origin = typing.get_origin(hint)
    if origin is tuple:
        return FieldSpec(name, Kind.LIST, item=_spec(name, args[0]))
    if origin is dict:
        return FieldSpec(name, Kind.MAP, item=_spec(name, args[1]))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return FieldSpec(name, Kind.ENUM, type=hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return FieldSpec(name, Kind.RECORD, type=hint)
    raise TypeError(f"no encoding for field {name!r} of type {hint!r}")


@functools.cache
def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The fields of a domain dataclass in declaration order."""
    hints = typing.get_type_hints(cls, vars(domain))
    return tuple(_spec(f.name, hints[f.name]) for f in dataclasses.fields(cls))


@functools.cache
def own_field_specs(cls: type[domain.Event]) -> tuple[FieldSpec, ...]:
    """An event's own fields (the payload), without the envelope's common ones."""
    return tuple(spec for spec in field_specs(cls) if spec.name not in domain.COMMON_FIELDS)

"""Snapshots: a read model's state as versioned, deterministic JSON bytes, and back.

One codec for every state class, compiled once per class from its type hints
(as `fields.field_specs` serves the event codecs), so a field added to a state
is in its snapshots without further code. The document:

    {"format": 1, "fold_version": N, "type": "ProcessingRunState", "state": {...}}

Dataclasses become objects keyed by field name in declaration order; maps
become lists of [key, value] pairs, which keep their order (a run's stages in
the order they started) and allow UUID keys; timestamps are [seconds, nanos];
bytes are base64; integers beyond 64 bits and non-finite floats are strings
(JSON has neither). The same state always gives the same bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import math
import types
import typing
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import orjson

from pipeline_events import domain
from pipeline_events.projections.base import FOLD_VERSION, SnapshotError
from pipeline_events.timestamps import NanoDatetime

FORMAT = 1  # the layout of the document around the state

_T = TypeVar("_T")
Converter = Callable[[Any], Any]
_INT_RANGE = range(-(1 << 63), 1 << 64)  # what orjson writes as a JSON number
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class Snapshots:
    """`to_bytes` and `from_bytes` for a state class (a mixin of the read models' states)."""

    __slots__ = ()  # the states are slotted dataclasses: no __dict__ through the mixin

    def to_bytes(self) -> bytes:
        """A snapshot of this state (see `encode`)."""
        return encode(self)

    @classmethod
    def from_bytes(cls: type[_T], data: bytes) -> _T:
        """The state of a snapshot.

        Raises:
            SnapshotError: another fold version's snapshot, or damaged bytes.
        """
        return decode(data, cls)


def encode(state: object) -> bytes:
    """The snapshot bytes of a state (any of the projections' dataclasses)."""
    cls = type(state)
    return orjson.dumps(
        {
            "format": FORMAT,
            "fold_version": FOLD_VERSION,
            "type": cls.__name__,
            # (mypy checks a class object against Hashable with its instances' __hash__,
            # a false arg-type error; see domain.Event.new.)
            "state": _encoder(cls)(state),  # type: ignore[arg-type]
        }
    )


def decode(data: bytes, cls: type[_T]) -> _T:
    """The state of class `cls` in snapshot bytes.

    Raises:
        SnapshotError: the bytes are not a snapshot of `cls` by this fold version
            (rebuild the state from the log), or are damaged.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise SnapshotError(f"not a snapshot: {error}") from error
    if not isinstance(document, dict) or document.keys() != {
        "format",
        "fold_version",
        "type",
        "state",
    }:
        raise SnapshotError("not a snapshot: expected format, fold_version, type and state")
    if document["format"] != FORMAT or document["fold_version"] != FOLD_VERSION:
        raise SnapshotError(
            f"snapshot of format {document['format']!r}, fold version "
            f"{document['fold_version']!r}; this is format {FORMAT}, fold version "
            f"{FOLD_VERSION}: rebuild the state from the log"
        )
    if document["type"] != cls.__name__:
        raise SnapshotError(f"a snapshot of {document['type']!r}, not of {cls.__name__}")
    try:
        return typing.cast(_T, _decoder(cls)(document["state"]))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise SnapshotError(f"damaged {cls.__name__} snapshot: {error!r}") from error


# --- encoders -------------------------------------------------------------------------------


def _same(value: Any) -> Any:
    return value


def _enc_int(value: int) -> int | str:
    return value if value in _INT_RANGE else str(value)


def _enc_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _enc_time(value: datetime) -> list[int]:
    instant = NanoDatetime.from_datetime(value)
    return [instant.epoch_seconds, instant.nanosecond]


def _enc_bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _enc_permission(value: domain.Permission) -> int | dict[str, str]:
    if isinstance(value, domain.CustomPermission):
        return {"custom": value.name}
    return int(value)


def _optional_arg(hint: Any) -> Any:
    """X of `X | None`; None for any other hint."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        rest = [arg for arg in args if arg is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            return rest[0]
        if hint != domain.Permission:
            raise TypeError(f"snapshots cannot hold {hint!r}")
    return None


@functools.cache
def _encoder(hint: Any) -> Converter:
    if hint == domain.Permission:
        return _enc_permission
    inner = _optional_arg(hint)
    if inner is not None:
        encode_inner = _encoder(inner)
        return lambda value: None if value is None else encode_inner(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        item = _encoder(args[0])
        return lambda values: [item(v) for v in values]
    if origin is dict:
        key, val = _encoder(args[0]), _encoder(args[1])
        return lambda values: [[key(k), val(v)] for k, v in values.items()]
    if hint is bool or hint is str:
        return _same
    if hint is int:
        return _enc_int
    if hint is float:
        return _enc_float
    if hint is bytes:
        return _enc_bytes
    if hint is uuid.UUID:
        return str
    if hint is datetime:
        return _enc_time
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda member: member.value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        plan = [(name, _encoder(field_hint)) for name, field_hint in _fields(hint)]
        return lambda obj: {name: enc(getattr(obj, name)) for name, enc in plan}
    raise TypeError(f"snapshots cannot hold {hint!r}")


def _fields(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


# --- decoders -------------------------------------------------------------------------------


def _typed(kind: type) -> Converter:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        return value

    return check


def _dec_int(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is str:
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def _dec_float(value: Any) -> float:
    if type(value) is str:
        return _NON_FINITE[value]
    if type(value) in (float, int):
        return float(value)
    raise TypeError(f"expected a number, got {value!r}")


def _dec_time(value: Any) -> NanoDatetime:
    seconds, nanos = value
    return NanoDatetime.from_seconds_nanos(_dec_int(seconds), _dec_int(nanos))


def _dec_bytes(value: Any) -> bytes:
    return base64.b64decode(_typed(str)(value), validate=True)


def _dec_permission(value: Any) -> domain.Permission:
    if isinstance(value, dict):
        return domain.CustomPermission(_typed(str)(value["custom"]))
    return domain.StandardPermission(_dec_int(value))


@functools.cache
def _decoder(hint: Any) -> Converter:
    if hint == domain.Permission:
        return _dec_permission
    inner = _optional_arg(hint)
    if inner is not None:
        decode_inner = _decoder(inner)
        return lambda value: None if value is None else decode_inner(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        item = _decoder(args[0])
        return lambda values: origin(item(v) for v in _typed(list)(values))
    if origin is dict:
        key, val = _decoder(args[0]), _decoder(args[1])
        return lambda pairs: {key(k): val(v) for k, v in _typed(list)(pairs)}
    if hint is bool or hint is str:
        return _typed(hint)
    if hint is int:
        return _dec_int
    if hint is float:
        return _dec_float
    if hint is bytes:
        return _dec_bytes
    if hint is uuid.UUID:
        return lambda text: uuid.UUID(_typed(str)(text))
    if hint is datetime:
        return _dec_time
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        plan = [(name, _decoder(field_hint)) for name, field_hint in _fields(hint)]
        names = {name for name, _ in plan}
        cls = hint

        def record(document: Any) -> Any:
            if _typed(dict)(document).keys() != names:
                raise ValueError(f"{cls.__name__} fields {sorted(document)}, not {sorted(names)}")
            return cls(**{name: dec(document[name]) for name, dec in plan})

        return record
    raise TypeError(f"snapshots cannot hold {hint!r}")

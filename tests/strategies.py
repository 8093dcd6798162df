"""Hypothesis strategies for arbitrary valid domain events of all 16 classes.

`events()` draws any event, `event_of(cls)` one class. Values cover what the
upstream Rust types can hold: u64 0..2**64-1, any text without surrogates
(empty included), None or set Options (empty and zero included), every float
(-0.0 and subnormals; NaN and infinities only with `allow_non_finite=True`,
since upstream's JSON cannot round-trip them), bytes, UTC timestamps with
nanoseconds in years 1..9999 as `NanoDatetime`, standard and custom
permissions, metadata and stage-metrics maps, and Durations up to u64 seconds.
The strategies are built from `fields.field_specs`, so they follow the domain.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from hypothesis import strategies as st

from pipeline_events import domain
from pipeline_events.fields import FieldSpec, Kind, field_specs
from pipeline_events.timestamps import NanoDatetime

__all__ = ["event_of", "events", "timestamps"]

U64_MAX = 2**64 - 1
_FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
_MAX_ITEMS = 4  # lists and maps: enough to exercise them, small enough to stay fast


def timestamps() -> st.SearchStrategy[NanoDatetime]:
    """UTC instants in years 1..9999 whose nanoseconds are whole seconds, ms, µs or arbitrary."""
    nanos = st.one_of(
        st.just(0),
        st.integers(0, 999).map(lambda ms: ms * 1_000_000),
        st.integers(0, 999_999).map(lambda us: us * 1000),
        st.integers(0, 999_999_999),
    )
    return st.builds(
        NanoDatetime.from_seconds_nanos, st.integers(_FIRST_SECOND, _LAST_SECOND), nanos
    )


def _texts() -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=24)


def _scalar(kind: Kind, allow_non_finite: bool) -> st.SearchStrategy[Any]:
    if kind is Kind.UUID:
        # Any 128 bits: upstream's pipeline ids are ULIDs, so no version nibble is implied.
        return st.integers(0, 2**128 - 1).map(lambda bits: uuid.UUID(int=bits))
    if kind is Kind.STR:
        return _texts()
    if kind is Kind.U64:
        return st.integers(0, U64_MAX)
    if kind is Kind.BOOL:
        return st.booleans()
    if kind is Kind.F64:
        return st.floats(allow_nan=allow_non_finite, allow_infinity=allow_non_finite)
    if kind is Kind.BYTES:
        return st.binary(max_size=64)
    if kind is Kind.TIMESTAMP:
        return timestamps()
    if kind is Kind.DURATION:
        return st.builds(domain.Duration, st.integers(0, U64_MAX), st.integers(0, 999_999_999))
    if kind is Kind.PERMISSION:
        return st.sampled_from(domain.StandardPermission) | st.builds(
            domain.CustomPermission, _texts()
        )
    raise TypeError(f"no strategy for {kind}")  # pragma: no cover


def _values(spec: FieldSpec, allow_non_finite: bool, *, nullable: bool = True) -> Any:
    if spec.optional and nullable:
        return st.none() | _values(spec, allow_non_finite, nullable=False)
    if spec.kind is Kind.ENUM:
        return st.sampled_from(spec.type)  # type: ignore[arg-type]
    if spec.kind is Kind.LIST:
        items = _values(spec.item, allow_non_finite)  # type: ignore[arg-type]
        return st.lists(items, max_size=_MAX_ITEMS).map(tuple)
    if spec.kind is Kind.MAP:
        items = _values(spec.item, allow_non_finite)  # type: ignore[arg-type]
        return st.dictionaries(_texts(), items, max_size=_MAX_ITEMS)
    if spec.kind is Kind.RECORD:
        return _record(spec.type, allow_non_finite)  # type: ignore[arg-type]
    return _scalar(spec.kind, allow_non_finite)


@functools.cache
def _record(cls: type, allow_non_finite: bool) -> st.SearchStrategy[Any]:
    fields = {spec.name: _values(spec, allow_non_finite) for spec in field_specs(cls)}
    return st.builds(cls, **fields)


def event_of(
    cls: type[domain.Event], *, allow_non_finite: bool = False
) -> st.SearchStrategy[domain.Event]:
    """Arbitrary valid events of one class."""
    return _record(cls, allow_non_finite)


def events(*, allow_non_finite: bool = False) -> st.SearchStrategy[domain.Event]:
    """Arbitrary valid events of any of the 16 classes."""
    return st.one_of(
        [event_of(cls, allow_non_finite=allow_non_finite) for cls in domain.EVENT_CLASSES]
    )

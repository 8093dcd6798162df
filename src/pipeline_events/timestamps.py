"""NanoDatetime: a timezone-aware UTC datetime that keeps nanoseconds."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_SECOND = 1_000_000_000
_ONE_SECOND = _dt.timedelta(seconds=1)
_ONE_MICROSECOND = _dt.timedelta(microseconds=1)


class NanoDatetime(_dt.datetime):
    """A UTC `datetime` that also carries the nanoseconds below its microseconds.

    `datetime` stops at microseconds; protobuf Timestamps and upstream's chrono
    values do not. Equality, hashing and ordering include the nanoseconds.
    Arithmetic falls back to plain `datetime` (microseconds).
    """

    __slots__ = ("_nanosecond", "_seconds")
    _nanosecond: int
    _seconds: int | None  # epoch seconds, computed once: encoders read it per event

    def __new__(cls, *args: Any, nanosecond: int | None = None, **kwargs: Any) -> NanoDatetime:
        """Build like a datetime; `nanosecond` (0..999_999_999) overrides the microseconds."""
        if nanosecond is not None:
            if not 0 <= nanosecond < _NS_PER_SECOND:
                raise ValueError(f"nanosecond must be in 0..999999999, not {nanosecond}")
            kwargs["microsecond"] = nanosecond // 1000
        value = super().__new__(cls, *args, **kwargs)
        if value.tzinfo is None:
            raise ValueError("NanoDatetime needs a timezone")
        value._nanosecond = value.microsecond * 1000 if nanosecond is None else nanosecond
        value._seconds = None
        return value

    @classmethod
    def from_epoch_ns(cls, epoch_ns: int) -> NanoDatetime:
        """The instant `epoch_ns` nanoseconds after 1970-01-01T00:00:00Z."""
        seconds, nanos = divmod(epoch_ns, _NS_PER_SECOND)
        return cls.from_seconds_nanos(seconds, nanos)

    @classmethod
    def utc(
        cls, year: int, month: int, day: int, hour: int, minute: int, second: int, nanos: int
    ) -> NanoDatetime:
        """A UTC instant from its calendar fields; the fast constructor decoders use."""
        if not 0 <= nanos < _NS_PER_SECOND:
            raise ValueError(f"nanos must be in 0..999999999, not {nanos}")
        value = _dt.datetime.__new__(
            cls, year, month, day, hour, minute, second, nanos // 1000, UTC
        )
        value._nanosecond = nanos
        value._seconds = None
        return value

    @classmethod
    def from_seconds_nanos(cls, seconds: int, nanos: int) -> NanoDatetime:
        """The instant of a protobuf Timestamp (seconds since the epoch, nanos 0..999_999_999)."""
        if not 0 <= nanos < _NS_PER_SECOND:
            raise ValueError(f"nanos must be in 0..999999999, not {nanos}")
        # Decoders build one of these per event, and events cluster in time: the calendar
        # fields of an int's minute come from a cache, the base constructor does the rest.
        if seconds.__class__ is int:
            fields = _MINUTE_FIELDS.get(seconds // 60) or _minute_fields(seconds)
            second = seconds % 60
        else:  # e.g. a float, which timedelta accepts: exactly as before the cache
            whole = _EPOCH + _dt.timedelta(seconds=seconds)
            fields = (whole.year, whole.month, whole.day, whole.hour, whole.minute)
            second = whole.second
        value = _dt.datetime.__new__(
            cls, fields[0], fields[1], fields[2], fields[3], fields[4], second,
            nanos // 1000, UTC,
        )  # fmt: skip
        value._nanosecond = nanos
        value._seconds = seconds
        return value

    @classmethod
    def from_datetime(cls, value: _dt.datetime) -> NanoDatetime:
        """An aware datetime converted to UTC (a NanoDatetime keeps its nanoseconds)."""
        if isinstance(value, NanoDatetime) and value.utcoffset() == _dt.timedelta(0):
            return value
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no defined instant; give it a timezone")
        nanos = value.nanosecond if isinstance(value, NanoDatetime) else value.microsecond * 1000
        utc = value.astimezone(UTC)
        return cls(
            utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second,
            tzinfo=UTC, nanosecond=nanos,
        )  # fmt: skip

    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> NanoDatetime:  # type: ignore[override]
        """The current instant in UTC, with the clock's nanoseconds."""
        return cls.from_epoch_ns(time.time_ns())

    @property
    def nanosecond(self) -> int:
        """Nanoseconds within the second (0..999_999_999)."""
        return self._nanosecond

    @property
    def epoch_seconds(self) -> int:
        """Whole seconds since the epoch (floor), as in a protobuf Timestamp."""
        if self._seconds is None:
            self._seconds = (self - _EPOCH) // _ONE_SECOND
        return self._seconds

    @property
    def epoch_ns(self) -> int:
        """Nanoseconds since the epoch."""
        return self.epoch_seconds * _NS_PER_SECOND + self._nanosecond

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _dt.datetime) and other.tzinfo is not None:
            return self.epoch_ns == _epoch_ns(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self.epoch_ns)

    def __lt__(self, other: _dt.datetime) -> bool:
        return self.epoch_ns < _epoch_ns(other)

    def __le__(self, other: _dt.datetime) -> bool:
        return self.epoch_ns <= _epoch_ns(other)

    def __gt__(self, other: _dt.datetime) -> bool:
        return self.epoch_ns > _epoch_ns(other)

    def __ge__(self, other: _dt.datetime) -> bool:
        return self.epoch_ns >= _epoch_ns(other)

    def __repr__(self) -> str:
        return f"NanoDatetime.from_epoch_ns({self.epoch_ns})"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (NanoDatetime.from_epoch_ns, (self.epoch_ns,))


#: (year, month, day, hour, minute) by minute since the epoch; cleared when full.
_MINUTE_FIELDS: dict[int, tuple[int, int, int, int, int]] = {}
_MINUTE_FIELDS_MAX = 4096


def _minute_fields(seconds: int) -> tuple[int, int, int, int, int]:
    """The calendar fields of the minute holding `seconds` (an int), now cached.

    Computed from `seconds` itself, as before the cache, so that the errors outside
    years 1-9999 (OverflowError) are what they always were. Years 1-9999 start and end
    on minute boundaries, so a cached minute never hides an out-of-range second.
    """
    whole = _EPOCH + _dt.timedelta(seconds=seconds)
    fields = (whole.year, whole.month, whole.day, whole.hour, whole.minute)
    if len(_MINUTE_FIELDS) >= _MINUTE_FIELDS_MAX:
        _MINUTE_FIELDS.clear()
    _MINUTE_FIELDS[seconds // 60] = fields
    return fields


def _epoch_ns(value: _dt.datetime) -> int:
    """Nanoseconds since the epoch of any aware datetime."""
    if isinstance(value, NanoDatetime):
        return value.epoch_ns
    return (value - _EPOCH) // _ONE_MICROSECOND * 1000

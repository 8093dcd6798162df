"""Rust JSON: the serde_json form the upstream Rust crate reads and writes."""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import json
import math
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from pipeline_events import domain
from pipeline_events.errors import DecodeError, EncodeError
from pipeline_events.fields import FieldSpec, Kind, field_specs, own_field_specs
from pipeline_events.timestamps import NanoDatetime

__all__ = ["decode", "encode"]

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
_NS_PER_SECOND = 1_000_000_000
_UTC = _dt.UTC
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_DAYS_PER_400_YEARS = 146_097

Converter = Callable[[Any], Any]


class _Invalid(Exception):
    """A value that cannot be converted; `where` collects path segments, innermost first."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where: list[str] = []

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.where))


class _OutOfRange:
    """A number beyond f64: serde_json skips it in ignored fields and rejects it elsewhere."""

    def __repr__(self) -> str:
        return "a number out of range"


_OUT_OF_RANGE = _OutOfRange()


def _key_segment(key: str) -> str:
    return "[" + json.dumps(key, ensure_ascii=False) + "]"


def _describe(value: Any) -> str:
    """serde's wording for an unexpected JSON value."""
    if value is _OUT_OF_RANGE:
        return repr(value)
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _wrong_type(value: Any, expected: str) -> _Invalid:
    return _Invalid(f"invalid type: {_describe(value)}, expected {expected}")


def _variant_name(member: enum.Enum) -> str:
    """Our enum member name as upstream's variant name: TOP_SECRET -> TopSecret."""
    return "".join(part.capitalize() for part in member.name.split("_"))


def _upstream_order(cls: type) -> tuple[FieldSpec, ...]:
    """Fields in Rust declaration order: events put their own fields between the ids and the time."""
    specs = field_specs(cls)
    if not issubclass(cls, domain.Event):
        return specs
    common = {spec.name: spec for spec in specs if spec.name in domain.COMMON_FIELDS}
    return (
        common["event_id"],
        common["pipeline_id"],
        *own_field_specs(cls),
        common["occurred_at"],
        common["version"],
    )


# --- Encoding -----------------------------------------------------------------------------


def _enc_uuid(value: Any) -> Any:
    if value.__class__ is uuid.UUID:
        return value  # orjson writes the lowercase hyphenated form itself
    if isinstance(value, uuid.UUID):
        return str(value)
    raise _Invalid(f"expected a UUID, not {type(value).__name__}")


def _enc_str(value: Any) -> Any:
    if value.__class__ is not str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a str, not {type(value).__name__}")
        value = str(value)
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Invalid("contains a lone surrogate; Rust strings must be valid UTF-8") from None
    return value


def _enc_u64(value: Any) -> Any:
    if value.__class__ is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"expected an int, not {type(value).__name__}")
        value = int(value)
    if 0 <= value <= U64_MAX:
        return value
    raise _Invalid(f"{value} is outside u64 (0..=18446744073709551615)")


def _enc_bool(value: Any) -> Any:
    if value is True or value is False:
        return value
    raise _Invalid(f"expected a bool, not {type(value).__name__}")


def _enc_f64(value: Any) -> Any:
    if value.__class__ is not float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid(f"expected a float, not {type(value).__name__}")
        try:
            value = float(value)
        except OverflowError:
            raise _Invalid(f"{value} is too large for an f64") from None
    if -1e16 < value < 1e16:
        return value  # orjson's plain decimal form is serde_json's (both are ryu)
    if math.isfinite(value):
        # orjson writes `1e+16`; serde_json (ryu) writes `1e16`.
        return orjson.Fragment(orjson.dumps(value).replace(b"e+", b"e"))
    return None  # serde_json writes NaN and the infinities as null


def _enc_bytes(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return list(bytes(value))
    raise _Invalid(f"expected bytes, not {type(value).__name__}")


def _enc_timestamp(value: Any) -> str:
    if value.__class__ is NanoDatetime and value.tzinfo is _UTC:
        nanos = value.nanosecond
    elif isinstance(value, _dt.datetime):
        offset = value.utcoffset()
        if offset is None:
            raise _Invalid("a naive datetime has no defined instant; give it a timezone")
        nanos = value.nanosecond if isinstance(value, NanoDatetime) else value.microsecond * 1000
        if offset:
            try:
                value = value.astimezone(_UTC)
            except OverflowError:
                raise _Invalid(f"{value.isoformat()} is outside years 1..9999 in UTC") from None
    else:
        raise _Invalid(f"expected a datetime, not {type(value).__name__}")
    # chrono's to_rfc3339: 0, 3, 6 or 9 fractional digits (SecondsFormat::AutoSi), +00:00.
    text = _dt.datetime.isoformat(value, timespec="seconds")[:19]
    if nanos == 0:
        return text + "+00:00"
    if nanos % 1_000_000 == 0:
        return f"{text}.{nanos // 1_000_000:03d}+00:00"
    if nanos % 1000 == 0:
        return f"{text}.{nanos // 1000:06d}+00:00"
    return f"{text}.{nanos:09d}+00:00"


def _enc_duration(value: Any) -> Any:
    if not isinstance(value, domain.Duration):
        raise _Invalid(f"expected a Duration, not {type(value).__name__}")
    secs, nanos = value.secs, value.nanos
    if secs.__class__ is not int or not 0 <= secs <= U64_MAX:
        raise _Invalid(f"Duration.secs {secs!r} is not a u64")
    if nanos.__class__ is not int or not 0 <= nanos < _NS_PER_SECOND:
        raise _Invalid(f"Duration.nanos {nanos!r} is not in 0..=999999999")
    return {"secs": secs, "nanos": nanos}


def _enum_encoder(cls: type[enum.Enum]) -> Converter:
    names = {member: _variant_name(member) for member in cls}

    def encode_enum(value: Any) -> Any:
        if value.__class__ is cls:
            return names[value]
        raise _Invalid(f"expected a {cls.__name__}, not {value!r}")

    return encode_enum


_PERMISSION_NAMES = {member: _variant_name(member) for member in domain.StandardPermission}


def _enc_permission(value: Any) -> Any:
    if value.__class__ is domain.StandardPermission:
        return _PERMISSION_NAMES[value]
    if value.__class__ is domain.CustomPermission:
        return {"Custom": _enc_str(value.name)}
    raise _Invalid(f"expected a StandardPermission or CustomPermission, not {value!r}")


def _list_encoder(item: Converter) -> Converter:
    def encode_list(value: Any) -> Any:
        if not isinstance(value, tuple | list):
            raise _Invalid(f"expected a tuple, not {type(value).__name__}")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except _Invalid as error:
                error.where.append(f"[{index}]")
                raise
        return out

    return encode_list


def _map_encoder(item: Converter) -> Converter:
    def encode_map(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Invalid(f"expected a dict, not {type(value).__name__}")
        out = {}
        for key, element in value.items():
            try:
                out[_enc_str(key)] = item(element)
            except _Invalid as error:
                error.where.append(_key_segment(key) if isinstance(key, str) else f"[{key!r}]")
                raise
        return out

    return encode_map


def _optional_encoder(inner: Converter) -> Converter:
    def encode_optional(value: Any) -> Any:
        return None if value is None else inner(value)

    return encode_optional


_SCALAR_ENCODERS: dict[Kind, Converter] = {
    Kind.UUID: _enc_uuid,
    Kind.STR: _enc_str,
    Kind.U64: _enc_u64,
    Kind.BOOL: _enc_bool,
    Kind.F64: _enc_f64,
    Kind.BYTES: _enc_bytes,
    Kind.TIMESTAMP: _enc_timestamp,
    Kind.DURATION: _enc_duration,
    Kind.PERMISSION: _enc_permission,
}


def _encoder(spec: FieldSpec, *, nullable: bool = True) -> Converter:
    if spec.optional and nullable:
        return _optional_encoder(_encoder(spec, nullable=False))
    if spec.kind in _SCALAR_ENCODERS:
        return _SCALAR_ENCODERS[spec.kind]
    if spec.kind is Kind.ENUM:
        return _enum_encoder(spec.type)  # type: ignore[arg-type]
    if spec.kind is Kind.LIST:
        return _list_encoder(_encoder(spec.item))  # type: ignore[arg-type]
    if spec.kind is Kind.MAP:
        return _map_encoder(_encoder(spec.item))  # type: ignore[arg-type]
    return _record_encoder(spec.type)  # type: ignore[arg-type]


@functools.cache
def _record_encoder(cls: type) -> Converter:
    plan = tuple((spec.name, _encoder(spec)) for spec in _upstream_order(cls))

    def encode_record(value: Any) -> Any:
        if not isinstance(value, cls):
            raise _Invalid(f"expected a {cls.__name__}, not {type(value).__name__}")
        out = {}
        for name, convert in plan:
            try:
                out[name] = convert(getattr(value, name))
            except _Invalid as error:
                error.where.append("." + name)
                raise
        return out

    return encode_record


def encode(event: domain.Event) -> str:
    """The event as upstream's serde_json writes it: compact, externally tagged, declaration order."""
    cls = type(event)
    if domain.EVENT_TYPES.get(cls.__name__) is not cls:
        raise EncodeError(f"not one of the 16 pipeline events: {cls.__name__}")
    try:
        tree = {cls.__name__: _record_encoder(cls)(event)}
    except _Invalid as error:
        raise EncodeError(f"{error.path(cls.__name__)}: {error.reason}") from None
    return orjson.dumps(tree).decode()


# --- Decoding -----------------------------------------------------------------------------

_new_object = object.__new__
_set_uuid_int = uuid.UUID.__dict__["int"].__set__
_set_uuid_is_safe = uuid.UUID.__dict__["is_safe"].__set__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_UUIDS: dict[str, uuid.UUID] = {}  # pipeline and processing ids repeat throughout a stream


def _parse_uuid(text: str) -> uuid.UUID:
    """uuid's `Uuid::parse_str`: hyphenated, simple, `{braced}` or `urn:uuid:`, any hex case."""
    size = len(text)
    if size == 38 and text[0] == "{" and text[-1] == "}":
        hyphenated = text[1:37]
    elif size == 45 and text.startswith("urn:uuid:"):
        hyphenated = text[9:]
    else:
        hyphenated = text if size == 36 else ""
    if hyphenated:
        if hyphenated[8] == hyphenated[13] == hyphenated[18] == hyphenated[23] == "-":
            digits = hyphenated.replace("-", "")
        else:
            digits = ""
    else:
        digits = text
    # fromhex rejects anything but hex digits and spaces; 32 characters giving 16 bytes
    # means there were no spaces (nor other hyphens).
    try:
        raw = bytes.fromhex(digits) if len(digits) == 32 else b""
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise _Invalid(f"UUID parsing failed: {json.dumps(text, ensure_ascii=False)}")
    # What uuid.UUID(hex) ends with, without its lenient clean-up of the input.
    value = _new_object(uuid.UUID)
    _set_uuid_int(value, int.from_bytes(raw))
    _set_uuid_is_safe(value, _SAFE_UNKNOWN)
    return value


def _dec_uuid(value: Any) -> uuid.UUID:
    if value.__class__ is not str:
        raise _wrong_type(value, "a UUID string")
    parsed = _UUIDS.get(value)
    if parsed is None:
        parsed = _parse_uuid(value)
        if len(_UUIDS) >= 4096:
            _UUIDS.clear()
        _UUIDS[value] = parsed
    return parsed


def _dec_str(value: Any) -> str:
    if value.__class__ is str:
        return value
    raise _wrong_type(value, "a string")


# A decode that met an integer 0 looks for a `-0` in its input: see _decode_like_serde.
_zero = threading.local()


def _unsigned_decoder(maximum: int, name: str) -> Converter:
    def decode_unsigned(value: Any) -> int:
        if value.__class__ is int:
            if 0 < value <= maximum:
                return value
            if value == 0:
                _zero.seen = True
                return 0
            raise _Invalid(f"invalid value: integer `{value}`, expected {name}")
        raise _wrong_type(value, name)

    return decode_unsigned


_dec_u64 = _unsigned_decoder(U64_MAX, "u64")
_dec_u32 = _unsigned_decoder(U32_MAX, "u32")


def _dec_bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _wrong_type(value, "a boolean")


def _dec_f64(value: Any) -> float:
    if value.__class__ is float:
        return value
    if value.__class__ is int:
        if value == 0:
            _zero.seen = True
        return float(value)  # serde_json reads integers into f64 fields too
    raise _wrong_type(value, "f64")


def _dec_bytes(value: Any) -> bytes:
    if value.__class__ is not list:
        raise _wrong_type(value, "a sequence")
    if set(map(type, value)) <= {int}:
        try:
            data = bytes(value)
        except ValueError:
            pass
        else:
            if 0 in data:
                _zero.seen = True
            return data
    for index, element in enumerate(value):
        if element.__class__ is not int or not 0 <= element <= 255:
            error = (
                _Invalid(f"invalid value: integer `{element}`, expected u8")
                if element.__class__ is int
                else _wrong_type(element, "u8")
            )
            error.where.append(f"[{index}]")
            raise error
    raise AssertionError("unreachable")  # pragma: no cover


# chrono's `DateTime::parse_from_rfc3339`: `T`, `t` or a space between date and time, any
# number of fractional digits (the first 9 count), `Z`/`z` or an offset with a colon, whose
# sign may also be U+2212 MINUS SIGN; seconds may be 60 (a leap second).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(?:\.([0-9]+))?(?:[Zz]|([-+\u2212])([0-9]{2}):([0-9]{2}))"
)
_from_iso = _dt.datetime.fromisoformat


def _dec_timestamp(value: Any) -> NanoDatetime:
    if value.__class__ is not str:
        raise _wrong_type(value, "a string")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _Invalid(f"not an RFC 3339 date-time with offset: {json.dumps(value)}")
    fraction, sign, off_hours, off_minutes = match.groups()
    if fraction is None:
        nanos = 0
    elif len(fraction) == 9:
        nanos = int(fraction)
    else:
        nanos = int(fraction[:9].ljust(9, "0"))
    if sign is None or off_hours == off_minutes == "00":
        try:
            # The regex fixed the shape, so fromisoformat only checks the ranges.
            base = _from_iso(value[:19])
        except ValueError:
            return _timestamp_slow(value, nanos, 0)  # a leap second, year 0 or a bad date
        return NanoDatetime.utc(
            base.year, base.month, base.day, base.hour, base.minute, base.second, nanos
        )
    if off_minutes > "59" or off_hours > "23":
        raise _Invalid(f"offset out of range: {json.dumps(value)}")
    offset = int(off_hours) * 3600 + int(off_minutes) * 60
    return _timestamp_slow(value, nanos, offset if sign == "+" else -offset)


def _timestamp_slow(text: str, nanos: int, offset: int) -> NanoDatetime:
    """Offsets, leap seconds and year 0: count seconds from the epoch as chrono does."""
    y = int(text[:4])
    mo, d, h, mi, s = (int(text[start : start + 2]) for start in (5, 8, 11, 14, 17))
    if h > 23 or mi > 59 or s > 60:
        raise _Invalid(f"invalid date-time: {json.dumps(text)}")
    try:
        # Year 0 is a leap year like year 400; shift it by one 400-year cycle.
        ordinal = _dt.date(y or 400, mo, d).toordinal() - (0 if y else _DAYS_PER_400_YEARS)
    except ValueError:
        raise _Invalid(f"invalid date-time: {json.dumps(text)}") from None
    # A leap second (:60) counts as the first second of the next minute, as chrono's timestamp does.
    seconds = (ordinal - _EPOCH_ORDINAL) * 86_400 + h * 3600 + mi * 60 + s - offset
    try:
        return NanoDatetime.from_seconds_nanos(seconds, nanos)
    except (OverflowError, ValueError):
        raise _Invalid(f"{json.dumps(text)} is outside years 1..9999 in UTC") from None


def _dec_duration(value: Any) -> domain.Duration:
    """serde's `Duration`: `{"secs","nanos"}` (no other keys) or `[secs, nanos]`; nanos carry."""
    if value.__class__ is dict:
        for key in value:
            if key != "secs" and key != "nanos":
                raise _Invalid(f"unknown field `{key}`, expected `secs` or `nanos`")
        parts = []
        for name in ("secs", "nanos"):
            if name not in value:
                raise _Invalid(f"missing field `{name}`")
            parts.append(value[name])
    elif value.__class__ is list:
        if len(value) != 2:
            raise _Invalid(f"invalid length {len(value)}, expected struct Duration with 2 elements")
        parts = value
    else:
        raise _wrong_type(value, "struct Duration")
    try:
        secs = _dec_u64(parts[0])
    except _Invalid as error:
        error.where.append(".secs")
        raise
    try:
        nanos = _dec_u32(parts[1])
    except _Invalid as error:
        error.where.append(".nanos")
        raise
    carry, nanos = divmod(nanos, _NS_PER_SECOND)
    if secs + carry > U64_MAX:
        raise _Invalid("overflow deserializing Duration")
    return domain.Duration(secs + carry, nanos)


def _unit_variant(value: Any, variants: dict[str, Any], what: str) -> Any:
    """An externally tagged unit variant: `"Name"`, or `{"Name": null}` as serde_json also reads."""
    if value.__class__ is str:
        name = value
    elif value.__class__ is dict and len(value) == 1:
        ((name, content),) = value.items()
        if content is not None and name in variants:
            raise _wrong_type(content, "unit variant")
    else:
        raise _wrong_type(value, f"enum {what}")
    member = variants.get(name)
    if member is None:
        expected = ", ".join(f"`{variant}`" for variant in variants)
        raise _Invalid(f"unknown variant `{name}`, expected one of {expected}")
    return member


def _enum_decoder(cls: type[enum.Enum]) -> Converter:
    variants = {_variant_name(member): member for member in cls}

    def decode_enum(value: Any) -> Any:
        return _unit_variant(value, variants, cls.__name__)

    return decode_enum


_STANDARD_PERMISSIONS = {_variant_name(member): member for member in domain.StandardPermission}


def _dec_permission(value: Any) -> domain.Permission:
    if value.__class__ is dict and len(value) == 1 and "Custom" in value:
        name = value["Custom"]
        if name.__class__ is not str:
            error = _wrong_type(name, "a string")
            error.where.append(".Custom")
            raise error
        return domain.CustomPermission(name)
    if value == "Custom":
        raise _Invalid("invalid type: unit variant, expected newtype variant `Custom`")
    return _unit_variant(value, _STANDARD_PERMISSIONS, "Permission")


def _list_decoder(item: Converter) -> Converter:
    def decode_list(value: Any) -> tuple[Any, ...]:
        if value.__class__ is not list:
            raise _wrong_type(value, "a sequence")
        if item is _dec_str and all(element.__class__ is str for element in value):
            return tuple(value)
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except _Invalid as error:
                error.where.append(f"[{index}]")
                raise
        return tuple(out)

    return decode_list


def _map_decoder(item: Converter) -> Converter:
    def decode_map(value: Any) -> dict[str, Any]:
        if value.__class__ is not dict:
            raise _wrong_type(value, "a map")
        if item is _dec_str and all(element.__class__ is str for element in value.values()):
            return value  # a fresh dict from the parser: nobody else holds it
        out = {}
        for key, element in value.items():
            try:
                out[key] = item(element)
            except _Invalid as error:
                error.where.append(_key_segment(key))
                raise
        return out

    return decode_map


_SCALAR_DECODERS: dict[Kind, Converter] = {
    Kind.UUID: _dec_uuid,
    Kind.STR: _dec_str,
    Kind.U64: _dec_u64,
    Kind.BOOL: _dec_bool,
    Kind.F64: _dec_f64,
    Kind.BYTES: _dec_bytes,
    Kind.TIMESTAMP: _dec_timestamp,
    Kind.DURATION: _dec_duration,
    Kind.PERMISSION: _dec_permission,
}


def _decoder(spec: FieldSpec) -> Converter:
    """The converter of a non-null value (record fields handle null and absence themselves)."""
    if spec.kind in _SCALAR_DECODERS:
        return _SCALAR_DECODERS[spec.kind]
    if spec.kind is Kind.ENUM:
        return _enum_decoder(spec.type)  # type: ignore[arg-type]
    if spec.kind is Kind.LIST:
        return _list_decoder(_decoder(spec.item))  # type: ignore[arg-type]
    if spec.kind is Kind.MAP:
        return _map_decoder(_decoder(spec.item))  # type: ignore[arg-type]
    return _record_decoder(spec.type)  # type: ignore[arg-type]


def _rust_name(cls: type) -> str:
    return f"{cls.__name__}Event" if issubclass(cls, domain.Event) else cls.__name__


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The `__set__` of the slot that holds field `name`, found along the MRO."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name].__set__
    raise TypeError(f"{cls.__name__} has no slot {name!r}")  # pragma: no cover


def _compile_reader(cls: type, plan: tuple[tuple[str, Converter, bool], ...], item: str) -> Any:
    """A function that reads one record, compiled as dataclasses compile `__init__`.

    Straight-line code is markedly faster than a loop over the plan, and this is the
    decode hot path. `item` is the expression of a field's raw value, `get(name)` for a
    map or `value[index]` for a sequence. The instance's slots are filled directly: the
    frozen __init__ alone would cost a third of a decode.
    """
    if hasattr(cls, "__post_init__"):  # pragma: no cover - a guard for future domain changes
        raise TypeError(f"{cls.__name__} validates in __post_init__, which filling slots skips")
    namespace: dict[str, Any] = {"_new": _new_object, "_cls": cls, "_uuids": _UUIDS.get}
    lines = ["def read(value):", "    instance = _new(_cls)"]
    if item.startswith("get("):
        lines.append("    get = value.get")
    for index, (name, convert, optional) in enumerate(plan):
        namespace[f"_convert{index}"] = convert
        namespace[f"_set{index}"] = _slot_setter(cls, name)
        # The commonest cases are inlined; the converter handles the rest and every error.
        if optional:
            converted = f"None if raw is None else _convert{index}(raw)"
        elif convert is _dec_str:
            converted = f"raw if raw.__class__ is str else _convert{index}(raw)"
        elif convert is _dec_u64:
            converted = (
                f"raw if raw.__class__ is int and 0 < raw <= {U64_MAX} else _convert{index}(raw)"
            )
        elif convert is _dec_uuid:
            converted = f"(raw.__class__ is str and _uuids(raw)) or _convert{index}(raw)"
        else:
            converted = f"_convert{index}(raw)"
        lines.append(f"    raw = {item.format(name=name, index=index)}")
        lines.append(f"    _set{index}(instance, {converted})")
    lines.append("    return instance")
    exec("\n".join(lines), namespace)  # the source holds only our own field names
    return namespace["read"]


@functools.cache
def _record_decoder(cls: type) -> Converter:
    """A derived serde struct: a map by field name (unknown keys ignored) or a sequence in order."""
    plan = tuple((spec.name, _decoder(spec), spec.optional) for spec in _upstream_order(cls))
    from_map = _compile_reader(cls, plan, "get({name!r})")
    from_sequence = _compile_reader(cls, plan, "value[{index}]")
    expected = f"struct {_rust_name(cls)}"

    def locate(value: Any, failure: _Invalid) -> _Invalid:
        """The first failing field's error with its path; the compiled readers know neither."""
        is_map = value.__class__ is dict
        for index, (name, convert, optional) in enumerate(plan):
            raw = value.get(name) if is_map else value[index]
            if raw is None and optional:
                continue  # null, or absent: serde reads both as None
            try:
                if raw is None and is_map and name not in value:
                    raise _Invalid(f"missing field `{name}`")
                convert(raw)
            except _Invalid as error:
                error.where.append("." + name)
                return error
        return failure  # pragma: no cover - the converters are deterministic

    def decode_record(value: Any) -> Any:
        if value.__class__ is dict:
            try:
                return from_map(value)
            except _Invalid as failure:
                raise locate(value, failure) from None
        if value.__class__ is list:
            # serde's derived structs also read a sequence of every field, Options included.
            if len(value) != len(plan):
                raise _Invalid(
                    f"invalid length {len(value)}, expected {expected} with {len(plan)} elements"
                )
            try:
                return from_sequence(value)
            except _Invalid as failure:
                raise locate(value, failure) from None
        raise _wrong_type(value, expected)

    return decode_record


# --- The slow, serde-faithful parse ---------------------------------------------------------
# orjson refuses a few documents serde_json reads: serde_json skips ignored (unknown) fields
# without checking their numbers or escapes, so `1e400` or a lone `\ud800` there is fine. And
# orjson reads the integer `-0` as 0 where serde_json reads -0.0, which no unsigned field takes.
# Such documents are re-read with the standard library, with numbers read as serde_json does.


_NEGATIVE_ZERO = re.compile(r"-0(?![0-9A-Za-z.])")
_NEGATIVE_ZERO_BYTES = re.compile(rb"-0(?![0-9A-Za-z.])")


def _serde_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _OUT_OF_RANGE


def _serde_int(text: str) -> Any:
    if text == "-0":
        return -0.0
    try:
        value = int(text)
    except ValueError:  # past the standard library's digit limit
        return _serde_float(text)
    return value if -(2**63) <= value <= U64_MAX else _serde_float(text)


def _no_constant(text: str) -> Any:
    raise ValueError(f"expected value, found {text}")


def _serde_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, _ in pairs:
        if not key.isascii():
            key.encode()  # serde_json reads every key as a str: lone surrogates fail
    return dict(pairs)


def _has_negative_zero(text: str | bytes) -> bool:
    if isinstance(text, str):
        return _NEGATIVE_ZERO.search(text) is not None
    return _NEGATIVE_ZERO_BYTES.search(bytes(text)) is not None


def _decode_like_serde(text: Any, orjson_error: Exception | None = None) -> domain.Event:
    """Decode with the standard library's parser, reading numbers as serde_json does."""
    try:
        if isinstance(text, str):
            text.encode()  # a str with lone surrogates is no UTF-8 document
        elif isinstance(text, bytes | bytearray | memoryview):
            text = bytes(text).decode()  # serde_json reads UTF-8 only, no BOM
        else:
            raise ValueError(f"expected str or bytes, not {type(text).__name__}")
        document = json.loads(
            text,
            parse_int=_serde_int,
            parse_float=_serde_float,
            parse_constant=_no_constant,
            object_pairs_hook=_serde_object,
        )
    except (ValueError, RecursionError) as error:
        raise DecodeError(f"invalid JSON: {orjson_error or error}") from None
    event = _decode_document(document)
    try:
        # The standard library keeps lone surrogates, which no Rust String holds.
        _record_encoder(type(event))(event)
    except _Invalid as error:
        raise DecodeError(error.reason, field=error.path(type(event).__name__)) from None
    return event


@functools.cache
def _event_decoders() -> dict[str, Converter]:
    return {cls.__name__: _record_decoder(cls) for cls in domain.EVENT_CLASSES}


def _decode_document(document: Any) -> domain.Event:
    if document.__class__ is not dict:
        raise DecodeError(f"invalid type: {_describe(document)}, expected enum PipelineEvent")
    if len(document) != 1:
        raise DecodeError(
            f"expected an object with exactly one key, the event type; found {len(document)} keys"
        )
    ((name, payload),) = document.items()
    decoder = _event_decoders().get(name)
    if decoder is None:
        raise DecodeError(f"unknown variant `{name}`, expected one of the 16 pipeline events")
    try:
        return decoder(payload)
    except _Invalid as error:
        raise DecodeError(error.reason, field=error.path(name)) from None


def decode(text: str | bytes) -> domain.Event:
    """The event in upstream's serde JSON, read as leniently and as strictly as upstream reads it."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        return _decode_like_serde(text, error)
    _zero.seen = False
    event = _decode_document(document)
    if _zero.seen and _has_negative_zero(text):
        return _decode_like_serde(text)
    return event

"""Proto3 JSON compiled from message descriptors: exactly json_format's results, sooner.

`json_format.MessageToDict` and `ParseDict` interpret the descriptor on every
call (about 15 and 40 µs for a ChunkProcessed envelope here). Here each message
type is compiled once, on first use, into Python source generated from its
descriptor: the encoder reads the fields in number order (the order of
json_format's `ListFields`), sub-messages inline; the decoder looks each field
up once and converts it inline into constructor keyword arguments for the whole
message tree, built by one constructor call. About 4x faster encoding and 6x
faster decoding (bench/codecs.py); what is left of an encode is mostly upb's
attribute reads, which cost json_format the same.

The rule: the fast path only ever returns what json_format returns. Whatever
it is not certain to handle exactly as json_format does raises `Fallback`, and
the caller hands that call to json_format, which produces the result or its
own error. Decoding falls back on any input outside the forms checked for
(unknown enum names, non-canonical map keys, integers written as "+1" or
"1e3", timestamps json_format rejects, a field under both its JSON and proto
name, two cases of one oneof, ...); encoding on a Timestamp with no RFC 3339 form.

Compiled: proto3 messages of scalars, enums, maps, repeated fields, oneofs,
nested messages, and google.protobuf.Timestamp, the only well-known type with
a special JSON form the contract uses (Empty is a plain message). Not compiled,
so json_format does every call: the other well-known types with a JSON form of
their own (Any, Duration, FieldMask, Struct, Value, ListValue, the wrappers)
and any message containing one, proto2 and editions files, extendable
messages, closed enums, custom enum JSON names, recursive types.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import functools
import keyword
import math
import re
import threading
from base64 import urlsafe_b64decode
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

__all__ = ["DECODERS", "ENCODERS", "Fallback", "decoder", "encoder"]

# protobuf's stubs make every nested descriptor Optional and tell upb's classes from
# descriptor.py's: descriptors are typed loosely here.
Descriptor = Any
Field = Any
Encoder = Callable[[Message], dict[str, Any]]
#: JSON object -> constructor keyword arguments of the message (nested as dicts).
Decoder = Callable[[Any], dict[str, Any]]
_Convert = Callable[[Any], Any]

_TIMESTAMP = "google.protobuf.Timestamp"
# Types whose JSON form json_format special-cases; only Timestamp is compiled.
_SPECIAL_JSON = frozenset(json_format._WKTJSONMETHODS)  # type: ignore[attr-defined]
_WRAPPERS_FILE = "google/protobuf/wrappers.proto"
# json_format counts nesting and stops at 100; compiled trees stay far below.
_MAX_DEPTH = 50

_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_INT64_CPPTYPES = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)
_INT32_MIN, _INT32_MAX = _INT_RANGES[FieldDescriptor.CPPTYPE_INT32]
# json_format's own float32 bounds.
_FLOAT_MAX = type_checkers._FLOAT_MAX  # type: ignore[attr-defined]
_FLOAT_MIN = type_checkers._FLOAT_MIN  # type: ignore[attr-defined]

# json_format's own patterns: strings with lone surrogates are rejected, and a
# "[name]" key is an extension reference, an error even with ignore_unknown_fields.
_SURROGATE = json_format._UNPAIRED_SURROGATE_PATTERN  # type: ignore[attr-defined]
_EXTENSION_KEY = json_format._VALID_EXTENSION_NAME  # type: ignore[attr-defined]
# Map keys must be canonical too: "01" and "1" would be the same key.
_INT_KEY = re.compile(r"0|-?[1-9][0-9]{0,19}")
_SECONDS_MIN = -62_135_596_800  # 0001-01-01T00:00:00Z
_SECONDS_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
_NANOS_PER_SECOND = 1_000_000_000
_EPOCH = _dt.date(1970, 1, 1)
_EPOCH_DATETIME = _dt.datetime(1970, 1, 1)
_SECOND_TEXT = [f"{second:02d}" for second in range(60)]
_MILLIS_TEXT = [f".{millis:03d}Z" for millis in range(1000)]
# Timestamps parsed by slicing: "THH:MM:" -> minute of the day, "SS" -> second.
_MINUTE_OF = {f"T{m // 60:02d}:{m % 60:02d}:": m for m in range(24 * 60)}
_SECOND_OF = {f"{second:02d}": second for second in range(60)}
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# 10**(9 - digits): a fraction of 1 to 9 digits as nanoseconds.
_NANO_SCALE = (0, *(10 ** (9 - digits) for digits in range(1, 10)))


class Fallback(Exception):
    """This call needs json_format: the input is outside what the fast path is sure of."""


# --- value converters shared by every compiled type -----------------------------------------


def _nonfinite(value: float) -> str:
    """json_format's spelling of a NaN or an infinity."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _float32_json(value: float) -> Any:
    if value - value == 0.0:  # finite
        return type_checkers.ToShortestFloat(value)
    return _nonfinite(value)


def _bytes_json(value: bytes) -> str:
    # base64.b64encode is b2a_base64 without the newline.
    return binascii.b2a_base64(value, newline=False).decode()


@functools.lru_cache(maxsize=4096)
def _minute_text(minute: int) -> str:
    """'YYYY-MM-DDTHH:MM:' of a minute since the epoch (events cluster in time), or
    Fallback outside years 1-9999 (whole minutes: the range ends on minute boundaries)."""
    if not _SECONDS_MIN // 60 <= minute <= _SECONDS_MAX // 60:
        raise Fallback  # no RFC 3339 form: json_format raises the error
    return (_EPOCH_DATETIME + _dt.timedelta(minutes=minute)).isoformat()[:-2]


def _timestamp_json(timestamp: Any) -> str:
    """Timestamp.ToJsonString, which json_format calls: 0, 3, 6 or 9 fraction digits."""
    seconds = timestamp.seconds
    nanos = timestamp.nanos
    text = _minute_text(seconds // 60) + _SECOND_TEXT[seconds % 60]
    if nanos < 0 or nanos >= _NANOS_PER_SECOND:
        raise Fallback
    # Most precise first (a clock's nanoseconds); zero-padded digits are the number plus a
    # leading 1, which is then cut off.
    if nanos % 1000:
        return text + "." + str(nanos + _NANOS_PER_SECOND)[1:] + "Z"
    if nanos % 1_000_000:
        return text + "." + str(nanos // 1000 + 1_000_000)[1:] + "Z"
    if nanos:
        return text + _MILLIS_TEXT[nanos // 1_000_000]
    return text + "Z"


def _string(value: Any) -> str:
    if type(value) is str and (value.isascii() or _SURROGATE.search(value) is None):
        return value
    raise Fallback


def _bytes(value: Any) -> bytes:
    # json_format's own expression: url-safe or standard alphabet, padding optional.
    if type(value) is str:
        encoded = value.encode("utf-8")
    elif type(value) is bytes:
        encoded = value
    else:
        raise Fallback
    return urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise Fallback


def _integer(low: int, high: int) -> _Convert:
    """json_format's `_ConvertInteger` for one integer type, on the inputs it is sure of:
    JSON integers, integral floats and strings of ASCII digits with an optional '-'
    (int() accepts more, such as "+1", " 1" or "1_0": those go to json_format)."""
    signed = low < 0

    def convert(value: Any) -> int:
        if type(value) is int:
            number = value
        elif type(value) is str:
            if not (
                value.isascii()
                and (value.isdigit() or (signed and value[:1] == "-" and value[1:].isdigit()))
            ):
                raise Fallback
            number = int(value)
        elif type(value) is float and value.is_integer():
            number = int(value)
        else:
            raise Fallback
        if low <= number <= high:
            return number
        raise Fallback

    return convert


def _double(value: Any) -> float:
    if type(value) is float:
        if value - value == 0.0:
            return value
        raise Fallback  # json_format rejects unquoted NaN and infinities
    if type(value) is int:
        return float(value)
    if type(value) is str and value != "nan":
        return float(value)  # json_format's own call; a ValueError falls back
    raise Fallback


def _float32(value: Any) -> float:
    number = _double(value)
    if number - number == 0.0 and not _FLOAT_MIN <= number <= _FLOAT_MAX:
        raise Fallback  # beyond float32: json_format decides
    return number


def _enum(field: Field) -> _Convert:
    numbers = {value.name: value.number for value in field.enum_type.values}

    def convert(value: Any) -> int:
        if type(value) is str:
            number = numbers.get(value)
            if number is not None:
                return number
        elif type(value) is int and _INT32_MIN <= value <= _INT32_MAX:
            return value  # open enum: an unknown number is kept
        raise Fallback

    return convert


@functools.lru_cache(maxsize=4096)
def _days(date: str) -> int:
    """Days since the epoch of 'YYYY-MM-DD' (as strptime reads it), or Fallback."""
    if _DATE_TEXT.fullmatch(date) is None:
        raise Fallback
    try:
        return (_dt.date(int(date[:4]), int(date[5:7]), int(date[8:])) - _EPOCH).days
    except ValueError:
        raise Fallback from None  # no such day (or year 0): json_format's error


def _timestamp(value: Any) -> dict[str, int]:
    """Timestamp.FromJsonString, which json_format calls, as constructor arguments.

    'YYYY-MM-DDTHH:MM:SS[.f]Z' with 1-9 fraction digits is read here; any other text
    (offsets, lowercase, a bare '.') goes to FromJsonString itself.
    """
    if type(value) is not str:
        raise Fallback
    minute = _MINUTE_OF.get(value[10:17])
    second = _SECOND_OF.get(value[17:19])
    end = value[19:]
    if minute is not None and second is not None:
        if end == "Z":
            nanos = 0
        else:
            digits = end[1:-1]
            if not (
                end[:1] == "."
                and end[-1:] == "Z"
                and 0 < len(digits) < 10
                and digits.isascii()
                and digits.isdigit()
            ):
                return _timestamp_slow(value)
            # FromJsonString computes round(float("0." + digits) * 1e9): for at most 9
            # digits that is this integer exactly (the float error is below 1e-6).
            nanos = int(digits) * _NANO_SCALE[len(digits)]
        seconds = _days(value[:10]) * 86_400 + minute * 60 + second
        if _SECONDS_MIN <= seconds <= _SECONDS_MAX:
            return {"seconds": seconds, "nanos": nanos}
        raise Fallback
    return _timestamp_slow(value)


def _timestamp_slow(value: str) -> dict[str, int]:
    parsed = timestamp_pb2.Timestamp()
    parsed.FromJsonString(value)  # its ValueError falls back to json_format
    return {"seconds": parsed.seconds, "nanos": parsed.nanos}


# --- what can be compiled -------------------------------------------------------------------


def _is_map(field: Field) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


@functools.cache
def _syntax(file: Any) -> str:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto.syntax


def _enum_json_names_exist(field: Field) -> bool:
    """Whether an enum value carries a custom JSON name (json_format would print it)."""
    try:
        extension = descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return False
    return any(value.GetOptions().HasExtension(extension) for value in field.enum_type.values)


def _field_ok(field: Field, stack: tuple[str, ...]) -> bool:
    if field.type == FieldDescriptor.TYPE_GROUP or field.is_required or field.is_extension:
        return False
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        return not (
            enum.is_closed
            or enum.full_name == "google.protobuf.NullValue"
            or _enum_json_names_exist(field)
        )
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return True
    if _is_map(field):
        return _field_ok(field.message_type.fields_by_name["key"], stack) and _field_ok(
            field.message_type.fields_by_name["value"], stack
        )
    return _compilable(field.message_type, stack)


def _compilable(message: Descriptor, stack: tuple[str, ...] = ()) -> bool:
    """Whether `message` (and all it contains) is compiled rather than left to json_format."""
    name = message.full_name
    if name == _TIMESTAMP:
        return True
    if (
        name in _SPECIAL_JSON
        or message.file.name == _WRAPPERS_FILE
        or name in stack  # recursive
        or len(stack) >= _MAX_DEPTH
        or message.is_extendable
        or _syntax(message.file) != "proto3"
    ):
        return False
    # json_format tracks oneof names among the keys it has seen: a key equal to one
    # would behave in ways not worth copying.
    keys = {field.name for field in message.fields} | {f.json_name for f in message.fields}
    if any(oneof.name in keys for oneof in message.oneofs):
        return False
    return all(_field_ok(field, (*stack, name)) for field in message.fields)


def _real_oneofs(message: Descriptor) -> dict[str, list[Field]]:
    """Oneof name -> its fields, in number order, leaving out proto3 `optional`'s synthetic ones."""
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    synthetic = {f.oneof_index for f in proto.field if f.proto3_optional}
    return {
        oneof.name: sorted(oneof.fields, key=lambda f: f.number)
        for index, oneof in enumerate(message.oneofs)
        if index not in synthetic
    }


# --- encoders: generated source -------------------------------------------------------------


class _EncoderCompiler:
    """Writes Python source per message type into one shared namespace.

    A message's function reads its fields in number order. Singular sub-messages
    and Timestamps are encoded inline, in the parent's function (an envelope is
    one call, or two with its payload); repeated and map values call their
    type's function; a oneof of many cases calls one function per case.
    """

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "Fallback": Fallback,
            "_b64": _bytes_json,
            "_copysign": math.copysign,
            "_float32": _float32_json,
            "_millis_text": _MILLIS_TEXT,
            "_minute_text": _minute_text,
            "_nonfinite": _nonfinite,
            "_second_text": _SECOND_TEXT,
            "_timestamp": _timestamp_json,
        }
        self.functions: dict[Descriptor, str] = {}
        self.sources: dict[str, str] = {}  # for reading and debugging
        self.lock = threading.Lock()

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def define(self, name: str, lines: list[str]) -> str:
        self.sources[name] = "\n".join(lines)
        exec(self.sources[name], self.namespace)  # source generated from a descriptor
        return name

    def value(self, field: Field, var: str) -> str:
        """The expression of json_format's `_FieldToJsonObject` for `var`, one value of `field`."""
        cpp = field.cpp_type
        if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
            if field.message_type.full_name == _TIMESTAMP:
                return f"_timestamp({var})"
            return f"{self.function(field.message_type)}({var})"
        if cpp == FieldDescriptor.CPPTYPE_ENUM:
            names = {
                number: value.name for number, value in field.enum_type.values_by_number.items()
            }
            return f"{self.constant(names)}.get({var}, {var})"  # an unknown number stays a number
        if field.type == FieldDescriptor.TYPE_BYTES:
            return f"_b64({var})"
        if cpp in _INT64_CPPTYPES:
            return f"str({var})"
        if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
            return f"({var} if {var} - {var} == 0.0 else _nonfinite({var}))"
        if cpp == FieldDescriptor.CPPTYPE_FLOAT:
            return f"_float32({var})"
        return var  # strings, bools, 32-bit integers: the value itself

    def container(self, field: Field) -> str:
        """The JSON of a repeated or map field held in `v` (a slice copies a repeated field
        to a list at once, faster than iterating it; maps are read as json_format reads them,
        key by key, faster than dict() or items())."""
        if _is_map(field):
            key_field = field.message_type.fields_by_name["key"]
            if key_field.type == FieldDescriptor.TYPE_STRING:
                key = "k"
            elif key_field.type == FieldDescriptor.TYPE_BOOL:
                key = "('true' if k else 'false')"
            else:
                key = "str(k)"
            item = self.value(field.message_type.fields_by_name["value"], "x")
            if item == "x":
                return f"{{{key}: v[k] for k in v}}"
            if item.endswith("(x)") and item[:-3].isidentifier():  # a function of the value
                return f"{{{key}: {item[:-3]}(v[k]) for k in v}}"
            return f"{{{key}: {item} for k in v for x in (v[k],)}}"
        item = self.value(field, "x")
        return "v[:]" if item == "x" else f"[{item} for x in v[:]]"

    def function(self, message: Descriptor) -> str:
        """The name of `message`'s encoder, compiling it (and what it contains) if needed."""
        name = self.functions.get(message)
        if name is None:
            name = f"_encode_{len(self.functions)}_{message.name}"
            self.functions[message] = name
            body = self.body(message, 0, "    ")
            self.define(name, [f"def {name}(m0):", "    d0 = {}", *body, "    return d0"])
        return name

    def body(self, message: Descriptor, depth: int, indent: str) -> list[str]:
        """Lines filling d{depth} with the JSON of m{depth}, a `message`."""
        m, d = f"m{depth}", f"d{depth}"
        oneofs = _real_oneofs(message)
        member_of = {f: oneof for oneof, fields in oneofs.items() for f in fields}
        fields = sorted(message.fields, key=lambda f: f.number)
        lines: list[str] = []
        for field in fields:
            source = (
                f"getattr({m}, {field.name!r})"
                if keyword.iskeyword(field.name)
                else f"{m}.{field.name}"
            )
            target = f"{d}[{field.json_name!r}]"
            oneof = member_of.get(field)
            if oneof is not None:
                lines += self.oneof(oneof, oneofs[oneof], fields, field, depth, indent)
            elif field.is_repeated:
                lines += [f"{indent}v = {source}", f"{indent}if v:"]
                lines.append(f"{indent}    {target} = {self.container(field)}")
            elif field.has_presence:
                lines += self.present(field, source, depth, indent, target)
            else:
                # Implicit presence: json_format prints what ListFields lists, any value but
                # the default; -0.0 is not the default.
                test = "v"
                if field.cpp_type in (
                    FieldDescriptor.CPPTYPE_DOUBLE,
                    FieldDescriptor.CPPTYPE_FLOAT,
                ):
                    test = "v or _copysign(1.0, v) < 0.0"
                lines += [f"{indent}v = {source}", f"{indent}if {test}:"]
                lines.append(f"{indent}    {target} = {self.value(field, 'v')}")
        return lines

    def present(self, field: Field, source: str, depth: int, indent: str, target: str) -> list[str]:
        """Lines for a singular field with presence: a value other than the default is
        present, so HasField is asked only about a default (it costs as much as a read)."""
        m = f"m{depth}"
        has = f"{m}.HasField({field.name!r})"
        if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
            return [
                f"{indent}v = {source}",
                f"{indent}if v or {has}:",
                f"{indent}    {target} = {self.value(field, 'v')}",
            ]
        if field.message_type.full_name == _TIMESTAMP and depth < _INLINE_DEPTH:
            return [
                f"{indent}t = {source}",
                f"{indent}s = t.seconds",
                f"{indent}n = t.nanos",
                f"{indent}if s or n or {has}:",
                *(f"{indent}    {line}" for line in _TIMESTAMP_LINES[2:]),
                f"{indent}    {target} = x",
            ]
        return [f"{indent}if {has}:", *self.store(field, source, depth, indent + "    ", target)]

    def store(self, field: Field, source: str, depth: int, indent: str, target: str) -> list[str]:
        """Lines putting the JSON of `source`, the value of singular `field`, into `target`."""
        if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE or depth >= _INLINE_DEPTH:
            return [f"{indent}v = {source}", f"{indent}{target} = {self.value(field, 'v')}"]
        if field.message_type.full_name == _TIMESTAMP:
            return [
                f"{indent}t = {source}",
                *(indent + line for line in _TIMESTAMP_LINES),
                f"{indent}{target} = x",
            ]
        inner = depth + 1
        return [
            f"{indent}m{inner} = {source}",
            f"{indent}d{inner} = {{}}",
            *self.body(field.message_type, inner, indent),
            f"{indent}{target} = d{inner}",
        ]

    def oneof(
        self,
        oneof: str,
        members: list[Field],
        fields: list[Field],
        field: Field,
        depth: int,
        indent: str,
    ) -> list[str]:
        """Lines for `field`, a member of `oneof`. Many message cases adjacent in number
        order: one call through a table of case functions, at the first member; otherwise
        one test per member, each in its place."""
        m, d = f"m{depth}", f"d{depth}"
        which = f"w{depth}_{oneof}"
        first = fields.index(members[0])
        dispatch = len(members) > 3 and fields[first : first + len(members)] == members
        if field is not members[0]:
            if dispatch:
                return []
            lines = []
        else:
            lines = [f"{indent}{which} = {m}.WhichOneof({oneof!r})"]
            if dispatch:
                table = self.constant({f.name: self.case(f) for f in members})
                return [
                    *lines,
                    f"{indent}if {which} is not None:",
                    f"{indent}    {table}[{which}]({m}, {d})",
                ]
        target = f"{d}[{field.json_name!r}]"
        return [
            *lines,
            f"{indent}if {which} == {field.name!r}:",
            *self.store(field, f"getattr({m}, {field.name!r})", depth, indent + "    ", target),
        ]

    def case(self, field: Field) -> Callable[[Any, dict[str, Any]], None]:
        """A function adding the JSON of oneof case `field` of m0 to d0."""
        name = f"_case_{len(self.sources)}_{field.name}"
        target = f"d0[{field.json_name!r}]"
        body = self.store(field, f"getattr(m0, {field.name!r})", 0, "    ", target)
        self.define(name, [f"def {name}(m0, d0):", *body])
        return self.namespace[name]


# Timestamp.ToJsonString inline (t: the Timestamp, x: its text), as _timestamp_json does it.
_TIMESTAMP_LINES = [
    "s = t.seconds",
    "n = t.nanos",
    "x = _minute_text(s // 60) + _second_text[s % 60]",
    f"if n < 0 or n >= {_NANOS_PER_SECOND}:",
    "    raise Fallback",
    "if n % 1000:",
    f"    x = x + '.' + str(n + {_NANOS_PER_SECOND})[1:] + 'Z'",
    "elif n % 1000000:",
    "    x = x + '.' + str(n // 1000 + 1000000)[1:] + 'Z'",
    "elif n:",
    "    x += _millis_text[n // 1000000]",
    "else:",
    "    x += 'Z'",
]
# Deeper singular messages get a call of their own: Python limits nested blocks.
_INLINE_DEPTH = 4


_COMPILER = _EncoderCompiler()
#: Compiled encoders by message type (None: not compiled), filled by `encoder`.
ENCODERS: dict[Descriptor, Encoder | None] = {}


def encoder(message: Descriptor) -> Encoder | None:
    """The compiled encoder of a message type (None: json_format does it).

    It returns json_format.MessageToDict's dict (same keys, values and order), or raises
    Fallback where json_format would raise an error.
    """
    try:
        return ENCODERS[message]
    except KeyError:
        pass
    with _COMPILER.lock:
        compiled: Encoder | None = None
        if message.full_name != _TIMESTAMP and _compilable(message):
            compiled = _COMPILER.namespace[_COMPILER.function(message)]
        ENCODERS[message] = compiled
    return compiled


# --- decoders: converter tables -------------------------------------------------------------


class _Field:
    """How one field is decoded: its constructor name, converter and the checks it needs."""

    __slots__ = ("aliases", "convert", "name", "rivals")

    def __init__(
        self, name: str, convert: _Convert, aliases: tuple[str, ...], rivals: frozenset[str]
    ):
        self.name = name
        self.convert = convert
        self.aliases = aliases  # every key naming this field (JSON name, proto name)
        self.rivals = rivals  # the other fields of its oneof


class _DecoderCompiler:
    """Builds the decoders of one setting of ignore_unknown_fields.

    Each message type gets two: a general one, a loop over the JSON object's keys that
    handles every case json_format's `_ConvertFieldValuePair` does (or falls back), and a
    generated one for the common shape, one lookup per field with the conversion inline,
    which hands the object to the general one when a key is left over (null, unknown,
    under its proto name).
    """

    def __init__(self, ignore_unknown_fields: bool) -> None:
        self.ignore = ignore_unknown_fields
        self.decoders: dict[Descriptor, str] = {}
        self.sources: dict[str, str] = {}  # for reading and debugging
        self.namespace: dict[str, Any] = {
            "Fallback": Fallback,
            "_surrogate": _SURROGATE.search,
            "_timestamp": _timestamp,
        }

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def value(self, field: Field) -> _Convert:
        """json_format's `_ConvertScalarFieldValue` (or message conversion) of one value."""
        cpp = field.cpp_type
        if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
            if field.message_type.full_name == _TIMESTAMP:
                return _timestamp
            return self.namespace[self.message(field.message_type)]
        if cpp == FieldDescriptor.CPPTYPE_ENUM:
            return _enum(field)
        if cpp in _INT_RANGES:
            return _integer(*_INT_RANGES[cpp])
        if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
            return _double
        if cpp == FieldDescriptor.CPPTYPE_FLOAT:
            return _float32
        if cpp == FieldDescriptor.CPPTYPE_BOOL:
            return _bool
        return _bytes if field.type == FieldDescriptor.TYPE_BYTES else _string

    def field(self, field: Field) -> _Convert:
        if _is_map(field):
            return _map(
                _map_key(field.message_type.fields_by_name["key"]),
                self.value(field.message_type.fields_by_name["value"]),
            )
        if field.is_repeated:
            return _repeated(self.value(field))
        return self.value(field)

    def message(self, message: Descriptor) -> str:
        """The name of `message`'s decoder, compiling it (and what it contains) if needed."""
        name = self.decoders.get(message)
        if name is not None:
            return name
        name = f"_decode_{len(self.decoders)}_{message.name}"
        self.decoders[message] = name
        # json_format looks a key up by JSON name first, then by proto name.
        by_key = {f.name: f for f in message.fields} | {f.json_name: f for f in message.fields}
        oneofs = _real_oneofs(message)
        rivals = {
            f: frozenset(m.name for m in members if m is not f)
            for members in oneofs.values()
            for f in members
        }
        plans = {
            f: _Field(
                f.name,
                self.field(f),
                tuple(key for key, owner in by_key.items() if owner is f),
                rivals.get(f, frozenset()),
            )
            for f in message.fields
        }
        general = self.constant(self.general(message, by_key, plans))
        lines = [
            f"def {name}(js):",
            "    if type(js) is not dict:",
            "        raise Fallback",
            "    kw = {}",
            "    n = 0",
        ]
        for field in sorted(message.fields, key=lambda f: f.number):
            if field in rivals:
                continue
            lines += [
                f"    v = js.get({field.json_name!r})",
                "    if v is not None:",
                "        n += 1",
                *self.inline(field, plans[field].convert, f"kw[{field.name!r}]"),
            ]
        for members in oneofs.values():
            cases = {
                key: (plans[f].name, plans[f].convert) for key, f in by_key.items() if f in members
            }
            keys = self.constant(frozenset(cases))
            lines += [
                f"    h = {keys}.intersection(js)",
                "    if h:",
                "        if len(h) > 1:",
                "            raise Fallback",  # two cases, or one twice: json_format decides
                "        (k,) = h",
                "        v = js[k]",
                "        if v is not None:",
                "            n += 1",
                f"            f, c = {self.constant(cases)}[k]",
                "            kw[f] = c(v)",
            ]
        lines += [
            "    if n != len(js):",
            f"        return {general}(js)",  # a key left over: null, unknown, an alias
            "    return kw",
        ]
        self.sources[name] = "\n".join(lines)
        exec(self.sources[name], self.namespace)  # source generated from a descriptor
        return name

    def inline(self, field: Field, convert: _Convert, target: str) -> list[str]:
        """Lines converting `v`, one value of `field`, into `target`: the common kinds inline."""
        cpp = field.cpp_type
        if field.is_repeated:
            return [f"        {target} = {self.constant(convert)}(v)"]
        if cpp == FieldDescriptor.CPPTYPE_STRING and field.type == FieldDescriptor.TYPE_STRING:
            return [
                "        if type(v) is not str or (not v.isascii() and _surrogate(v) is not None):",
                "            raise Fallback",
                f"        {target} = v",
            ]
        if cpp == FieldDescriptor.CPPTYPE_BOOL:
            return [
                "        if v is not True and v is not False:",
                "            raise Fallback",
                f"        {target} = v",
            ]
        if cpp in _INT_RANGES:
            low, high = _INT_RANGES[cpp]
            lines = []
            test = f"type(v) is not int or v < {low} or v > {high}"
            if low == 0:  # unsigned: a string of digits is read here
                lines = [
                    "        if type(v) is str and v.isascii() and v.isdigit():",
                    "            v = int(v)",
                    f"            if v > {high}:",
                    "                raise Fallback",
                ]
                test = "el" + "if " + test
            else:
                test = "if " + test
            return [
                *lines,
                f"        {test}:",
                f"            v = {self.constant(convert)}(v)",  # everything else
                f"        {target} = v",
            ]
        if cpp == FieldDescriptor.CPPTYPE_ENUM:
            names = {value.name: value.number for value in field.enum_type.values}
            return [
                "        if type(v) is str:",
                f"            v = {self.constant(names)}.get(v)",
                "            if v is None:",
                "                raise Fallback",
                f"        elif type(v) is not int or v < {_INT32_MIN} or v > {_INT32_MAX}:",
                "            raise Fallback",
                f"        {target} = v",
            ]
        if cpp == FieldDescriptor.CPPTYPE_MESSAGE and field.message_type.full_name != _TIMESTAMP:
            return [f"        {target} = {self.message(field.message_type)}(v)"]
        return [f"        {target} = {self.constant(convert)}(v)"]

    def general(
        self, message: Descriptor, by_key: dict[str, Field], plans: dict[Any, _Field]
    ) -> Decoder:
        """json_format's `_ConvertFieldValuePair` over any JSON object, or Fallback."""
        lookup = {key: plans[f] for key, f in by_key.items()}
        # A field under its JSON name, in no oneof, is decoded inline. Its proto name, if
        # different, goes through `special`, which sees both keys.
        plain = {
            key: (plans[f].name, plans[f].convert)
            for key, f in by_key.items()
            if key == f.json_name and not plans[f].rivals
        }
        ignore = self.ignore

        def special(key: Any, value: Any, js: dict[Any, Any], kw: dict[str, Any]) -> None:
            """A key that is unknown, null, an alias or a oneof case."""
            plan = lookup.get(key)
            if plan is None:
                if ignore and type(key) is str and _EXTENSION_KEY.match(key) is None:
                    return
                raise Fallback
            if len(plan.aliases) > 1 and sum(alias in js for alias in plan.aliases) > 1:
                raise Fallback  # the field twice: json_format merges or clears in key order
            if value is None:
                return  # null clears the field: a no-op on a new message
            if plan.rivals and not plan.rivals.isdisjoint(kw):
                raise Fallback  # two cases of one oneof: json_format's error
            kw[plan.name] = plan.convert(value)

        def decode(js: dict[Any, Any]) -> dict[str, Any]:
            kw: dict[str, Any] = {}
            for key, value in js.items():
                entry = plain.get(key)
                if entry is not None and value is not None:
                    kw[entry[0]] = entry[1](value)
                else:
                    special(key, value, js, kw)
            return kw

        return decode


def _map_key(field: Field) -> _Convert:
    """A JSON object key as a map key, only in its canonical form (so no two collide)."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string
    if field.type == FieldDescriptor.TYPE_BOOL:
        booleans = {"true": True, "false": False}

        def boolean(key: Any) -> bool:
            if type(key) is str and key in booleans:
                return booleans[key]
            raise Fallback

        return boolean
    low, high = _INT_RANGES[field.cpp_type]

    def integer(key: Any) -> int:
        if type(key) is str and _INT_KEY.fullmatch(key):
            number = int(key)
            if low <= number <= high:
                return number
        raise Fallback

    return integer


def _map(key: _Convert, value: _Convert) -> _Convert:
    def convert(js: Any) -> dict[Any, Any]:
        if type(js) is not dict:
            raise Fallback
        return {key(k): value(v) for k, v in js.items()}

    return convert


def _repeated(item: _Convert) -> _Convert:
    def convert(js: Any) -> list[Any]:
        if type(js) is not list and type(js) is not tuple:
            raise Fallback
        return [item(v) for v in js]

    return convert


_DECODER_COMPILERS = {flag: _DecoderCompiler(flag) for flag in (False, True)}
#: Compiled decoders by (message type, ignore_unknown_fields) (None: not compiled),
#: filled by `decoder`.
DECODERS: dict[tuple[Descriptor, bool], Decoder | None] = {}
_DECODER_LOCK = threading.Lock()


def decoder(message: Descriptor, ignore_unknown_fields: bool = False) -> Decoder | None:
    """The compiled decoder of a message type (None: json_format does it).

    It maps a JSON object to keyword arguments that build the message json_format.ParseDict
    would (`cls(**kwargs)`), or raises Fallback (or, seldom, another error) for input it is not
    certain of, json_format's errors included.
    """
    key = (message, bool(ignore_unknown_fields))
    try:
        return DECODERS[key]
    except KeyError:
        pass
    with _DECODER_LOCK:
        compiled: Decoder | None = None
        if message.full_name != _TIMESTAMP and _compilable(message):
            compiler = _DECODER_COMPILERS[key[1]]
            compiled = compiler.namespace[compiler.message(message)]
        DECODERS[key] = compiled
    return compiled

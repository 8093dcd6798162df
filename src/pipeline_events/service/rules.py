"""The schema's protovalidate rules compiled into plain Python checks: a cheap "certainly valid".

`is_valid(message)` is True exactly when `protovalidate.validate(message)` finds no
violation; the service reads False as "invalid, or not sure" and asks protovalidate, whose
violation list (paths, rule ids, messages) stays the only one clients see. This module never
words a violation: it proves their absence, at a fraction of the cost (protovalidate takes
~10-17 µs an event through Python; these checks ~2-4 µs).

Each message type gets one function, generated once from the `buf.validate` options in its
descriptors (`field`, `oneof`, `message`) and compiled with `exec`, as the adapter's fillers
are: straight-line attribute reads and comparisons, nothing interpreted per call. The source
is kept (`source()`), to read or to debug.

Exactly the rule kinds the schema uses are compiled, with protovalidate's meaning:

- string `min_len` / `max_len` (in code points, as Python's `len` counts), `uuid` (36
  characters: hex digits of either case, hyphens at 8, 13, 18 and 23; any version nibble);
- bytes `max_len`; uint32 `lt` / `lte`; uint64 `gte`;
- enum `defined_only` and `not_in`, folded into one set of allowed (or excluded) values;
- repeated `min_items` / `max_items` / `unique` / `items`; map `max_pairs` / `keys` / `values`;
- timestamp `gte` / `lte`, as exact integer nanoseconds (seconds * 10^9 + nanos: protovalidate
  normalises a Timestamp whose nanos are out of range, so -1 ns past a bound is inside);
- field `required` (message fields) and `ignore: IGNORE_IF_ZERO_VALUE` (scalars); oneof
  `required`.

Anything else raises UnsupportedRule when its type is compiled, instead of being skipped: a
rule kind not listed above, a CEL expression, a predefined rule (an extension), message
rules, a field of validate.proto newer than these bindings (an unknown field of the
options). The service compiles its publish requests at import, and the differential test
compiles every message of the schema and counts the rules, so a rule added to a .proto fails
the tests until it is compiled here (tests/service/test_validation_differential.py).

Presence follows protovalidate: the rules of a field with explicit presence (proto3
`optional`, a oneof case, a message) apply only when it is set, `required` aside. The presence
test is left out where the zero value passes the rules anyway, since an unset field reads as
its zero value; that is decided at compile time, by running the compiled test on that value.

A `Strictness` compiles checks that also ask for more than protovalidate does: what the
service requires of an envelope besides its schema rules (service/validation.py). Those
checks are only ever stricter, so their True still proves protovalidate has nothing to say.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

Check = Callable[[Message], bool]

__all__ = [
    "PROTOVALIDATE",
    "Strictness",
    "UnsupportedRule",
    "checker",
    "compiled_rules",
    "is_valid",
    "rule_leaves",
    "source",
]


class UnsupportedRule(Exception):
    """A validation option this compiler does not translate (refused rather than skipped)."""


@dataclass(frozen=True)
class Strictness:
    """Checks a compiled function makes besides protovalidate's rules (none by default).

    Attributes:
        timestamp_nanos: every set Timestamp field has nanos in 0..999,999,999.
        whole_map_entries: no message that holds a map field keeps an unknown field with its
            number (the parser keeps an entry it could not read whole that way).
        mirrored_oneofs: (oneof full name, field name, ((case, value), ...)): a case of the
            oneof must be set, and the field must hold that case's value.
    """

    timestamp_nanos: bool = False
    whole_map_entries: bool = False
    mirrored_oneofs: tuple[tuple[str, str, tuple[tuple[str, int], ...]], ...] = ()


#: protovalidate's rules, nothing more: what `is_valid` checks.
PROTOVALIDATE = Strictness()


def rule_leaves(rules: Message, prefix: str = "") -> dict[str, Any]:
    """Every rule set in a `buf.validate` options message, by its path (for example
    `map.keys.string.max_len`), with its value; a list of values (`not_in`) is one leaf.

    Raises:
        UnsupportedRule: the options hold a field these bindings do not know.
    """
    if len(UnknownFieldSet(rules)):
        raise UnsupportedRule(
            f"{prefix or rules.DESCRIPTOR.name}: fields unknown to validate.proto"
        )
    leaves: dict[str, Any] = {}
    for field, value in rules.ListFields():
        name = f"({field.full_name})" if field.is_extension else field.name
        target = field.message_type
        if (
            target is not None
            and not field.is_repeated
            and target.file.name == validate_pb2.DESCRIPTOR.name
        ):
            leaves.update(rule_leaves(value, f"{prefix}{name}."))
        else:
            leaves[prefix + name] = value
    return leaves


class _Rules:
    """The rules of one option, taken one by one as they are compiled; any left is refused."""

    def __init__(
        self, owner: str, leaves: dict[str, Any], compiled: set[tuple[str, str]], prefix: str = ""
    ):
        self.owner = owner
        self.leaves = leaves
        self.prefix = prefix
        self._compiled = compiled

    def take(self, path: str) -> Any:
        """The value of rule `path` (None if unset), from now on counted as compiled."""
        if path not in self.leaves:
            return None
        self._compiled.add((self.owner, self.prefix + path))
        return self.leaves.pop(path)

    def under(self, prefix: str) -> _Rules:
        """The rules below `prefix` (the FieldRules of map keys, say), moved out of these."""
        moved = {p: self.leaves.pop(p) for p in list(self.leaves) if p.startswith(prefix)}
        below = {p[len(prefix) :]: v for p, v in moved.items()}
        return _Rules(self.owner, below, self._compiled, self.prefix + prefix)

    def kinds(self) -> set[str]:
        """The rule kinds left (`string`, `required`...)."""
        return {path.split(".", 1)[0] for path in self.leaves}

    def done(self) -> None:
        """Refuse whatever rule no compilation step took."""
        if self.leaves:
            paths = ", ".join(sorted(self.prefix + p for p in self.leaves))
            raise UnsupportedRule(f"{self.owner}: rule {paths} not compiled")


# A UUID's shape: every hex digit translates to "0", "-" stays, any other byte becomes "x";
# one comparison with a constant follows (~0.14 µs, against ~0.3 µs for a regular expression).
# Non-ASCII text encodes to bytes >= 0x80, all "x": only the 36 ASCII characters can match.
_UUID_MAP = bytes(
    ord("0") if chr(b) in "0123456789abcdefABCDEF" else b if b == ord("-") else ord("x")
    for b in range(256)
)
_UUID_SHAPE = b"00000000-0000-0000-0000-000000000000"
_NANOS = 1_000_000_000
_INT32_SPAN = 2**31  # the most a Timestamp's int32 nanos moves it either way, in nanoseconds
_TIMESTAMP = "google.protobuf.Timestamp"
_IGNORE_IF_ZERO_VALUE = validate_pb2.IGNORE_IF_ZERO_VALUE
#: Oneofs with at most this many checked cases test them inline (if/elif), others by table.
_INLINE_CASES = 4

#: Field type -> the FieldRules case for it, among the scalar ones compiled.
_SCALAR_RULES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
}


@functools.cache
def _proto(descriptor: Descriptor) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    return proto


def _real_oneof(field: FieldDescriptor) -> OneofDescriptor | None:
    """The field's oneof, unless it is the synthetic one of a proto3 `optional` field."""
    oneof = field.containing_oneof
    if oneof is None or _proto(field.containing_type).field[field.index].proto3_optional:
        return None
    return oneof


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _options(owner: Any, extension: Any) -> dict[str, Any]:
    options = owner.GetOptions()
    return rule_leaves(options.Extensions[extension]) if options.HasExtension(extension) else {}


def _held_types(descriptor: Descriptor) -> list[Descriptor]:
    """The message types protovalidate descends into: message fields, items and map values."""
    held = []
    for field in descriptor.fields:
        target = field.message_type
        if target is not None and target.GetOptions().map_entry:
            target = target.fields_by_name["value"].message_type
        if target is not None:
            held.append(target)
    return held


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


def _test(fails: list[str]) -> list[str]:
    """Lines returning False if any of the `fails` expressions is true."""
    return [f"if {' or '.join(fails)}:", "    return False"] if fails else []


class _Compiler:
    """Generates and compiles one check function per message type into a shared namespace."""

    def __init__(self, strictness: Strictness):
        self.strictness = strictness
        self.mirrors = {
            name: (field, dict(cases)) for name, field, cases in strictness.mirrored_oneofs
        }
        self.namespace: dict[str, Any] = {
            "_UUID_MAP": _UUID_MAP,
            "_UUID_SHAPE": _UUID_SHAPE,
            "UnknownFieldSet": UnknownFieldSet,
            "_always": lambda message: True,
        }
        self.names: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.compiled: set[tuple[str, str]] = set()
        self._ids = itertools.count()
        self._needed: dict[str, bool] = {}

    def constant(self, value: Any) -> str:
        """A name in the namespace bound to `value`."""
        name = f"_k{next(self._ids)}"
        self.namespace[name] = value
        return name

    def _own_check(self, descriptor: Descriptor) -> bool:
        """Whether the type itself (not the types it holds) has anything to check."""
        strict = self.strictness
        return bool(
            _options(descriptor, validate_pb2.message)
            or any(_options(f, validate_pb2.field) for f in descriptor.fields)
            or any(_options(o, validate_pb2.oneof) for o in descriptor.oneofs)
            or any(o.full_name in self.mirrors for o in descriptor.oneofs)
            or (strict.whole_map_entries and any(_is_map(f) for f in descriptor.fields))
            or (
                strict.timestamp_nanos
                and any(
                    f.message_type and f.message_type.full_name == _TIMESTAMP
                    for f in descriptor.fields
                )
            )
        )

    def needs_check(self, descriptor: Descriptor) -> bool:
        """Whether the type, or any type it may hold however deep, has anything to check."""
        known = self._needed.get(descriptor.full_name)
        if known is None:
            seen, todo, known = {descriptor.full_name}, [descriptor], False
            while todo and not known:
                current = todo.pop()
                known = self._own_check(current)
                for held in _held_types(current):
                    if held.full_name not in seen:
                        seen.add(held.full_name)
                        todo.append(held)
            self._needed[descriptor.full_name] = known
        return known

    def check_name(self, descriptor: Descriptor) -> str | None:
        """The name of the type's check, compiled if it was not; None if it has nothing to check."""
        if not self.needs_check(descriptor):
            return None
        name = self.names.get(descriptor.full_name)
        if name is None:
            # Named before its body is generated, so that a type holding itself can call it.
            name = self.names[descriptor.full_name] = f"_check{next(self._ids)}"
            try:
                text = "\n".join(self._message(descriptor, name)) + "\n"
            except UnsupportedRule:
                del self.names[descriptor.full_name]
                raise
            exec(compile(text, f"<rules {descriptor.full_name}>", "exec"), self.namespace)
            self.sources[descriptor.full_name] = text
        return name

    def check(self, descriptor: Descriptor) -> Check:
        name = self.check_name(descriptor)
        return self.namespace[name or "_always"]

    # --- one message type -------------------------------------------------------------------

    def _message(self, descriptor: Descriptor, name: str) -> list[str]:
        owner = descriptor.full_name
        _Rules(owner, _options(descriptor, validate_pb2.message), self.compiled).done()
        body: list[str] = []
        maps = frozenset(f.number for f in descriptor.fields if _is_map(f))
        if self.strictness.whole_map_entries and maps:
            body += [
                "for u in UnknownFieldSet(m):",
                f"    if u.field_number in {self.constant(maps)}:",
                "        return False",
            ]
        for field in descriptor.fields:
            if _real_oneof(field) is None:
                body += self._field(field)
        for oneof in descriptor.oneofs:
            if _real_oneof(oneof.fields[0]) is not None:
                body += self._oneof(oneof)
        return [f"def {name}(m):", f'    """{owner}"""', *_indent(body), "    return True"]

    def _field_rules(self, field: FieldDescriptor) -> _Rules:
        return _Rules(field.full_name, _options(field, validate_pb2.field), self.compiled)

    def _field(self, field: FieldDescriptor) -> list[str]:
        """Lines that `return False` when field `field` of message `m` breaks a rule."""
        rules = self._field_rules(field)
        required = rules.take("required")
        ignore = rules.take("ignore")
        if ignore not in (None, _IGNORE_IF_ZERO_VALUE):
            raise UnsupportedRule(f"{field.full_name}: ignore {ignore} not compiled")
        if_zero = ignore == _IGNORE_IF_ZERO_VALUE
        if required and (field.message_type is None or field.is_repeated):
            raise UnsupportedRule(f"{field.full_name}: required is compiled on message fields only")
        if if_zero and (field.message_type is not None or field.is_repeated):
            raise UnsupportedRule(f"{field.full_name}: ignore is compiled on scalars only")
        name = field.name
        if _is_map(field):
            lines = self._map(field, rules)
        elif field.is_repeated:
            lines = self._repeated(field, rules)
        elif field.message_type is not None:
            body = self._message_value(field, rules, "v")
            read = [f"v = m.{name}"] if body else []
            if required:
                lines = [f"if not m.HasField({name!r}):", "    return False", *read, *body]
            elif body:
                lines = [f"if m.HasField({name!r}):", *_indent(read + body)]
            else:
                lines = []
        else:
            fails = self._scalar(field, rules, "v")
            if not fails:
                lines = []
            elif if_zero:
                lines = [f"v = m.{name}", f"if v and ({' or '.join(fails)}):", "    return False"]
            elif field.has_presence and self._fails_on(fails, field.default_value):
                lines = [f"if m.HasField({name!r}):", f"    v = m.{name}", *_indent(_test(fails))]
            else:  # unset, it reads as the zero value, which passes: no presence test needed
                lines = [f"v = m.{name}", *_test(fails)]
        rules.done()
        return lines

    def _fails_on(self, fails: list[str], value: Any) -> bool:
        test = eval(f"lambda v: {' or '.join(fails)}", self.namespace)  # text generated here
        return bool(test(value))

    @staticmethod
    def _kind(field: FieldDescriptor, rules: _Rules, expected: str | None) -> None:
        """Refuse rules written for another kind of field than this one (protovalidate does)."""
        if rules.kinds() - {expected}:
            kinds = ", ".join(sorted(rules.kinds()))
            raise UnsupportedRule(f"{field.full_name}: {kinds} rules on this field not compiled")

    def _scalar(self, field: FieldDescriptor, rules: _Rules, var: str) -> list[str]:
        """Expressions, any of which true means scalar `var` (of `field`'s type) breaks a rule."""
        kind = _SCALAR_RULES.get(field.type)
        self._kind(field, rules, kind)
        fails = []
        if kind == "string":
            low, high = rules.take("string.min_len"), rules.take("string.max_len")
            if low is not None and high is not None:
                fails.append(f"not {low} <= len({var}) <= {high}")
            elif low is not None:
                fails.append(f"len({var}) < {low}")
            elif high is not None:
                fails.append(f"len({var}) > {high}")
            uuid = rules.take("string.uuid")
            if uuid is False:
                raise UnsupportedRule(f"{field.full_name}: string.uuid false not compiled")
            if uuid:
                fails.append(f"{var}.encode().translate(_UUID_MAP) != _UUID_SHAPE")
        elif kind == "bytes":
            high = rules.take("bytes.max_len")
            if high is not None:
                fails.append(f"len({var}) > {high}")
        elif kind == "enum":
            defined_only = rules.take("enum.defined_only")
            if defined_only is False:
                raise UnsupportedRule(f"{field.full_name}: enum.defined_only false not compiled")
            excluded = frozenset(rules.take("enum.not_in") or ())
            if defined_only:
                allowed = frozenset(field.enum_type.values_by_number) - excluded
                fails.append(f"{var} not in {self.constant(allowed)}")
            elif excluded:
                fails.append(f"{var} in {self.constant(excluded)}")
        elif kind in ("uint32", "uint64"):
            below, at_most = rules.take(f"{kind}.lt"), rules.take(f"{kind}.lte")
            at_least = rules.take(f"{kind}.gte")
            if below is not None and at_most is not None:
                raise UnsupportedRule(f"{field.full_name}: both lt and lte")
            upper = below - 1 if below is not None else at_most
            if at_least is not None and upper is not None and at_least > upper:
                raise UnsupportedRule(f"{field.full_name}: an exclusive range not compiled")
            if at_least is not None:
                fails.append(f"{var} < {at_least}")
            if upper is not None:
                fails.append(f"{var} > {upper}")
        return fails

    def _message_value(self, field: FieldDescriptor, rules: _Rules, var: str) -> list[str]:
        """Lines that `return False` when message `var`, a set value of `field`, breaks a rule."""
        target = field.message_type
        lines = []
        if target.full_name == _TIMESTAMP:
            self._kind(field, rules, "timestamp")
            lowest, highest = rules.take("timestamp.gte"), rules.take("timestamp.lte")
            low = None if lowest is None else lowest.seconds * _NANOS + lowest.nanos
            high = None if highest is None else highest.seconds * _NANOS + highest.nanos
            if low is not None and high is not None and low > high:
                raise UnsupportedRule(f"{field.full_name}: an exclusive range not compiled")
            if self.strictness.timestamp_nanos:
                lines += [f"if not 0 <= {var}.nanos <= {_NANOS - 1}:", "    return False"]
            lines += self._timestamp(low, high, var)
        else:
            self._kind(field, rules, None)
        name = self.check_name(target)
        if name:
            lines += [f"if not {name}({var}):", "    return False"]
        return lines

    @staticmethod
    def _timestamp(low: int | None, high: int | None, var: str) -> list[str]:
        """Lines that `return False` when Timestamp `var` is outside [low, high] nanoseconds."""
        if low is None and high is None:
            return []
        # The seconds alone decide when they are well inside the range: nanos is an int32 (the
        # parser and the setters refuse anything else), so it moves the instant by at most
        # 2.15 s either way; only near a bound is the exact (big) integer computed.
        quick, exact = [], []
        if low is not None:
            quick.append(f"{-(-(low + _INT32_SPAN) // _NANOS)} <= s")
            exact.append(f"{low} <= t")
        if high is not None:
            quick.append(f"s <= {(high - _INT32_SPAN) // _NANOS}")
            exact.append(f"t <= {high}")
        return [
            f"s = {var}.seconds",
            f"if not ({' and '.join(quick)}):",
            f"    t = s * {_NANOS} + {var}.nanos",
            f"    if not ({' and '.join(exact)}):",
            "        return False",
        ]

    def _items(self, field: FieldDescriptor, rules: _Rules, var: str) -> list[str]:
        """Lines that `return False` when element `var` of repeated `field` breaks a rule."""
        if field.message_type is not None:
            return self._message_value(field, rules, var)
        return _test(self._scalar(field, rules, var))

    def _repeated(self, field: FieldDescriptor, rules: _Rules) -> list[str]:
        self._kind(field, rules, "repeated")
        low, high = rules.take("repeated.min_items"), rules.take("repeated.max_items")
        unique = rules.take("repeated.unique")
        items = rules.under("repeated.items.")
        item_lines = self._items(field, items, "x")
        items.done()
        lines = []
        if low is not None and high is not None:
            lines += [f"if not {low} <= len(v) <= {high}:", "    return False"]
        elif low is not None:
            lines += [f"if len(v) < {low}:", "    return False"]
        elif high is not None:
            lines += [f"if len(v) > {high}:", "    return False"]
        if unique is False:
            raise UnsupportedRule(f"{field.full_name}: repeated.unique false not compiled")
        if unique:
            if field.type not in _SCALAR_RULES:  # compared by set: not floats (NaN, -0.0)
                raise UnsupportedRule(f"{field.full_name}: unique on this type not compiled")
            lines += ["if len(set(v)) != len(v):", "    return False"]
        if item_lines:
            lines += ["for x in v:", *_indent(item_lines)]
        return [f"v = m.{field.name}", *lines] if lines else []

    def _map(self, field: FieldDescriptor, rules: _Rules) -> list[str]:
        self._kind(field, rules, "map")
        entry = field.message_type
        high = rules.take("map.max_pairs")
        keys, values = rules.under("map.keys."), rules.under("map.values.")
        key_lines = self._items(entry.fields_by_name["key"], keys, "k")
        value_lines = self._items(entry.fields_by_name["value"], values, "x")
        keys.done()
        values.done()
        lines = []
        if high is not None:
            lines += [f"if len(v) > {high}:", "    return False"]
        if key_lines and value_lines:
            lines += ["for k, x in v.items():", *_indent(key_lines + value_lines)]
        elif key_lines:
            lines += ["for k in v:", *_indent(key_lines)]
        elif value_lines:
            lines += ["for x in v.values():", *_indent(value_lines)]
        # Every map rule compiled holds for an empty map, so only a non-empty one is tested.
        return [f"v = m.{field.name}", "if v:", *_indent(lines)] if lines else []

    def _oneof(self, oneof: OneofDescriptor) -> list[str]:
        rules = _Rules(oneof.full_name, _options(oneof, validate_pb2.oneof), self.compiled)
        required = rules.take("required")
        rules.done()
        cases = {field.name: self._case(field) for field in oneof.fields}
        cases = {name: body for name, body in cases.items() if body}
        mirror = self.mirrors.get(oneof.full_name)
        if not cases and not mirror:
            if not required:
                return []
            return [f"if m.WhichOneof({oneof.name!r}) is None:", "    return False"]
        lines = [f"c = m.WhichOneof({oneof.name!r})"]
        if mirror:  # no case (None) mirrors no value either
            field, values = mirror
            if field not in oneof.containing_type.fields_by_name or set(values) - {
                f.name for f in oneof.fields
            }:
                raise ValueError(f"{oneof.full_name}: no field {field}, or cases it does not have")
            lines += [f"if m.{field} != {self.constant(values)}.get(c):", "    return False"]
        elif required:
            lines += ["if c is None:", "    return False"]
        if not cases:
            return lines
        if len(cases) <= _INLINE_CASES:
            for index, (name, body) in enumerate(cases.items()):
                keyword = "if" if index == 0 else "elif"
                lines += [f"{keyword} c == {name!r}:", f"    v = m.{name}", *_indent(body)]
            return lines
        table = {}  # many cases: one dictionary look-up rather than a chain of comparisons
        for name, body in cases.items():
            called = _called(body)
            table[name] = self.namespace[called] if called else self._function(name, body)
        return [
            *lines,
            f"f = {self.constant(table)}.get(c)",
            "if f is not None and not f(getattr(m, c)):",
            "    return False",
        ]

    def _case(self, field: FieldDescriptor) -> list[str]:
        """Lines that `return False` when `v`, the value of oneof case `field`, breaks a rule
        (run only when that case is set)."""
        rules = self._field_rules(field)
        if rules.take("required"):
            raise UnsupportedRule(f"{field.full_name}: required on a oneof case not compiled")
        if field.message_type is not None:
            lines = self._message_value(field, rules, "v")
        else:
            lines = _test(self._scalar(field, rules, "v"))
        rules.done()
        return lines

    def _function(self, label: str, body: list[str]) -> Any:
        """A compiled `f(v) -> bool` running `body`."""
        name = f"_case{next(self._ids)}"
        text = "\n".join([f"def {name}(v):", *_indent(body), "    return True"]) + "\n"
        exec(compile(text, f"<rules {label}>", "exec"), self.namespace)
        self.sources[label] = text
        return self.namespace[name]


def _called(body: list[str]) -> str | None:
    """The check a body only calls on `v` (`if not _checkN(v): return False`), if that is all."""
    if len(body) == 2 and body[0].startswith("if not _check") and body[0].endswith("(v):"):
        return body[0][len("if not ") : -len("(v):")]
    return None


_LOCK = threading.Lock()
_COMPILERS: dict[Strictness, _Compiler] = {}
_CHECKS: dict[tuple[Strictness, str], Check] = {}


def checker(descriptor: Descriptor, strictness: Strictness = PROTOVALIDATE) -> Check:
    """The compiled check of a message type: True only if protovalidate finds no violation
    (and the message meets `strictness`).

    Raises:
        UnsupportedRule: the type, or one it holds, has a rule this module does not compile.
    """
    key = (strictness, descriptor.full_name)
    check = _CHECKS.get(key)
    if check is None:
        with _LOCK:
            check = _CHECKS.get(key)
            if check is None:
                compiler = _COMPILERS.get(strictness)
                if compiler is None:
                    compiler = _COMPILERS[strictness] = _Compiler(strictness)
                check = _CHECKS[key] = compiler.check(descriptor)
    return check


def is_valid(message: Message) -> bool:
    """True exactly when `protovalidate.validate(message)` would find no violation."""
    return checker(message.DESCRIPTOR)(message)


def compiled_rules(strictness: Strictness = PROTOVALIDATE) -> frozenset[tuple[str, str]]:
    """(full name of a field, oneof or message; rule path) of every rule compiled so far."""
    compiler = _COMPILERS.get(strictness)
    return frozenset(compiler.compiled) if compiler else frozenset()


def source(descriptor: Descriptor, strictness: Strictness = PROTOVALIDATE) -> str:
    """The generated Python source of a type's check ("" if it has nothing to check)."""
    checker(descriptor, strictness)
    return _COMPILERS[strictness].sources.get(descriptor.full_name, "")

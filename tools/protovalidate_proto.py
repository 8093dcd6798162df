"""Recreate buf/validate/validate.proto (source + descriptor set) from the installed protovalidate wheel."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import itertools
import sys
from pathlib import Path
from typing import NoReturn

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message_factory,
    text_encoding,
    text_format,
    timestamp_pb2,
)
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.unknown_fields import UnknownFieldSet

VALIDATE_PROTO = "buf/validate/validate.proto"
WKT_MODULES = (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2)
MAX_FIELD_NUMBER = 536870911
SCALAR_NAMES = {  # FD.TYPE_DOUBLE -> "double", ...; groups/messages/enums are handled separately
    getattr(FD, a): a[5:].lower()
    for a in dir(FD)
    if a.startswith("TYPE_") and a not in ("TYPE_GROUP", "TYPE_MESSAGE", "TYPE_ENUM")
}
LABELS = {
    FD.LABEL_OPTIONAL: "optional",
    FD.LABEL_REQUIRED: "required",
    FD.LABEL_REPEATED: "repeated",
}


def fail(msg: str) -> NoReturn:
    """Abort with a clear error message."""
    sys.exit(f"protovalidate_proto.py: error: {msg}")


def load_embedded() -> tuple[descriptor_pb2.FileDescriptorProto, str]:
    """Return validate.proto's FileDescriptorProto embedded in the wheel, plus the wheel version."""
    spec = importlib.util.find_spec("protovalidate")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        fail(
            "the 'protovalidate' package is not installed in this Python environment "
            f"({sys.executable}); install it (pip install protovalidate) and retry"
        )
    gen = Path(next(iter(spec.submodule_search_locations))) / "_gen/buf/validate/validate_pb.py"
    if not gen.is_file():
        fail(f"{gen} not found; this protovalidate version has an unexpected layout")
    for node in ast.walk(ast.parse(gen.read_text(encoding="utf-8"), str(gen))):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "file_desc"
            and node.args
        ):
            fdp = descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(node.args[0]))
            if fdp.name != VALIDATE_PROTO:
                fail(f"{gen} embeds {fdp.name!r}, expected {VALIDATE_PROTO!r}")
            return fdp, importlib.metadata.version("protovalidate")
    fail(f"no file_desc(b'...') descriptor literal found in {gen}")


def descriptor_set(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorSet:
    """Build a FileDescriptorSet: well-known dependencies first, then validate.proto."""
    wkt = {m.DESCRIPTOR.name: m for m in WKT_MODULES}
    fds = descriptor_pb2.FileDescriptorSet()
    for dep in fdp.dependency:
        if dep not in wkt:
            fail(
                f"{VALIDATE_PROTO} imports {dep!r}, which this script does not know how to provide"
            )
        wkt[dep].DESCRIPTOR.CopyToProto(fds.file.add())
    fds.file.add().CopyFrom(fdp)
    return fds


class Printer:
    """Renders a proto2/proto3 FileDescriptorProto as .proto source text."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet):
        self.pool = descriptor_pool.DescriptorPool()
        for f in fds.file:
            self.pool.Add(f)
        self.lines: list[str] = []

    def emit(self, depth: int, text: str = "") -> None:
        """Append one indented line."""
        self.lines.append("  " * depth + text if text else "")

    def options(self, opts) -> list[tuple[str, str]]:
        """Re-parse an options message with the pool (so extensions resolve) into (name, value) pairs."""
        cls = message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName(opts.DESCRIPTOR.full_name)
        )
        msg = cls.FromString(opts.SerializeToString())
        if len(UnknownFieldSet(msg)):
            fail(f"unresolvable (unknown) fields in {opts.DESCRIPTOR.full_name}: {msg}")
        out = []
        for field, value in msg.ListFields():
            name = f"({field.full_name})" if field.is_extension else field.name
            values = value if field.is_repeated else [value]
            out += [(name, self.value(field, v)) for v in values]
        return out

    def value(self, field, v) -> str:
        """Format one option value as .proto source (message values as text-format literals)."""
        if field.type == FD.TYPE_MESSAGE:
            body = text_format.MessageToString(v, indent=2, as_utf8=True)
            return "{\n" + body + "}" if body else "{}"
        if field.type == FD.TYPE_ENUM:
            return field.enum_type.values_by_number[v].name
        if field.type == FD.TYPE_BOOL:
            return "true" if v else "false"
        if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
            return '"' + text_encoding.CEscape(v, as_utf8=isinstance(v, str)) + '"'
        return repr(v) if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE) else str(v)

    def statements(self, depth: int, opts) -> None:
        """Emit `option name = value;` statements."""
        for name, val in self.options(opts):
            self.block(depth, f"option {name} = {val};")

    def block(self, depth: int, text: str) -> None:
        """Emit possibly multi-line text (continuation lines keep their own relative indent)."""
        for line in text.split("\n"):
            self.emit(depth, line)

    def bracket(self, pairs: list[tuple[str, str]]) -> str:
        """Render compact options `[a = b, ...]` (leading space) or ''."""
        return " [" + ", ".join(f"{n} = {v}" for n, v in pairs) + "]" if pairs else ""

    def field(self, depth: int, f, syntax: str, in_oneof: bool) -> None:
        """Emit one field or extension declaration."""
        if f.type == FD.TYPE_GROUP:
            fail(f"group field {f.name!r} is not supported")
        ftype = f.type_name if f.type_name else SCALAR_NAMES[f.type]
        label = "" if in_oneof else LABELS[f.label] + " "
        if syntax == "proto3" and f.label == FD.LABEL_OPTIONAL and not f.proto3_optional:
            label = ""
        pairs = []
        if f.HasField("default_value"):
            d = f.default_value
            pairs.append(
                (
                    "default",
                    f'"{text_encoding.CEscape(d, as_utf8=True)}"'
                    if f.type == FD.TYPE_STRING
                    else f'"{d}"'
                    if f.type == FD.TYPE_BYTES
                    else d,
                )
            )
        if f.HasField("json_name") and f.json_name != json_default(f.name):
            pairs.append(("json_name", f'"{text_encoding.CEscape(f.json_name, as_utf8=True)}"'))
        pairs += self.options(f.options)
        self.block(depth, f"{label}{ftype} {f.name} = {f.number}{self.bracket(pairs)};")

    def message(self, depth: int, m, syntax: str) -> None:
        """Emit a message definition, recursively."""
        if m.options.map_entry:
            fail(f"map entry {m.name!r} is not supported")
        self.emit(depth, f"message {m.name} {{")
        self.statements(depth + 1, m.options)
        open_oneof, seen = None, set()
        for f in m.field:
            idx = f.oneof_index if f.HasField("oneof_index") and not f.proto3_optional else None
            if idx != open_oneof and open_oneof is not None:
                self.emit(depth + 1, "}")
            if idx is not None and idx != open_oneof:
                if idx in seen:
                    fail(f"{m.name}: fields of oneof {m.oneof_decl[idx].name!r} are not contiguous")
                seen.add(idx)
                self.emit(depth + 1, f"oneof {m.oneof_decl[idx].name} {{")
                self.statements(depth + 2, m.oneof_decl[idx].options)
            open_oneof = idx
            self.field(depth + 1 + (idx is not None), f, syntax, idx is not None)
        if open_oneof is not None:
            self.emit(depth + 1, "}")
        for n in m.nested_type:
            self.message(depth + 1, n, syntax)
        for e in m.enum_type:
            self.enum(depth + 1, e)
        self.extends(depth + 1, m.extension, syntax)
        for r in m.extension_range:
            is_max = r.end - 1 == MAX_FIELD_NUMBER and not m.options.message_set_wire_format
            end = "max" if is_max else str(r.end - 1)
            rng = str(r.start) if r.end - 1 == r.start else f"{r.start} to {end}"
            self.block(depth + 1, f"extensions {rng}{self.bracket(self.options(r.options))};")
        self.reserved(depth + 1, [(r.start, r.end - 1) for r in m.reserved_range], m.reserved_name)
        self.emit(depth, "}")

    def reserved(self, depth: int, ranges, names) -> None:
        """Emit reserved ranges (inclusive bounds, always numeric) and reserved names."""
        for start, end in ranges:
            self.emit(
                depth, f"reserved {start};" if start == end else f"reserved {start} to {end};"
            )
        for name in names:
            self.emit(depth, f'reserved "{name}";')

    def enum(self, depth: int, e) -> None:
        """Emit an enum definition."""
        self.emit(depth, f"enum {e.name} {{")
        self.statements(depth + 1, e.options)
        for v in e.value:
            self.block(depth + 1, f"{v.name} = {v.number}{self.bracket(self.options(v.options))};")
        self.reserved(depth + 1, [(r.start, r.end) for r in e.reserved_range], e.reserved_name)
        self.emit(depth, "}")

    def extends(self, depth: int, exts, syntax: str) -> None:
        """Emit extensions, grouping consecutive ones with the same extendee."""
        for extendee, group in itertools.groupby(exts, key=lambda x: x.extendee):
            self.emit(depth, f"extend {extendee} {{")
            for x in group:
                self.field(depth + 1, x, syntax, False)
            self.emit(depth, "}")

    def file(self, fdp: descriptor_pb2.FileDescriptorProto, header: list[str]) -> str:
        """Render the whole file."""
        syntax = fdp.syntax or "proto2"
        if syntax not in ("proto2", "proto3"):
            fail(f"{fdp.name} uses syntax {syntax!r} (editions); only proto2/proto3 are supported")
        if fdp.service:
            fail(f"{fdp.name} declares services, which are not supported")
        self.lines += [f"// {line}".rstrip() for line in header]
        self.lines += ["", f'syntax = "{syntax}";', "", f"package {fdp.package};", ""]
        public, weak = set(fdp.public_dependency), set(fdp.weak_dependency)
        for i, dep in enumerate(fdp.dependency):
            kind = "public " if i in public else "weak " if i in weak else ""
            self.emit(0, f'import {kind}"{dep}";')
        self.emit(0)
        self.statements(0, fdp.options)
        for m in fdp.message_type:
            self.emit(0)
            self.message(0, m, syntax)
        for e in fdp.enum_type:
            self.emit(0)
            self.enum(0, e)
        if fdp.extension:
            self.emit(0)
            self.extends(0, fdp.extension, syntax)
        return "\n".join(self.lines) + "\n"


def json_default(name: str) -> str:
    """protoc's default json_name: lowerCamelCase of the field name."""
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", required=True, type=Path, help="e.g. build/protovalidate")
    args = ap.parse_args(argv)
    fdp, version = load_embedded()
    fds = descriptor_set(fdp)
    header = [
        f"Code generated by tools/protovalidate_proto.py from the installed protovalidate=={version} wheel.",
        "DO NOT EDIT. Reconstructed from the wheel's embedded FileDescriptorProto",
        "(protovalidate/_gen/buf/validate/validate_pb.py); comments are not preserved.",
        "Original source: https://github.com/bufbuild/protovalidate (Apache-2.0).",
    ]
    source = Printer(fds).file(fdp, header)
    out_proto = args.out_dir / VALIDATE_PROTO
    out_proto.parent.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "protovalidate.binpb").write_bytes(fds.SerializeToString(deterministic=True))
    out_proto.write_text(source, encoding="utf-8", newline="\n")
    print(f"wrote {args.out_dir / 'protovalidate.binpb'} and {out_proto}")


if __name__ == "__main__":
    main()

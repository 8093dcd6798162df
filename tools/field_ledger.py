"""Record every field and enum number the contract has ever used (tests/contract/field_numbers.json).

The ledger only grows: run this after adding fields or enum values. The
contract tests fail if a recorded number is later given to another field or
value, or disappears without being `reserved`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "generated" / "python"))

from pipeline_events.schema import PACKAGE, descriptor_set  # noqa: E402

LEDGER = ROOT / "tests" / "contract" / "field_numbers.json"


def current_numbers() -> dict[str, dict[str, str]]:
    """Every message field and enum value of our package: full name -> number -> identity."""
    from google.protobuf import descriptor_pb2

    type_name = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}
    numbers: dict[str, dict[str, str]] = {}

    def visit_message(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        full = f"{prefix}.{message.name}"
        numbers[full] = {
            str(f.number): f"{f.name}:{type_name[f.type]}:{f.type_name}" for f in message.field
        }
        for nested in message.nested_type:
            if not nested.options.map_entry:
                visit_message(full, nested)
        for enum in message.enum_type:
            visit_enum(full, enum)

    def visit_enum(prefix: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        numbers[f"{prefix}.{enum.name}"] = {str(v.number): v.name for v in enum.value}

    for file in descriptor_set().file:
        if file.package != PACKAGE:
            continue
        for message in file.message_type:
            visit_message(file.package, message)
        for enum in file.enum_type:
            visit_enum(file.package, enum)
    return numbers


def main() -> None:
    ledger = json.loads(LEDGER.read_text()) if LEDGER.exists() else {}
    for name, entries in current_numbers().items():
        recorded = ledger.setdefault(name, {})
        for number, identity in entries.items():
            if recorded.setdefault(number, identity) != identity:
                raise SystemExit(f"{name} #{number} was {recorded[number]}, now {identity}")
    ordered = {
        name: dict(sorted(entries.items(), key=lambda kv: int(kv[0])))
        for name, entries in sorted(ledger.items())
    }
    LEDGER.write_text(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n")
    print(f"ledger: {sum(map(len, ordered.values()))} numbers in {len(ordered)} types")


if __name__ == "__main__":
    main()

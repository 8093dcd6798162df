"""Access to the contract itself: the shipped .proto files and the descriptor set."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from google.protobuf import descriptor_pb2

PACKAGE = "adaptive_pipeline.events.v1"
_DESCRIPTOR_SET = "descriptor_set.binpb"


def bindings_dir() -> Traversable:
    """The directory of the official bindings (it also holds the descriptor set)."""
    return resources.files(PACKAGE)


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The compiled contract with comments and every import, as other languages consume it."""
    data = bindings_dir().joinpath(_DESCRIPTOR_SET).read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def proto_files() -> dict[str, str]:
    """The contract's .proto sources by file name: shipped in the wheel, or proto/ in a checkout."""
    shipped = bindings_dir().joinpath("proto")
    if shipped.is_dir():
        folder = shipped
    else:  # an editable install: read them from the source tree
        from pathlib import Path

        folder = Path(__file__).resolve().parents[2] / "proto" / PACKAGE.replace(".", "/")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".proto")
    }

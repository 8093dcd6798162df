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


def bundle_dir() -> Traversable:
    """The schema bundle: `protoc -I` this folder (see its README.md, and tools/bundle.py).

    Shipped in the wheel; in a checkout (an editable install) the folder is `proto/`,
    which lacks only protovalidate's schema (run `make bundle` for the whole tree).
    """
    shipped = resources.files("pipeline_events").joinpath("bundle")
    if shipped.is_dir():
        return shipped
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "proto"


def proto_files() -> dict[str, str]:
    """The contract's .proto sources by file name (from the bundle, or proto/ in a checkout)."""
    folder = bundle_dir().joinpath(*PACKAGE.split("."))
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".proto")
    }

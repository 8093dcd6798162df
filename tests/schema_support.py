"""Every message type of the contract, for tests that must cover all of them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from adaptive_pipeline.events.v1 import (
    common_pb2,
    consumer_group_pb2,
    envelope_pb2,
    operational_pb2,
    pipeline_lifecycle_pb2,
    processing_lifecycle_pb2,
    service_pb2,
    stage_pb2,
    state_pb2,
)
from google.protobuf.descriptor import Descriptor

MODULES = (
    common_pb2,
    consumer_group_pb2,
    envelope_pb2,
    operational_pb2,
    pipeline_lifecycle_pb2,
    processing_lifecycle_pb2,
    service_pb2,
    stage_pb2,
    state_pb2,
)


def contract_messages() -> list[Descriptor]:
    """Every message type of the schema, nested ones (map entries aside) included."""

    def walk(descriptors: Iterable[Descriptor]) -> Iterator[Descriptor]:
        for descriptor in descriptors:
            if not descriptor.GetOptions().map_entry:
                yield descriptor
            yield from walk(descriptor.nested_types)

    return [d for module in MODULES for d in walk(module.DESCRIPTOR.message_types_by_name.values())]


def test_every_proto_file_is_listed() -> None:
    """A new .proto file must join MODULES, or the tests over every message miss it."""
    from pathlib import Path

    proto_dir = Path(__file__).parent.parent / "proto"
    files = {str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto")}
    assert files == {module.DESCRIPTOR.name for module in MODULES}

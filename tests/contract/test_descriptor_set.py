"""The committed descriptor set is complete and current: Debian's protoc, given only the schema
bundle, compiles the same schema, message by message and field by field, comments included."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from buf.validate import validate_pb2  # noqa: F401  # resolves the (buf.validate.*) options
from google.protobuf import descriptor_pb2

from pipeline_events.schema import PACKAGE, descriptor_set
from tools import bundle

CONTRACT_DIR = PACKAGE.replace(".", "/")
# The compiler's own schema: every protoc release ships its own descriptor.proto.
COMPILER_OWN = "google/protobuf/descriptor.proto"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.fail("no protoc on PATH: install Debian's protobuf-compiler (.ci/run does)")
    tree = bundle.write_tree(tmp_path_factory.mktemp("bundle") / "bundle")
    out = tree.parent / "compiled.binpb"
    files = sorted(p.relative_to(tree).as_posix() for p in (tree / CONTRACT_DIR).glob("*.proto"))
    subprocess.run(
        [protoc, "-I", str(tree), "--include_imports", "--include_source_info", "-o", str(out),
         *files],
        check=True, capture_output=True,
    )  # fmt: skip
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _by_name(files) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    return {file.name: file for file in files}


def test_the_same_files_in_the_same_order(compiled: descriptor_pb2.FileDescriptorSet) -> None:
    names = [file.name for file in descriptor_set().file]
    assert [file.name for file in compiled.file] == names
    # Ours, protovalidate's, and google/protobuf files only as imported.
    imported = {dep for file in descriptor_set().file for dep in file.dependency}
    assert {n for n in names if n.startswith("google/protobuf/")} <= imported


@pytest.mark.parametrize("name", [f.name for f in descriptor_set().file if f.name != COMPILER_OWN])
def test_every_message_field_enum_and_service_matches(
    compiled: descriptor_pb2.FileDescriptorSet, name: str
) -> None:
    ours, theirs = _by_name(descriptor_set().file)[name], _by_name(compiled.file)[name]
    assert ours.package == theirs.package and ours.options == theirs.options
    assert list(ours.dependency) == list(theirs.dependency)
    assert [m.name for m in ours.message_type] == [m.name for m in theirs.message_type]
    for mine, other in zip(ours.message_type, theirs.message_type, strict=True):
        assert list(mine.field) == list(other.field), f"{name}: {mine.name}"
        assert mine == other, f"{name}: {mine.name}"
    assert list(ours.enum_type) == list(theirs.enum_type)
    assert list(ours.service) == list(theirs.service)
    # The comments too: the set carries source info for every file, validate.proto included
    # (the well-known types' comments are each protoc release's own wording).
    assert ours.source_code_info.location, f"{name} has no source info"
    if not name.startswith("google/protobuf/"):
        assert ours == theirs


def test_protovalidate_schema_is_shipped_with_its_licence() -> None:
    tree = {name: path for name, path in bundle.bundle_files().items()}
    licence = tree["buf/validate/LICENSE"].read_text()
    assert "Apache License" in licence
    assert "buf/validate/validate.proto" in tree
    assert Path(tree["descriptor_set.binpb"]).read_bytes() == descriptor_set().SerializeToString()

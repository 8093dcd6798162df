"""The wheel ships the bindings, the .proto files and the descriptor set, and installs cleanly."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools import bundle

PROTO_FILES = sorted(p.name for p in (ROOT / "proto/adaptive_pipeline/events/v1").glob("*.proto"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        check=True,
    )  # fmt: skip
    (built,) = out.glob("pipeline_events-*.whl")
    return built


def test_wheel_contains_bindings_protos_and_descriptor_set(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    v1 = "adaptive_pipeline/events/v1/"
    assert f"{v1}envelope_pb2.py" in names
    assert f"{v1}envelope_pb2.pyi" in names
    assert f"{v1}service_pb2_grpc.py" in names
    assert f"{v1}descriptor_set.binpb" in names
    assert "buf/validate/validate_pb2.py" in names
    assert "adaptive_pipeline_betterproto/adaptive_pipeline/events/v1/__init__.py" in names
    assert "pipeline_events/__init__.py" in names
    assert not any(name.startswith(("google/", "tests/", "tools/")) for name in names)


def test_wheel_ships_the_schema_bundle_tree(wheel: Path) -> None:
    # The same files as `make bundle`'s tarball, byte for byte, under pipeline_events/bundle/.
    archive = zipfile.ZipFile(wheel)
    shipped = {
        name.removeprefix("pipeline_events/bundle/"): archive.read(name)
        for name in archive.namelist()
        if name.startswith("pipeline_events/bundle/")
    }
    expected = {name: source.read_bytes() for name, source in bundle.bundle_files().items()}
    assert shipped == expected
    assert {"buf/validate/validate.proto", "buf/validate/LICENSE", "descriptor_set.binpb"} <= set(
        shipped
    )
    assert {f"adaptive_pipeline/events/v1/{name}" for name in PROTO_FILES} <= set(shipped)


def test_wheel_installs_into_a_fresh_venv_and_imports(wheel: Path, tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True)
    script = (
        "import pipeline_events, google.protobuf\n"
        "from pipeline_events.schema import descriptor_set, proto_files\n"
        "from adaptive_pipeline.events.v1 import envelope_pb2\n"
        "from adaptive_pipeline_betterproto.adaptive_pipeline.events import v1\n"
        "assert 'site-packages' in google.protobuf.__file__\n"
        "names = {f.name for f in descriptor_set().file}\n"
        "assert 'adaptive_pipeline/events/v1/envelope.proto' in names, names\n"
        "print(','.join(sorted(proto_files())))\n"
    )
    result = subprocess.run(
        [python, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ",".join(PROTO_FILES)

"""TypeScript from the schema bundle with protoc alone: protobuf-es's plugin, then tsc.

The commands are the README's ("Generate code in your language"), run as written
against a bundle written to a temporary folder; nothing generated is committed.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.nodejs import prepare
from tools import bundle

NODE_DIR = ROOT / "tests" / "node"
PLUGIN = NODE_DIR / "node_modules" / ".bin" / "protoc-gen-es"
TSC = NODE_DIR / "node_modules" / ".bin" / "tsc"
CONTRACT = "adaptive_pipeline/events/v1"


def _protoc() -> str:
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.fail("no protoc on PATH: install Debian's protobuf-compiler (make toolchains)")
    return protoc


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"


def _generate(tree: Path, out: Path, *, from_descriptor_set: bool) -> None:
    """The README's protobuf-es command, in either form."""
    out.mkdir(parents=True)
    source = ["--descriptor_set_in=descriptor_set.binpb"] if from_descriptor_set else ["-I", "."]
    files = sorted(p.relative_to(tree).as_posix() for p in (tree / CONTRACT).glob("*.proto"))
    _run(
        [_protoc(), *source, f"--plugin=protoc-gen-es={PLUGIN}", f"--es_out={out}",
         "--es_opt=target=ts", *files, "buf/validate/validate.proto"],
        cwd=tree,
    )  # fmt: skip


def test_protobuf_es_generates_typescript_that_compiles_from_either_form(tmp_path: Path) -> None:
    prepare(NODE_DIR)  # npm ci of the pinned protobuf-es and TypeScript
    tree = bundle.write_tree(tmp_path / "bundle")
    from_sources, from_set = tmp_path / "ts-from-sources", tmp_path / "ts-from-set"
    _generate(tree, from_sources, from_descriptor_set=False)
    _generate(tree, from_set, from_descriptor_set=True)
    generated = sorted(p.relative_to(from_sources).as_posix() for p in from_sources.rglob("*.ts"))
    assert f"{CONTRACT}/envelope_pb.ts" in generated
    assert "buf/validate/validate_pb.ts" in generated
    same, _, _ = filecmp.cmpfiles(from_sources, from_set, generated, shallow=False)
    assert same == generated  # the two forms give the same code
    # tsc resolves @bufbuild/protobuf from a node_modules beside the code. --skipLibCheck:
    # protoc-gen-es brings TypeScript 5.4, older than @bufbuild/protobuf's own .d.ts files
    # expect (generic Uint8Array); the generated code itself is checked in full.
    os.symlink(NODE_DIR / "node_modules", tmp_path / "node_modules")
    _run(
        [str(TSC), "--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", "--module", "nodenext",
         "--moduleResolution", "nodenext", *(str(from_sources / name) for name in generated)],
        cwd=tmp_path,
    )  # fmt: skip

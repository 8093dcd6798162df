"""Second language: buf-generated protobuf-es code decodes every golden vector to its JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, VECTORS_DIR
from tests.nodejs import prepare, run, summary, tool

NODE_DIR = ROOT / "tests" / "node"
Checker = Callable[[Path], subprocess.CompletedProcess[str]]


def _buf() -> str:
    local = Path(sys.executable).parent / "buf"
    return str(local) if local.exists() else tool("buf")


@pytest.fixture(scope="module")
def check_vectors() -> Checker:
    node = prepare(NODE_DIR)
    run([_buf(), "generate", "--template", "tests/node/buf.gen.yaml"])

    def check(vectors: Path) -> subprocess.CompletedProcess[str]:
        cmd = [node, str(NODE_DIR / "check_vectors.mjs"), str(vectors)]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)

    return check


def test_node_decodes_every_vector(check_vectors: Checker) -> None:
    expected = len(json.loads((VECTORS_DIR / "manifest.json").read_text())["vectors"])
    result = check_vectors(VECTORS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == (expected, 0), result.stdout


def test_node_check_catches_a_corrupt_vector(check_vectors: Checker, tmp_path: Path) -> None:
    vectors = tmp_path / "v1"
    shutil.copytree(VECTORS_DIR, vectors)
    entry = json.loads((vectors / "manifest.json").read_text())["vectors"][0]
    binary = vectors / entry["binary"]
    event_id = json.loads((vectors / entry["json"]).read_text())["eventId"].encode()
    data = bytearray(binary.read_bytes())
    at = data.index(event_id)
    data[at] ^= 0x01  # still ASCII, so the string decodes but no longer matches the JSON
    binary.write_bytes(bytes(data))

    result = check_vectors(vectors)
    assert result.returncode != 0, result.stdout
    assert summary(result.stdout)[1] == 1, result.stdout
    assert f"FAIL {entry['name']}" in result.stdout

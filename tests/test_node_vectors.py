"""Second language: buf-generated protobuf-es code re-encodes every golden vector, from binary
and JSON, to its canonical bytes; the differences the manifest lists for it are pinned."""

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


def _es_differences(manifest: dict) -> dict[str, set[str]]:
    """Vector name -> the ids of the differences the manifest lists for protobuf-es."""
    listed: dict[str, set[str]] = {}
    for vector in manifest["vectors"]:
        for difference in vector.get("known_differences", []):
            if difference["runtime"].split()[0] == "protobuf-es":
                listed.setdefault(vector["name"], set()).add(difference["id"])
    return listed


def test_node_reports_each_pinned_difference(check_vectors: Checker) -> None:
    listed = _es_differences(json.loads((VECTORS_DIR / "manifest.json").read_text()))
    assert listed, "the manifest lists no protobuf-es difference any more: drop its pins"
    result = check_vectors(VECTORS_DIR)
    lines = {
        line.split()[1]: line for line in result.stdout.splitlines() if line[:4] in ("ok  ", "FAIL")
    }
    for name, ids in listed.items():
        for difference in ids:
            assert lines[name].startswith("ok ") and f"known difference {difference}" in lines[name]


def test_node_check_fails_a_difference_the_manifest_does_not_list(
    check_vectors: Checker, tmp_path: Path
) -> None:
    vectors = tmp_path / "v1"
    shutil.copytree(VECTORS_DIR, vectors)
    manifest = json.loads((vectors / "manifest.json").read_text())
    listed = _es_differences(manifest)
    for vector in manifest["vectors"]:
        vector["known_differences"] = [
            d
            for d in vector.get("known_differences", [])
            if d["runtime"].split()[0] != "protobuf-es"
        ]
    (vectors / "manifest.json").write_text(json.dumps(manifest))

    result = check_vectors(vectors)
    assert result.returncode != 0, result.stdout
    for name in listed:  # the difference now shows, unpinned ...
        assert f"FAIL {name}: binary:" in result.stdout
    assert "FAIL pins: protobuf-es-map-entry-unknown" in result.stdout  # ... and the pin is stale
    assert summary(result.stdout)[1] == len(listed) + 1, result.stdout

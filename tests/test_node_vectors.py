"""Second language: buf-generated protobuf-es code decodes every golden vector to its JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, VECTORS_DIR

NODE_DIR = ROOT / "tests" / "node"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)

Checker = Callable[[Path], subprocess.CompletedProcess[str]]


def _tool(name: str) -> str:
    # A missing toolchain must fail, not skip: this check is a requirement.
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the Node vector check needs Node.js 20+ and npm",
            pytrace=False,
        )
    return path


def _buf() -> str:
    local = Path(sys.executable).parent / "buf"
    return str(local) if local.exists() else _tool("buf")


def _run(cmd: list[str], cwd: Path = ROOT) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


def _summary(output: str) -> tuple[int, int]:
    match = SUMMARY.search(output)
    assert match, f"no 'N passed, M failed' line in:\n{output}"
    return int(match[1]), int(match[2])


@pytest.fixture(scope="module")
def check_vectors() -> Checker:
    node, npm = _tool("node"), _tool("npm")
    lock = NODE_DIR / "package-lock.json"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or lock.stat().st_mtime > installed.stat().st_mtime:
        _run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR)
    if not (ROOT / "build" / "protovalidate" / "buf" / "validate" / "validate.proto").exists():
        _run([sys.executable, "tools/protovalidate_proto.py", "--out-dir", "build/protovalidate"])
    _run([_buf(), "generate", "--template", "tests/node/buf.gen.yaml"])

    def run(vectors: Path) -> subprocess.CompletedProcess[str]:
        cmd = [node, str(NODE_DIR / "check_vectors.mjs"), str(vectors)]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)

    return run


def test_node_decodes_every_vector(check_vectors: Checker) -> None:
    expected = len(json.loads((VECTORS_DIR / "manifest.json").read_text())["vectors"])
    result = check_vectors(VECTORS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _summary(result.stdout) == (expected, 0), result.stdout


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
    assert _summary(result.stdout)[1] == 1, result.stdout
    assert f"FAIL {entry['name']}" in result.stdout

"""Running the Node.js parts of the suite: tools that must exist, `npm ci` when needed, summaries."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)


def tool(name: str) -> str:
    """The path of `node` or `npm`; a missing toolchain fails the test (these checks are required)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the Node.js checks need Node.js 20+ and npm", pytrace=False
        )
    return path


def run(cmd: list[str], cwd: Path = ROOT) -> None:
    """Run a set-up command; its failure fails the test with its output."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


def prepare(package_dir: Path, *npm_options: str) -> str:
    """`npm ci` in `package_dir` when its lockfile is newer than node_modules, and the derived
    protovalidate schema the protos import; returns the node executable."""
    node, npm = tool("node"), tool("npm")
    lock = package_dir / "package-lock.json"
    installed = package_dir / "node_modules" / ".package-lock.json"
    if not installed.exists() or lock.stat().st_mtime > installed.stat().st_mtime:
        run([npm, "ci", "--no-audit", "--no-fund", *npm_options], cwd=package_dir)
    if not (ROOT / "build" / "protovalidate" / "buf" / "validate" / "validate.proto").exists():
        run([sys.executable, "tools/protovalidate_proto.py", "--out-dir", "build/protovalidate"])
    return node


def summary(output: str) -> tuple[int, int]:
    """(passed, failed) from a script's closing `N passed, M failed` line."""
    match = SUMMARY.search(output)
    assert match, f"no 'N passed, M failed' line in:\n{output}"
    return int(match[1]), int(match[2])

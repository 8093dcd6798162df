"""Second language on the wire: a grpc-js client publishes to and subscribes from the server."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.service.conftest import ServerProcess, start_server_process

CLIENT_DIR = ROOT / "tests" / "node" / "grpc"
CHECKS = 7  # the checks client.mjs makes
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)

Client = Callable[[str], subprocess.CompletedProcess[str]]


def _tool(name: str) -> str:
    # A missing toolchain must fail, not skip: this check is a requirement.
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the Node gRPC client check needs Node.js 20+ and npm",
            pytrace=False,
        )
    return path


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
def node_client() -> Client:
    node, npm = _tool("node"), _tool("npm")
    lock = CLIENT_DIR / "package-lock.json"
    installed = CLIENT_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or lock.stat().st_mtime > installed.stat().st_mtime:
        _run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=CLIENT_DIR)
    if not (ROOT / "build" / "protovalidate" / "buf" / "validate" / "validate.proto").exists():
        _run([sys.executable, "tools/protovalidate_proto.py", "--out-dir", "build/protovalidate"])

    def run(target: str) -> subprocess.CompletedProcess[str]:
        cmd = [node, str(CLIENT_DIR / "client.mjs"), target]
        return subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )

    return run


@pytest.fixture
def memory_server() -> Iterator[ServerProcess]:
    server = start_server_process("memory://")
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_node_client_publishes_and_subscribes(
    node_client: Client, memory_server: ServerProcess
) -> None:
    result = node_client(memory_server.target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _summary(result.stdout) == (CHECKS, 0), result.stdout

    memory_server.process.send_signal(signal.SIGTERM)
    assert memory_server.process.wait(timeout=15) == 0, "".join(memory_server.log)


def test_node_client_reports_a_failure(node_client: Client) -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        result = node_client(f"127.0.0.1:{bound.getsockname()[1]}")
    assert result.returncode != 0, result.stdout
    assert _summary(result.stdout)[1] > 0, result.stdout
    assert "FAIL publish 3 events" in result.stdout

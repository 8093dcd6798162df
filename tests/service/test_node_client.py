"""Second language on the wire: a grpc-js client publishes to and subscribes from the server."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import ROOT
from tests.nodejs import prepare, summary
from tests.service.conftest import ServerProcess

CLIENT_DIR = ROOT / "tests" / "node" / "grpc"
CHECKS = 7  # the checks client.mjs makes

Client = Callable[[str], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def node_client() -> Client:
    # protobufjs's install script only prints a notice; skipping it keeps npm quiet.
    node = prepare(CLIENT_DIR, "--ignore-scripts")

    def run(target: str) -> subprocess.CompletedProcess[str]:
        cmd = [node, str(CLIENT_DIR / "client.mjs"), target]
        return subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )

    return run


def test_node_client_publishes_and_subscribes(
    node_client: Client, memory_server: ServerProcess
) -> None:
    result = node_client(memory_server.target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == (CHECKS, 0), result.stdout

    memory_server.process.send_signal(signal.SIGTERM)
    assert memory_server.process.wait(timeout=15) == 0, "".join(memory_server.log)


def test_node_client_reports_a_failure(node_client: Client) -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        result = node_client(f"127.0.0.1:{bound.getsockname()[1]}")
    assert result.returncode != 0, result.stdout
    assert summary(result.stdout)[1] > 0, result.stdout
    assert "FAIL publish 3 events" in result.stdout

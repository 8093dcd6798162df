"""The state queries: how soon a (re)started service answers, how fast it answers, and the floor.

Run: `python bench/state_queries.py` (about a minute); `--quick` (that is,
`--chunks 10000 --calls 300 --trials 2`) for a run of under 20 s. Prints Markdown
tables; compare rows within one run, since these 2-core machines are noisy.

Workload: one run of N ChunkProcessed events (after its PipelineCreated,
ProcessingStarted and StageStarted), appended to a fresh `SQLiteEventStore` in a
temporary directory in batches of 1,000. The server (`start_server`) runs on an
event loop of its own thread; the clients call it from the main thread over
127.0.0.1, as another process would.

Rebuild table (seconds, min and median of `--trials` trials; events/s at the min):

- the bare costs, with no server: reading the log (`read_all` pages of 1,000)
  alone; reading and decoding (`Folded.from_proto` of each RecordedEvent);
  reading, decoding and folding (`projections.replay`): what a cold rebuild
  cannot beat; and the fold alone of the pre-decoded events;
- cold start: no snapshot in the store (deleted between trials, while no server
  runs). From the call of `start_server` until it returns, until the read models
  are ready (folded to the head), and until the first GetProcessingState answer
  whose position is the head (the sync client, asking again at once while the
  service answers UNAVAILABLE);
- warm restart: the same with the snapshot the previous server saved at its stop.

The parse cache of ids (`adapter._parse_uuid`) is cleared before every pass and
trial, as in a new process; the log's pages are in the OS cache after the first.

Latency table (milliseconds, over `--calls` calls after 50 unmeasured ones, one
connection of the sync `EventClient`, the server warm and caught up):
`run_state` (answer decoded into a ProcessingRunState), the same with
`min_position` = head (read-your-writes already satisfied), the raw
`get_processing_state` (response message, not decoded), and `runs(limit=100)`
(the first page of ListProcessingRuns) over a second store of `--runs` small runs
(ProcessingStarted, StageStarted and 2 ChunkProcessed each, in 100 pipelines).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe, table

from pipeline_events import adapter, domain, projections
from pipeline_events.client import EventClient, RetryPolicy, ServiceUnavailableError
from pipeline_events.projections import Folded, Replayed
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.store import SQLiteEventStore

FOLD_GOAL = 300_000  # events/s of the fold
P50_GOAL_MS = 1.0  # warm GetProcessingState p50
COLD_GOAL_S = 0.5  # cold rebuild of 100,000 events
COLD_GOAL_EVENTS = 100_000
BATCH = 1000  # events per append
PAGE = 1000  # events per read_all page
WARMUP_CALLS = 50
RUNS_PER_PIPELINE = 100
NO_RETRY = RetryPolicy(max_attempts=1)  # the benchmark asks again itself, at once

T = TypeVar("T")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- workloads ---------------------------------------------------------------------------


def chunk_run(count: int) -> tuple[uuid.UUID, list[domain.Event]]:
    """A run of `count` ChunkProcessed events, after what begins it; and its id."""
    pipeline_id, run, stage = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    context = domain.SecurityContext(user_id="alice")
    return run, [
        domain.PipelineCreated.new(pipeline_id, "ingest", 4, "alice"),
        domain.ProcessingStarted.new(pipeline_id, run, "/in/a", "/out/a", count << 20, context),
        domain.StageStarted.new(pipeline_id, run, stage, "compression", "compression"),
        *(
            domain.ChunkProcessed.new(pipeline_id, run, uuid.uuid4(), i, 1 << 20, "compression", 12)
            for i in range(count)
        ),
    ]


def small_runs(count: int) -> list[domain.Event]:
    """`count` runs of 4 events each, RUNS_PER_PIPELINE to a pipeline."""
    context = domain.SecurityContext(user_id="alice")
    events: list[domain.Event] = []
    pipeline_id = uuid.uuid4()
    for n in range(count):
        if n % RUNS_PER_PIPELINE == 0:
            pipeline_id = uuid.uuid4()
            events.append(domain.PipelineCreated.new(pipeline_id, f"ingest-{n}", 1, "alice"))
        run, stage = uuid.uuid4(), uuid.uuid4()
        events += [
            domain.ProcessingStarted.new(
                pipeline_id, run, f"/in/{n}", f"/out/{n}", 2 << 20, context
            ),
            domain.StageStarted.new(pipeline_id, run, stage, "compression", "compression"),
            *(
                domain.ChunkProcessed.new(
                    pipeline_id, run, uuid.uuid4(), i, 1 << 20, "compression", 12
                )
                for i in range(2)
            ),
        ]
    return events


async def build_store(path: Path, events: list[domain.Event]) -> int:
    """A fresh store at `path` holding `events`; its head position."""
    envelopes = [adapter.to_envelope(e) for e in events]
    store = await SQLiteEventStore.open(path)
    try:
        for start in range(0, len(envelopes), BATCH):
            await store.append(envelopes[start : start + BATCH])
        return await store.head_position()
    finally:
        await store.close()


def drop_snapshots(path: Path) -> None:
    """Delete the saved read models (no server, no store open on the file)."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute("DELETE FROM snapshots")
    finally:
        connection.close()


# --- the server's event loop -------------------------------------------------------------


class LoopThread:
    """An event loop running on a thread of its own (the server's); the sync client blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="server", daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.submit(coroutine).result()

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


# --- the bare costs ----------------------------------------------------------------------


async def read_pages(store: SQLiteEventStore, each: Callable[[Sequence[Any]], object]) -> None:
    position, head = 0, await store.head_position()
    while position < head:
        page = await store.read_all(after_position=position, limit=PAGE)
        each(page.events)
        position = page.scanned_to


async def timed(passes: int, one_pass: Callable[[], Coroutine[Any, Any, None]]) -> list[float]:
    """Seconds of each of `passes` passes (the id cache cleared before each)."""
    seconds = []
    for _ in range(passes):
        gc.collect()
        adapter._parse_uuid.cache_clear()
        began = time.perf_counter()
        await one_pass()
        seconds.append(time.perf_counter() - began)
    return seconds


async def bare_costs(path: Path, trials: int) -> tuple[dict[str, list[float]], int]:
    """Seconds per pass of reading, decoding, folding the log; and the events folded."""
    store = await SQLiteEventStore.open(path)
    try:

        async def read() -> None:
            await read_pages(store, lambda events: None)

        async def read_decode() -> None:
            from_proto = Folded.from_proto

            def each(events: Sequence[Any]) -> None:
                for message in events:
                    from_proto(message)

            await read_pages(store, each)

        async def read_decode_fold() -> None:
            states = Replayed()
            await read_pages(store, lambda events: projections.replay(events, states))

        folded: list[Folded] = []
        await read_pages(store, lambda events: folded.extend(map(Folded.from_proto, events)))

        async def fold() -> None:
            projections.replay(folded)

        return {
            "store read (read_all, pages of 1,000)": await timed(trials, read),
            "read + decode (Folded.from_proto)": await timed(trials, read_decode),
            "read + decode + fold (projections.replay)": await timed(trials, read_decode_fold),
            "fold only (pre-decoded, projections.replay)": await timed(trials, fold),
        }, len(folded)
    finally:
        await store.close()


# --- starts ------------------------------------------------------------------------------


async def _start(path: Path) -> tuple[SQLiteEventStore, RunningServer, float, float, Any]:
    store = await SQLiteEventStore.open(path)
    gc.collect()
    adapter._parse_uuid.cache_clear()
    began = time.perf_counter()
    running = await start_server(store)
    returned = time.perf_counter()

    async def ready_at() -> float:
        await running.service.read_models.wait(0, 600.0)
        return time.perf_counter()

    return store, running, began, returned, asyncio.ensure_future(ready_at())


async def _await(future: Any) -> Any:
    return await future


async def _stop(store: SQLiteEventStore, running: RunningServer) -> None:
    await running.stop(1.0)
    await store.close()


def start_and_ask(
    loop: LoopThread, path: Path, processing_id: uuid.UUID, head: int
) -> tuple[list[float], SQLiteEventStore, RunningServer]:
    """Seconds from start_server to its return, to ready, to the first full answer."""
    store, running, began, returned, ready = loop.run(_start(path))
    with EventClient(f"127.0.0.1:{running.port}", retry=NO_RETRY) as client:
        while True:
            try:
                if client.get_processing_state(processing_id).position == head:
                    break
            except ServiceUnavailableError:  # still folding: ask again at once
                pass
        answered = time.perf_counter()
    ready_time = loop.run(_await(ready))
    return [returned - began, ready_time - began, answered - began], store, running


# --- latency -----------------------------------------------------------------------------


def latencies(calls: int, call: Callable[[], Any]) -> list[float]:
    """Milliseconds of each of `calls` calls, after WARMUP_CALLS unmeasured ones."""
    for _ in range(WARMUP_CALLS):
        call()
    gc.collect()
    took = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        began = clock()
        call()
        took.append((clock() - began) / 1e6)
    return took


def percentiles(took: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(took, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98]


# --- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--runs", type=int, help="small runs for ListProcessingRuns (chunks/10)")
    parser.add_argument(
        "--quick", action="store_true", help="--chunks 10000 --calls 300 --trials 2"
    )
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.calls, args.trials = 10_000, 300, 2
    runs = args.chunks // 10 if args.runs is None else args.runs

    loop = LoopThread()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-state-") as directory:
            rebuild, latency, fold_rate, cold_best, p50 = measure(
                loop, Path(directory), args.chunks, args.calls, args.trials, runs
            )
    finally:
        loop.close()

    print(
        f"### State queries: rebuild of one run of {args.chunks:,} ChunkProcessed events,"
        f" seconds ({args.trials} trials) — {describe()}\n"
    )
    print(table(["measurement", "min s", "median s", "events/s (at min)"], rebuild))
    print(f"\n### State queries: latency, ms (sync client, one connection) — {describe()}\n")
    print(table(["query", "calls", "p50", "p90", "p99", "mean"], latency))
    scaled = (
        ""
        if args.chunks == COLD_GOAL_EVENTS
        else f" (measured {args.chunks:,}: not the goal's size)"
    )
    goals = [
        [
            f"fold >= {FOLD_GOAL:,} events/s",
            f"{fold_rate:,.0f} events/s",
            _yes(fold_rate >= FOLD_GOAL),
        ],
        [
            f"warm GetProcessingState p50 < {P50_GOAL_MS} ms",
            f"{p50:.3f} ms",
            _yes(p50 < P50_GOAL_MS),
        ],
        [
            f"cold rebuild of {COLD_GOAL_EVENTS:,} events < {COLD_GOAL_S} s{scaled}",
            f"{cold_best:.3f} s",
            _yes(cold_best < COLD_GOAL_S) if not scaled else "n/a",
        ],
    ]
    print("\n### Goals (issue 11)\n")
    print(table(["goal", "measured (best)", "met"], goals))


def _yes(met: bool) -> str:
    return "yes" if met else "no"


def measure(
    loop: LoopThread, directory: Path, chunks: int, calls: int, trials: int, runs: int
) -> tuple[list[list[str]], list[list[str]], float, float, float]:
    path = directory / "run.db"
    log(f"building one run of {chunks:,} ChunkProcessed events")
    processing_id, events = chunk_run(chunks)
    head = loop.run(build_store(path, events))
    del events

    log("measuring: bare costs")
    bare, folded_count = loop.run(bare_costs(path, trials))
    assert folded_count == head, (folded_count, head)

    log(f"measuring: {trials} cold starts")
    cold: list[list[float]] = []
    for _ in range(trials):
        drop_snapshots(path)
        seconds, store, running = start_and_ask(loop, path, processing_id, head)
        cold.append(seconds)
        loop.run(_stop(store, running))  # saves the snapshot the warm restarts load

    log(f"measuring: {trials} warm restarts")
    warm: list[list[float]] = []
    for trial in range(trials):
        seconds, store, running = start_and_ask(loop, path, processing_id, head)
        warm.append(seconds)
        if trial < trials - 1:
            loop.run(_stop(store, running))

    log(f"measuring: {calls:,} calls of each query")
    latency_rows = []
    try:
        with EventClient(f"127.0.0.1:{running.port}") as client:
            queries = [
                ("GetProcessingState: run_state()", lambda: client.run_state(processing_id)),
                (
                    "GetProcessingState: run_state(min_position=head)",
                    lambda: client.run_state(processing_id, min_position=head),
                ),
                (
                    "GetProcessingState: get_processing_state() (raw)",
                    lambda: client.get_processing_state(processing_id),
                ),
            ]
            p50 = 0.0
            for name, call in queries:
                took = latencies(calls, call)
                cuts = percentiles(took)
                p50 = p50 or cuts[0]
                latency_rows.append(_latency_row(name, took, cuts))
    finally:
        loop.run(_stop(store, running))

    if runs:
        latency_rows.append(list_runs_latency(loop, directory / "runs.db", runs, calls))

    def row(name: str, seconds: list[float], events: int) -> list[str]:
        least = min(seconds)
        return [name, f"{least:.3f}", f"{statistics.median(seconds):.3f}", f"{events / least:,.0f}"]

    rebuild_rows = [row(name, seconds, head) for name, seconds in bare.items()]
    for label, trial_seconds in (("cold start", cold), ("warm restart", warm)):
        for index, what in enumerate(
            ("start_server returned", "read models ready", "first full answer")
        ):
            seconds = [t[index] for t in trial_seconds]
            rebuild_rows.append([*row(f"{label}: {what}", seconds, head)[:3], ""])
    fold_rate = head / min(bare["fold only (pre-decoded, projections.replay)"])
    cold_best = min(t[2] for t in cold)
    return rebuild_rows, latency_rows, fold_rate, cold_best, p50


def _latency_row(name: str, took: list[float], cuts: tuple[float, float, float]) -> list[str]:
    return [name, f"{len(took):,}", *(f"{c:.3f}" for c in cuts), f"{statistics.fmean(took):.3f}"]


def list_runs_latency(loop: LoopThread, path: Path, runs: int, calls: int) -> list[str]:
    log(f"building {runs:,} small runs; measuring ListProcessingRuns")
    loop.run(build_store(path, small_runs(runs)))
    store, running, _, _, ready = loop.run(_start(path))
    try:
        loop.run(_await(ready))  # the rebuild, not measured here
        with EventClient(f"127.0.0.1:{running.port}") as client:
            page = min(100, runs)
            found = client.runs(limit=page, page_size=page)
            assert len(found) == page, len(found)
            took = latencies(calls, lambda: client.runs(limit=page, page_size=page))
    finally:
        loop.run(_stop(store, running))
    name = f"ListProcessingRuns: runs(limit={page}) of {runs:,} runs"
    return _latency_row(name, took, percentiles(took))


if __name__ == "__main__":
    main()

"""Acknowledged means durable: SIGKILL a writer at random moments, then check the file."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline_events.store import SQLiteEventStore
from tests.conftest import ROOT

ROUNDS = 6


def _run_and_kill(path: Path, delay: float) -> list[str]:
    """Start the child, SIGKILL it after `delay` seconds; return its complete output lines."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_child", str(path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any(line.startswith("ack") for line in lines) and time.monotonic() < deadline:
        time.sleep(0.01)  # let it get going before the clock starts
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join()
    return [line for line in lines if line.endswith("\n")]  # a torn last line was never sent


async def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "events.db"
    acked: dict[str, int] = {}  # event id -> acknowledged position
    tried: list[list[str]] = []
    for _ in range(ROUNDS):
        for line in _run_and_kill(path, rng.uniform(0.05, 0.5)):
            kind, *words = line.split()
            if kind == "try":
                tried.append(words)
            else:
                ids, positions = words[: len(words) // 2], words[len(words) // 2 :]
                acked.update(zip(ids, map(int, positions), strict=True))

        async with await SQLiteEventStore.open(path) as store:
            events = (await store.read_all(limit=10_000_000)).events
            # Every stored id is still known after the kill (in memory or merged):
            # appending all of them again is a retry that adds nothing.
            for start in range(0, len(events), 500):
                again = await store.append([e.envelope for e in events[start : start + 500]])
                assert again.already_recorded, seed
            assert await store.head_position() == len(events), seed
        positions = {e.envelope.event_id: e.global_position for e in events}
        assert [e.global_position for e in events] == list(range(1, len(events) + 1)), seed
        assert len(positions) == len(events), f"an event is stored twice (seed {seed})"
        for event_id, position in acked.items():
            assert positions.get(event_id) == position, (
                f"acknowledged {event_id} lost (seed {seed})"
            )
        for batch in tried:
            assert sum(event_id in positions for event_id in batch) in (0, len(batch)), seed
        by_aggregate: dict[str, list[int]] = {}
        for event in events:
            by_aggregate.setdefault(event.envelope.aggregate_id, []).append(event.revision)
        for revisions in by_aggregate.values():
            assert revisions == list(range(1, len(revisions) + 1)), seed
    assert len(acked) > ROUNDS * 5  # every round acknowledged something before the kill
    with sqlite3.connect(path) as connection:  # the child's small limits made it merge ids too
        assert connection.execute("SELECT count(*) FROM event_ids").fetchone()[0] > 0

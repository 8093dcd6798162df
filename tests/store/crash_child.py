"""Child process of the crash test: appends batches forever, reporting each attempt and acknowledgement."""

from __future__ import annotations

import asyncio
import sys
import uuid

from pipeline_events import adapter, domain
from pipeline_events.store import SQLiteEventStore
from pipeline_events.store import sqlite as sqlite_store

BATCH = 5
# Small limits, so that kills also land in event-id merges and WAL checkpoints.
sqlite_store._MERGE_AT = 200
sqlite_store._MERGE_SLICE = 16
sqlite_store._CHECKPOINT_FRAMES = 100
AGGREGATES = [uuid.UUID(int=n) for n in range(1, 5)]


async def main(path: str) -> None:
    store = await SQLiteEventStore.open(path)
    n = 0
    while True:
        pipeline = AGGREGATES[n % len(AGGREGATES)]
        events = [
            domain.ChunkProcessed.new(pipeline, pipeline, uuid.uuid4(), n * BATCH + i, 1, "c", 1)
            for i in range(BATCH)
        ]
        ids = " ".join(str(e.event_id) for e in events)
        print(f"try {ids}", flush=True)
        result = await store.append([adapter.to_envelope(e) for e in events])
        positions = " ".join(str(p.global_position) for p in result.positions)
        print(f"ack {ids} {positions}", flush=True)
        n += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""A parked event is listed as soon as the group counts it, even while the dispatcher's
write of its record is still under way (a slow store: NATS round trips, a busy disk).

Found by the NATS run of the consumer-group contract, where it failed now and then
(`client.parked()` == [] while `group().parked` == 1: a reader's flush found nothing to
write while the dispatcher's flush was still storing the record, and read too early);
made deterministic here by slowing the store's writes of parked records on SQLite.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipeline_events.client import AsyncEventClient, Delivery, GroupSettings
from pipeline_events.consumer import ParkEvent
from pipeline_events.service.server import start_server
from pipeline_events.store import SQLiteEventStore
from tests.service.groups_contract import Worker, chunk_events, wait_until

SLOW_WRITE = 0.5  # seconds a write of a parked record takes


async def test_a_parked_event_is_listed_and_replayable_while_its_write_is_slow(
    tmp_path: Path,
) -> None:
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    write_state = store.write_state

    async def slow(changes: Any) -> None:
        if any(key.startswith("parked/") for key in changes):
            await asyncio.sleep(SLOW_WRITE)
        await write_state(changes)

    store.write_state = slow  # type: ignore[method-assign]
    server = await start_server(store)
    try:
        async with AsyncEventClient(f"127.0.0.1:{server.port}") as client:
            await client.create_group("slow-park", settings=GroupSettings(backoff=(0.01,)))
            (event,) = chunk_events(1)

            async def handler(delivery: Delivery) -> None:
                raise ParkEvent("not now")

            worker = Worker(client, "slow-park", handler)
            await client.publish([event])
            await wait_until(lambda: _parked(client), "the event counted as parked")
            listed = await client.parked("slow-park")
            assert [p.event.event_id for p in listed] == [str(event.event_id)]
            assert await client.replay_parked("slow-park") == 1
            await worker.stopped()
    finally:
        await server.stop(0)
        await store.close()


async def _parked(client: AsyncEventClient) -> bool:
    return (await client.group("slow-park")).parked == 1

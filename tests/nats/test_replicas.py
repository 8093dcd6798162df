"""Two stateless EventService replicas (`pipeline-events serve` processes) over one JetStream:
what one stores the other serves, live; racing writers through both get exactly one winner
per revision; the read models of each follow the writes of the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from pipeline_events import domain
from pipeline_events.client import AsyncEventClient, WrongExpectedRevisionError
from pipeline_events.projections import ProcessingStatus
from tests.nats.test_store_contract import store_url
from tests.nats_support import NatsServer
from tests.service.conftest import ServerProcess, start_server_process, stop_process

CONTEXT = domain.SecurityContext(user_id="alice")


@pytest.fixture
def replicas(nats_server: NatsServer) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    url = store_url(nats_server)
    first = start_server_process(url)
    try:
        second = start_server_process(url)
        try:
            yield first, second
        finally:
            assert stop_process(second.process) == 0
    finally:
        assert stop_process(first.process) == 0


def chunk(pipeline: uuid.UUID, run: uuid.UUID, n: int) -> domain.ChunkProcessed:
    return domain.ChunkProcessed.new(pipeline, run, uuid.uuid4(), n, 1024, "compression", 1)


async def test_what_one_replica_stores_the_other_streams_live(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = replicas
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    async with AsyncEventClient(first.target) as writer, AsyncEventClient(second.target) as reader:
        received: list[int] = []

        async def read() -> None:
            async for recorded in reader.subscribe(from_position="start"):
                received.append(recorded.global_position)
                if len(received) == 121:
                    return

        reading = asyncio.create_task(read())
        await writer.publish([domain.ProcessingStarted.new(pipeline, run, "/i", "/o", 1, CONTEXT)])
        for batch in range(7):  # single events and atomic batches, while the reader is live
            events = [chunk(pipeline, run, batch * 17 + n) for n in range(17)]
            await writer.publish(events if batch % 2 else events[:1])
            if batch % 2 == 0:
                await writer.publish(events[1:])
        await writer.publish(
            [domain.ProcessingCompleted.new(pipeline, run, domain.ProcessingMetrics(), 1)]
        )
        await asyncio.wait_for(reading, 60)
        assert received == list(range(1, 122))  # every position once, in order
        history = await reader.read_aggregate(pipeline)
        assert [r.revision for r in history] == list(range(1, 122))
        # The read models of the other replica follow the same stream.
        state = await reader.run_state(run, min_position=121)
        assert state.status is ProcessingStatus.COMPLETED
        assert state.stages["compression"].chunks_processed == 7 * 17


async def test_racing_writers_through_both_replicas_get_one_winner_per_revision(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = replicas
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    rounds, writers = 15, 6
    async with AsyncEventClient(first.target) as a, AsyncEventClient(second.target) as b:
        clients = [a, b]
        for revision in range(rounds):
            outcomes = await asyncio.gather(
                *(
                    clients[w % 2].publish(
                        [chunk(pipeline, run, revision * writers + w)],
                        expected={pipeline: revision},
                    )
                    for w in range(writers)
                ),
                return_exceptions=True,
            )
            won = [o for o in outcomes if not isinstance(o, BaseException)]
            lost = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(won) == 1, outcomes
            assert won[0].positions[0].revision == revision + 1
            assert all(isinstance(o, WrongExpectedRevisionError) for o in lost), lost
            assert all(o.actual == revision + 1 for o in lost)  # type: ignore[union-attr]
        history = await b.read_aggregate(pipeline)
        assert [r.revision for r in history] == list(range(1, rounds + 1))

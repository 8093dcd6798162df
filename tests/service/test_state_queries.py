"""The state RPCs over a real server and SQLite file: every demo run answered as the log folds
it, live and after a restart (with its snapshot, without, or with a stale one), right while
events are still being published, with read-your-writes, paging and every bad request refused."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import orjson
import pytest
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from google.rpc import error_details_pb2

from pipeline_events import adapter, demo, domain
from pipeline_events.client import (
    AsyncEventClient,
    InvalidArgumentError,
    NotFoundError,
    ProjectionBehindError,
    ServiceUnavailableError,
)
from pipeline_events.projections import (
    Folded,
    ProcessingStatus,
    Replayed,
    RunSummary,
    replay,
)
from pipeline_events.service.read_models import SNAPSHOT_NAME, ReadModels
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.store import EventStore, SQLiteEventStore
from tests.service.test_limits import detail, rich_status

CONTEXT = domain.SecurityContext(user_id="alice")
PIPELINES, RUNS = 3, 5  # 15 runs, every outcome of the demo, every event type


@pytest.fixture(scope="module")
def demo_logs() -> list[list[domain.Event]]:
    return list(demo.simulate(PIPELINES, RUNS, seed=21))


def replayed_from(logs: list[list[domain.Event]]) -> Replayed:
    return replay(event for log in logs for event in log)


async def folded_from_store(store: EventStore) -> Replayed:
    """The states a replay of the store's whole log gives (positions and times as stored)."""
    states, after = Replayed(), 0
    while True:
        page = await store.read_all(after_position=after, limit=1000)
        replay((Folded.from_proto(message) for message in page.events), start=states)
        after = page.scanned_to
        if after >= page.head:
            return states


async def publish_all(client: AsyncEventClient, logs: list[list[domain.Event]]) -> int:
    """Publish each pipeline's log in batches of 50; the last position acknowledged."""
    last = 0
    for log in logs:
        for start in range(0, len(log), 50):
            result = await client.publish(log[start : start + 50])
            last = result.positions[-1].global_position
    return last


@pytest.fixture
async def sqlite_server(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, AsyncEventClient]]:
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    server = await start_server(store)
    async with AsyncEventClient(f"127.0.0.1:{server.port}") as client:
        yield server, client
    await server.stop(0)
    await store.close()


async def test_every_demo_run_is_answered_as_the_log_folds_it(
    sqlite_server: tuple[RunningServer, AsyncEventClient], demo_logs: list[list[domain.Event]]
) -> None:
    server, client = sqlite_server
    last = await publish_all(client, demo_logs)
    expected = await folded_from_store(server.service.store)
    assert replayed_from(demo_logs).runs.keys() == expected.runs.keys()
    for processing_id, run in expected.runs.items():
        assert await client.run_state(processing_id, min_position=last) == run
    for pipeline_id, state in expected.pipelines.items():
        assert await client.pipeline_state(pipeline_id, min_position=last) == state
    outcomes = {run.status for run in expected.runs.values()}
    assert outcomes == {ProcessingStatus.COMPLETED, ProcessingStatus.FAILED,
                        ProcessingStatus.CANCELLED}  # fmt: skip
    deleted = [p for p in expected.pipelines.values() if p.deleted_at is not None]
    assert len(deleted) == 1  # the demo retires its last pipeline


async def test_runs_are_listed_newest_first_filtered_and_paged(
    sqlite_server: tuple[RunningServer, AsyncEventClient], demo_logs: list[list[domain.Event]]
) -> None:
    server, client = sqlite_server
    last = await publish_all(client, demo_logs)
    expected = await folded_from_store(server.service.store)
    newest_first = sorted(expected.runs.values(), key=lambda r: -r.first_position)
    everything = await client.runs(limit=None, min_position=last)
    assert everything == [RunSummary.of(run) for run in newest_first]
    assert await client.runs(limit=None, page_size=2) == everything  # 8 pages, same runs
    assert await client.runs(limit=4, page_size=3) == everything[:4]
    assert await client.runs(limit=0) == []
    pipeline = next(iter(expected.pipelines))
    assert await client.runs(pipeline_id=pipeline, limit=None) == [
        s for s in everything if s.pipeline_id == pipeline
    ]
    ended = await client.runs(statuses=["failed", ProcessingStatus.CANCELLED], limit=None)
    assert ended == [s for s in everything if s.status in {S.FAILED, S.CANCELLED}]
    assert ended and len(ended) < len(everything)
    assert await client.runs(pipeline_id=uuid.uuid4()) == []
    assert await client.runs(statuses=["running"]) == []


S = ProcessingStatus


async def test_bad_state_requests_are_invalid_arguments_naming_the_field(
    sqlite_server: tuple[RunningServer, AsyncEventClient],
) -> None:
    _, client = sqlite_server
    bad = {
        "page_token": service_pb2.ListProcessingRunsRequest(page_token="runs-before-x"),
        "statuses[0]": service_pb2.ListProcessingRunsRequest(statuses=[0]),
        "statuses": service_pb2.ListProcessingRunsRequest(statuses=[1, 1]),
        "page_size": service_pb2.ListProcessingRunsRequest(page_size=1001),
        "pipeline_id": service_pb2.ListProcessingRunsRequest(pipeline_id="nope"),
    }
    for field, request in bad.items():
        with pytest.raises(InvalidArgumentError) as raised:
            await client.list_processing_runs(request)
        assert {v.field for v in raised.value.field_violations} == {field}, field
    with pytest.raises(InvalidArgumentError):
        await client.get_processing_state("not-a-uuid")
    with pytest.raises(ValueError, match="not a run status"):
        await client.runs(statuses=["sleeping"])  # type: ignore[list-item]


async def test_read_your_writes_waits_for_the_position_or_says_how_far(
    sqlite_server: tuple[RunningServer, AsyncEventClient],
) -> None:
    server, client = sqlite_server
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    started = domain.ProcessingStarted.new(pipeline, run, "/in", "/out", 10, CONTEXT)
    result = await client.publish([domain.PipelineCreated.new(pipeline, "p", 1), started])
    head = result.positions[-1].global_position
    state = await client.run_state(run, min_position=head)
    assert state.status is ProcessingStatus.RUNNING and state.last_position == head
    # A position the log has not reached is not waited for: the answer says how far it got.
    response = await client.get_processing_state(run, min_position=head + 1000)
    assert response.position == head
    with pytest.raises(ProjectionBehindError) as raised:
        await client.run_state(run, min_position=head + 1000)
    assert (raised.value.position, raised.value.min_position) == (head, head + 1000)
    assert isinstance(raised.value, TimeoutError)
    with pytest.raises(NotFoundError) as missing:
        await client.run_state(uuid.uuid4(), min_position=head)
    assert missing.value.metadata == {"position": str(head)}
    assert server.service.read_models.position == head


async def test_the_rpcs_are_right_while_events_are_published(
    sqlite_server: tuple[RunningServer, AsyncEventClient],
) -> None:
    server, client = sqlite_server
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    await client.publish(
        [
            domain.PipelineCreated.new(pipeline, "busy", 1),
            domain.ProcessingStarted.new(pipeline, run, "/in", "/out", 1 << 30, CONTEXT),
            domain.StageStarted.new(pipeline, run, uuid.uuid4(), "compression", "compression"),
        ]
    )
    batches, per_batch = 40, 25

    async def chunks_of(producer: int) -> None:
        for batch in range(batches):
            events = [
                domain.ChunkProcessed.new(
                    pipeline, run, uuid.uuid4(), batch * per_batch + n, 100, "compression", 1
                )
                for n in range(per_batch)
            ]
            result = await client.publish(events)
            # Read-your-writes while three other producers keep publishing.
            state = await client.run_state(run, min_position=result.positions[-1].global_position)
            stage = state.stages["compression"]
            assert stage.chunks_processed >= (batch + 1) * per_batch
            assert stage.chunk_bytes == stage.chunks_processed * 100
            (summary,) = await client.runs(pipeline_id=pipeline)
            assert summary.chunks_processed >= stage.chunks_processed

    others = uuid.uuid4()  # a second pipeline's runs, started meanwhile
    second = asyncio.gather(
        *(
            client.publish(
                [domain.ProcessingStarted.new(others, uuid.uuid4(), "/a", "/b", 1, CONTEXT)]
            )
            for _ in range(30)
        )
    )
    await asyncio.gather(*(chunks_of(p) for p in range(4)), second)
    head = await server.service.store.head_position()
    final = await client.run_state(run, min_position=head)
    assert final.stages["compression"].chunks_processed == 4 * batches * per_batch
    assert len(await client.runs(pipeline_id=others, limit=None)) == 30
    live = server.service.read_models.states
    assert live == await folded_from_store(server.service.store)  # live == rebuilt


# --- restarts: snapshot + tail == the full fold ---------------------------------------------


async def restart(path: Path) -> tuple[SQLiteEventStore, RunningServer, AsyncEventClient]:
    store = await SQLiteEventStore.open(path)
    server = await start_server(store)
    return store, server, AsyncEventClient(f"127.0.0.1:{server.port}")


async def stop(store: EventStore, server: RunningServer, client: AsyncEventClient) -> None:
    await client.close()
    await server.stop(0)
    await store.close()


async def test_after_a_restart_snapshot_and_tail_answer_as_the_full_fold(
    tmp_path: Path, demo_logs: list[list[domain.Event]]
) -> None:
    path = tmp_path / "events.db"
    store, server, client = await restart(path)
    await publish_all(client, demo_logs[:2])
    await stop(store, server, client)  # saves the snapshot
    async with await SQLiteEventStore.open(path) as offline:  # more events while it is down
        saved = await offline.load_snapshot(SNAPSHOT_NAME)
        assert saved is not None and saved.position == await offline.head_position()
        await offline.append([adapter.to_envelope(e) for e in demo_logs[2]])
        expected = await folded_from_store(offline)
    store, server, client = await restart(path)
    try:
        assert server.service.read_models.snapshot_position == saved.position
        head = await store.head_position()
        for processing_id, run in expected.runs.items():
            assert await client.run_state(processing_id, min_position=head) == run
        for pipeline_id, state in expected.pipelines.items():
            assert await client.pipeline_state(pipeline_id) == state
        assert server.service.read_models.states == expected
    finally:
        await stop(store, server, client)


@pytest.mark.parametrize("damage", ["deleted", "other_fold_version", "garbage", "ahead_of_log"])
async def test_a_missing_stale_or_damaged_snapshot_is_rebuilt_from_the_log(
    tmp_path: Path, demo_logs: list[list[domain.Event]], damage: str
) -> None:
    path = tmp_path / "events.db"
    store, server, client = await restart(path)
    await publish_all(client, demo_logs)
    await stop(store, server, client)
    with sqlite3.connect(path) as connection:
        if damage == "deleted":
            connection.execute("DELETE FROM snapshots")
        elif damage == "other_fold_version":
            (data,) = connection.execute("SELECT data FROM snapshots").fetchone()
            document = orjson.loads(data)
            document["fold_version"] += 1
            connection.execute("UPDATE snapshots SET data = ?", (orjson.dumps(document),))
        elif damage == "garbage":
            connection.execute("UPDATE snapshots SET data = x'00ff'")
        else:
            connection.execute("UPDATE snapshots SET position = position + 1")
    store, server, client = await restart(path)
    try:
        expected = await folded_from_store(store)
        head = await store.head_position()
        for processing_id, run in expected.runs.items():
            assert await client.run_state(processing_id, min_position=head) == run
        assert server.service.read_models.snapshot_position == 0  # not used
        assert server.service.read_models.states == expected
    finally:
        await stop(store, server, client)
    async with await SQLiteEventStore.open(path) as reopened:  # replaced at close
        saved = await reopened.load_snapshot(SNAPSHOT_NAME)
        assert saved is not None and Replayed.from_bytes(saved.data) == expected


class HeldReads(SQLiteEventStore):
    """A real SQLite store whose log reads wait until `release` is set (a slow rebuild)."""

    release: asyncio.Event

    async def read_all(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await self.release.wait()
        return await super().read_all(*args, **kwargs)


async def test_while_rebuilding_queries_are_told_to_retry_never_not_found(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    async with await SQLiteEventStore.open(path) as store:
        await store.append(
            [
                adapter.to_envelope(
                    domain.ProcessingStarted.new(pipeline, run, "/i", "/o", 1, CONTEXT)
                )
            ]
        )
    store = await HeldReads.open(path)
    store.release = asyncio.Event()
    server = await start_server(store)
    target = f"127.0.0.1:{server.port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = service_pb2_grpc.EventServiceStub(channel)
            request = service_pb2.GetProcessingStateRequest(processing_id=str(run))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetProcessingState(request, timeout=0.5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "folded to position 0 of 1" in raised.value.details()
        retry = detail(rich_status(raised.value), error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds == 1
        async with AsyncEventClient(target, timeout=0.5) as client:
            with pytest.raises(ServiceUnavailableError):
                await client.run_state(run)  # retried, still rebuilding: UNAVAILABLE
            store.release.set()
        async with AsyncEventClient(target) as client:
            assert (await client.run_state(run)).status is ProcessingStatus.RUNNING
    finally:
        store.release.set()
        await server.stop(0)
        await store.close()


async def test_a_query_right_after_a_publish_sees_it_while_appends_gather(
    sqlite_server: tuple[RunningServer, AsyncEventClient],
) -> None:
    _, client = sqlite_server
    pipeline = uuid.uuid4()
    for _ in range(30):  # each publish wakes the read models, which gather for 5 ms
        run = uuid.uuid4()
        await client.publish([domain.ProcessingStarted.new(pipeline, run, "/i", "/o", 1, CONTEXT)])
        assert (await client.run_state(run)).status is ProcessingStatus.RUNNING  # no min_position


# --- the read models on their own ------------------------------------------------------------


async def test_snapshots_are_saved_as_the_log_grows_and_undecodable_events_skipped(
    tmp_path: Path,
) -> None:
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    models = ReadModels(store, snapshot_every=50, snapshot_cost_factor=0)
    await models.start()
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    try:
        broken = adapter.to_envelope(
            domain.ProcessingStarted.new(pipeline, run, "/i", "/o", 1, CONTEXT)
        )
        broken.ClearField("occurred_at")  # a store written by something that did not validate
        await store.append([broken])
        chunks = [
            adapter.to_envelope(
                domain.ChunkProcessed.new(pipeline, run, uuid.uuid4(), n, 1, "compression", 1)
            )
            for n in range(120)
        ]
        for start in range(0, 120, 10):
            await store.append(chunks[start : start + 10])
        assert await models.wait(121, timeout=30) == 121
        assert models.undecodable == 1
        state = models.run(run)
        assert state is not None and state.chunks_processed == 120
        for _ in range(500):  # saved after the fold that answered the wait
            saved = await store.load_snapshot(SNAPSHOT_NAME)
            if saved is not None and saved.position >= 100:
                break
            await asyncio.sleep(0.01)
        assert saved is not None and saved.position >= 100  # folded past 50 twice
        assert models.snapshot_position == saved.position
        restored = Replayed.from_bytes(saved.data)
        assert restored.runs[run].chunks_processed == saved.position - 1
    finally:
        await models.close()
        await store.close()


async def test_snapshots_are_spaced_by_what_encoding_them_costs(tmp_path: Path) -> None:
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    # A factor so large that after the first snapshot no second one is due during the test.
    models = ReadModels(store, snapshot_every=10, snapshot_cost_factor=1e9)
    await models.start()
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    try:
        await store.append(
            [
                adapter.to_envelope(
                    domain.ProcessingStarted.new(pipeline, run, "/i", "/o", 1, CONTEXT)
                )
            ]
        )
        for n in range(10):
            chunk = domain.ChunkProcessed.new(pipeline, run, uuid.uuid4(), n, 1, "compression", 1)
            await store.append([adapter.to_envelope(chunk)])
            await models.wait(n + 2, timeout=30)  # folded one page at a time
        first = models.snapshot_position
        assert first >= 10 and models.next_snapshot_at > time.monotonic()
        for n in range(10, 40):
            chunk = domain.ChunkProcessed.new(pipeline, run, uuid.uuid4(), n, 1, "compression", 1)
            await store.append([adapter.to_envelope(chunk)])
        assert await models.wait(41, timeout=30) == 41
        assert models.snapshot_position == first  # 30 more events, and no snapshot yet
    finally:
        await models.close()  # the close saves one whatever the spacing
    saved = await store.load_snapshot(SNAPSHOT_NAME)
    assert saved is not None and saved.position == 41
    await store.close()


# --- every answer fits a response ---------------------------------------------------------


async def test_a_state_bigger_than_a_response_is_trimmed_and_says_so(
    sqlite_server: tuple[RunningServer, AsyncEventClient],
) -> None:
    server, client = sqlite_server
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    long_text = "x" * 65_536  # the contract's longest free text
    failures = [
        domain.StageFailed.new(pipeline, run, uuid.uuid4(), f"stage {n}", long_text, "E")
        for n in range(60)
    ]
    started = domain.ProcessingStarted.new(pipeline, run, "/i", "/o", 1, CONTEXT)
    await client.publish([started])
    for start in range(0, 60, 20):
        result = await client.publish(failures[start : start + 20])
    head = result.positions[-1].global_position
    # A client of any language with gRPC's default 4 MiB limit reads it.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        response = await stub.GetProcessingState(
            service_pb2.GetProcessingStateRequest(processing_id=str(run), min_position=head)
        )
    state = response.state
    assert state.truncated and response.ByteSize() <= 3 * 1024 * 1024
    assert 40 < len(state.stages) < 60
    assert [s.stage_name for s in state.stages] == [f"stage {n}" for n in range(len(state.stages))]
    assert state.anomaly_count == 60  # each failure of a stage never started
    typed = await client.run_state(run)
    assert len(typed.stages) == len(state.stages) and typed.anomaly_count == 60


async def test_a_page_of_runs_is_bounded_by_bytes_and_the_next_page_goes_on(
    sqlite_server: tuple[RunningServer, AsyncEventClient],
) -> None:
    _, client = sqlite_server
    pipeline = uuid.uuid4()
    starts = [
        domain.ProcessingStarted.new(pipeline, uuid.uuid4(), "/" + "p" * 4000, "/o", 1, CONTEXT)
        for _ in range(800)
    ]
    for begin in range(0, 800, 200):
        result = await client.publish(starts[begin : begin + 200])
    head = result.positions[-1].global_position
    first = await client.list_processing_runs(
        service_pb2.ListProcessingRunsRequest(page_size=1000, min_position=head)
    )
    assert 0 < len(first.runs) < 800 and first.next_page_token
    assert first.ByteSize() <= 3 * 1024 * 1024
    everything = await client.runs(limit=None, page_size=1000)
    assert [s.processing_id for s in everything] == [e.processing_id for e in reversed(starts)]

"""Consumer groups through `pipeline-events serve` processes and real worker processes:
a member killed (SIGKILL) while it handles an event, and a server killed (SIGKILL) or
stopped (SIGTERM) in the middle of a group's stream, then restarted on the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline_events.client import AsyncEventClient, Delivery, GroupSettings
from tests.service.conftest import ServerProcess, start_server_process, stop_process
from tests.service.groups_contract import Worker, chunk_events, wait_until

ROOT = Path(__file__).resolve().parents[2]
#: Far longer than any wait of these tests: a redelivery seen is never the ack timeout's.
ACK_TIMEOUT = 120.0
WAIT = 60.0  # the longest the tests wait for anything (well under ACK_TIMEOUT)
LONG = GroupSettings(ack_timeout=ACK_TIMEOUT, backoff=(0.01,))


async def _positions(client: AsyncEventClient, events: list) -> dict[str, int]:
    """Publish `events` in batches of 200; each event id's global position."""
    positions: dict[str, int] = {}
    for start in range(0, len(events), 200):
        batch = events[start : start + 200]
        result = await client.publish(batch)
        for event, position in zip(batch, result.positions, strict=True):
            positions[str(event.event_id)] = position.global_position
    return positions


async def test_a_member_killed_mid_event_has_its_events_handled_by_another(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    assert WAIT < ACK_TIMEOUT
    async with AsyncEventClient(server_process.target) as client:
        await client.create_group("handover", settings=LONG)
        events = chunk_events(50)
        positions = await _positions(client, events)
        ids = [str(e.event_id) for e in events]
        stuck = ids[19]
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.service.group_worker", server_process.target,
             "handover", stuck, str(tmp_path)],
            cwd=ROOT,
        )  # fmt: skip
        try:
            marker = tmp_path / "stuck"
            await wait_until(
                lambda: marker.exists() or child.poll() is not None, "the stuck marker", WAIT
            )
            assert child.poll() is None, "the worker process exited"
            assert marker.read_text() == "1"
            # Every event before the stuck one is acknowledged (one handler at a time, in
            # order); the child holds the 31 others (max_in_flight 100 > 50).
            try:
                await wait_until(
                    lambda: _checkpoint_is(client, "handover", positions[stuck] - 1), "acks", WAIT
                )
            except AssertionError as timed_out:
                handled = (tmp_path / "handled").read_text().split()
                raise AssertionError(
                    f"{timed_out}: {await client.group('handover')}; the child handled"
                    f" {len(handled)}: {[ids.index(i) for i in handled]}; the server's log:\n"
                    + "".join(server_process.log[-40:])
                ) from None
            second = Worker(client, "handover")
            await wait_until(lambda: _members(client, "handover", 2), "the second member", WAIT)
            group = await client.group("handover")
            assert (group.in_flight, group.parked) == (31, 0)
            assert second.seen == []  # everything left is held by the stuck member
            child.kill()  # SIGKILL: its connection drops, it acknowledges nothing more
            assert child.wait(WAIT) == -signal.SIGKILL
            # Within WAIT, well before ACK_TIMEOUT: handed over because the member left.
            await wait_until(lambda: len(second.seen) >= 31, "the events handed over", WAIT)
            await wait_until(lambda: _members(client, "handover", 1), "the dead member gone", WAIT)
            stats = await second.stopped()
        finally:
            stop_process(child, signal.SIGKILL)
        handled_by_child = (tmp_path / "handled").read_text().split()
        assert handled_by_child == ids[:19]
        counts = {d.event.event_id: d.delivery_count for d in second.seen}
        assert Counter(second.ids) == Counter(ids[19:])  # each once, the stuck one included
        assert counts[stuck] == 2
        # All 31 had gone out to the killed member: each is a second delivery.
        assert set(counts.values()) == {2}
        assert not set(handled_by_child) & set(second.ids)  # acked exactly once overall
        assert stats.acked == 31 and stats.failed == 0
        # The checkpoint follows the acks in the group's dispatcher: soon, not at once.
        await wait_until(lambda: _at_head(client, "handover"), "the checkpoint at the head", WAIT)
        group = await client.group("handover")
        assert (group.checkpoint, group.in_flight, group.parked) == (group.head, 0, 0)
        assert group.head == positions[ids[-1]]


HALF = 1000
EVENTS = 2000


@pytest.mark.parametrize(
    ("signum", "same_worker"),
    [
        pytest.param(signal.SIGKILL, True, id="kill-9"),
        pytest.param(signal.SIGTERM, True, id="sigterm"),
        pytest.param(signal.SIGTERM, False, id="sigterm-new-worker"),
    ],
)
async def test_a_group_resumes_from_its_checkpoint_after_the_server_restarts(
    tmp_path: Path, signum: signal.Signals, same_worker: bool
) -> None:
    """2,000 events; at the 1,000th handled the server is killed (or stopped), then
    restarted on the same file and port. The worker that lived through it reconnects by
    itself (or, `same_worker` False, a new worker takes over after the restart)."""
    url = f"sqlite:///{tmp_path}/events.db"
    servers = [start_server_process(url)]
    port = servers[0].port
    target = servers[0].target
    try:
        async with AsyncEventClient(target) as setup:
            await setup.create_group("resume", settings=LONG)
            events = chunk_events(EVENTS)
            positions = await _positions(setup, events)
        expected = set(positions)
        handled: list[tuple[str, int]] = []  # (event id, position), every completed handling
        gate = asyncio.Event()  # cleared at halfway: handlers wait until the test says
        gate.set()
        halfway = asyncio.Event()

        async def handler(delivery: Delivery) -> None:
            if not gate.is_set():
                await gate.wait()
            handled.append((delivery.event.event_id, delivery.event.global_position))
            if len(handled) == HALF and not halfway.is_set():
                gate.clear()
                if signum == signal.SIGKILL:
                    servers[-1].process.kill()  # the ack of this one may never be stored
                halfway.set()

        async with contextlib.AsyncExitStack() as clients:
            client = await clients.enter_async_context(AsyncEventClient(target))
            stop = asyncio.Event()
            worker = asyncio.create_task(client.consume("resume", handler, stop=stop))
            await wait_until(lambda: halfway.is_set() or worker.done(), "halfway", WAIT)
            assert not worker.done(), worker
            last_before = handled[HALF - 1][1]
            if signum == signal.SIGTERM:
                # In order, one at a time: every ack of the first half reaches the server.
                await wait_until(
                    lambda: _checkpoint_is(client, "resume", last_before), "the acks", WAIT
                )
                servers[-1].process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(servers[-1].process.wait, WAIT)
            assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
            servers.append(await asyncio.to_thread(start_server_process, url, port))
            fresh = await clients.enter_async_context(AsyncEventClient(target))
            resumed = (await fresh.group("resume")).checkpoint  # nothing acked since
            if not same_worker:
                stop.set()
                gate.set()
                await asyncio.wait_for(worker, WAIT)  # it stops, without an error
                stop = asyncio.Event()
                worker = asyncio.create_task(fresh.consume("resume", handler, stop=stop))
            gate.set()
            await wait_until(
                lambda: worker.done() or expected <= {i for i, _ in handled},
                "every event handled", WAIT * 2,
            )  # fmt: skip
            if worker.done():
                worker.result()  # the worker's own failure, raised
            await wait_until(lambda: _at_head(fresh, "resume"), "checkpoint at head", WAIT)
            group = await fresh.group("resume")
            stop.set()
            stats = await asyncio.wait_for(worker, WAIT)
    finally:
        for server in servers:
            stop_process(server.process, signal.SIGKILL)
    if same_worker:
        assert stats.reconnects >= 1 and len(stats.member_ids) >= 2
    # Nothing skipped: every event handled, and the group is done at the log's head.
    assert {i for i, _ in handled} == expected
    assert (group.checkpoint, group.head, group.in_flight, group.parked) == (
        max(positions.values()), max(positions.values()), 0, 0,
    )  # fmt: skip
    # The checkpoint it resumed from was stored before the stop, and is never past an
    # event that had not been acknowledged.
    assert 0 <= resumed <= last_before
    times = Counter(i for i, _ in handled)
    # At least once: an event handled twice is one after the stored checkpoint.
    assert all(p > resumed for i, p in handled if times[i] > 1), "handled twice, <= checkpoint"
    assert all(times[i] == 1 for i, p in positions.items() if p <= resumed)
    assert max(times.values()) <= 2
    if signum == signal.SIGTERM:
        # A graceful stop stores the checkpoint of every ack received: nothing acked
        # before the stop began is handled again.
        assert resumed == last_before
        assert all(times[i] == 1 for i, _ in handled[:HALF])


async def _checkpoint_is(client: AsyncEventClient, name: str, position: int) -> bool:
    return (await client.group(name)).checkpoint == position


async def _members(client: AsyncEventClient, name: str, count: int) -> bool:
    return (await client.group(name)).members == count


async def _at_head(client: AsyncEventClient, name: str) -> bool:
    group = await client.group(name)
    return group.checkpoint == group.head and group.in_flight == 0

"""The sync client's workers (`EventClient.consume`) against a `pipeline-events serve`
process: handlers on a thread pool, a stop event, acks exactly once, failures retried."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pipeline_events.client import Delivery, EventClient, GroupSettings, WorkerStats
from tests.service.conftest import ServerProcess
from tests.service.groups_contract import chunk_events

FAST = GroupSettings(max_deliveries=3, backoff=(0.01,), ack_timeout=60.0)
WAIT = 60.0


def wait_for(condition: Callable[[], Any], what: str, seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class SyncWorker:
    """`EventClient.consume` on a thread of its own, recording every delivery."""

    def __init__(self, client: EventClient, group: str, handler: Any = None, **options: Any):
        self.seen: list[Delivery] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stats: WorkerStats | None = None
        self.error: BaseException | None = None
        self.threads: set[str] = set()

        def handle(delivery: Delivery) -> None:
            with self.lock:
                self.seen.append(delivery)
                self.threads.add(threading.current_thread().name)
            if handler is not None:
                handler(delivery)

        def run() -> None:
            try:
                self.stats = client.consume(group, handle, stop=self.stop, **options)
            except BaseException as error:  # reported by stopped()
                self.error = error

        self.thread = threading.Thread(target=run, name=f"worker-{group}", daemon=True)
        self.thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def stopped(self) -> WorkerStats:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "consume() did not return after stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


def at_head(client: EventClient, name: str) -> bool:
    group = client.group(name)
    return group.checkpoint == group.head and group.in_flight == 0


def test_four_handler_threads_handle_300_events_exactly_once(
    server_process: ServerProcess,
) -> None:
    with EventClient(server_process.target) as client:
        client.create_group("sync", settings=FAST)
        events = chunk_events(300)
        gate = threading.Barrier(4, timeout=WAIT)  # four handlers at once, at least once

        def handler(delivery: Delivery) -> None:
            if not gate.broken and delivery.event.event_id in first_four:
                gate.wait()
            time.sleep(0.001)

        ids = [str(e.event_id) for e in events]
        first_four = set(ids[:4])
        worker = SyncWorker(client, "sync", handler, concurrency=4)
        for start in range(0, len(events), 100):
            client.publish(events[start : start + 100])
        wait_for(lambda: worker.count() >= 300, "300 deliveries")
        stats = worker.stopped()
        handled = Counter(d.event.event_id for d in worker.seen)
        assert handled == Counter(ids)  # every event, each once
        assert all(d.delivery_count == 1 for d in worker.seen)
        assert (stats.acked, stats.failed, stats.parked, stats.skipped) == (300, 0, 0, 0)
        assert len(stats.member_ids) == 1 and stats.reconnects == 0
        assert len(worker.threads) == 4  # the first four ran together, on four threads
        wait_for(lambda: at_head(client, "sync"), "the checkpoint at the head")
        group = client.group("sync")
        assert (group.parked, group.waiting_retry, group.members) == (0, 0, 0)


def test_a_raising_sync_handler_is_retried(server_process: ServerProcess) -> None:
    with EventClient(server_process.target) as client:
        client.create_group("retry", settings=FAST)
        events = chunk_events(10)
        flaky = str(events[3].event_id)

        def handler(delivery: Delivery) -> None:
            if delivery.event.event_id == flaky and delivery.delivery_count == 1:
                raise RuntimeError("first attempt fails")

        worker = SyncWorker(client, "retry", handler, concurrency=2)
        client.publish(events)
        wait_for(lambda: worker.count() >= 11, "eleven deliveries")
        stats = worker.stopped()
        counts = [d.delivery_count for d in worker.seen if d.event.event_id == flaky]
        assert counts == [1, 2]
        others = Counter(d.event.event_id for d in worker.seen if d.event.event_id != flaky)
        assert others == Counter(str(e.event_id) for e in events if str(e.event_id) != flaky)
        assert (stats.acked, stats.failed) == (10, 1)
        wait_for(lambda: at_head(client, "retry"), "the checkpoint at the head")
        assert client.group("retry").parked == 0
        assert client.parked("retry") == []

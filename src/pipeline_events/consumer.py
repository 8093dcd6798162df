"""Consumer groups from the client's side: typed results, and the workers behind
`consume` (async and sync) that ack on success, nack on failure, and stop cleanly.

A handler takes one `Delivery` (the event, and how many times it has been delivered).
Returning acknowledges it; raising fails it: the server delivers it again after the
group's backoff, and parks it after the group's max deliveries. Raise `ParkEvent` to park
it at once (it cannot succeed), `SkipEvent` to drop it. Acks are sent in batches (the
ids done in one loop turn), nacks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from adaptive_pipeline.events.v1 import consumer_group_pb2 as pb

from pipeline_events.errors import PipelineEventsError
from pipeline_events.timestamps import NanoDatetime

#: Every RPC of the contract's ConsumerGroupService -> the method of both clients.
GROUP_RPC_METHODS: dict[str, str] = {
    "CreateConsumerGroup": "create_group",
    "UpdateConsumerGroup": "update_group",
    "DeleteConsumerGroup": "delete_group",
    "ListConsumerGroups": "groups",
    "GetConsumerGroup": "group",
    "Consume": "consume",
    "ListParkedEvents": "parked",
    "ReplayParkedEvents": "replay_parked",
    "DiscardParkedEvents": "discard_parked",
}
MAX_IDS = 10_000  # the contract's bound on ids per Ack, Nack, replay and discard
_NACK = {"retry": pb.NACK_ACTION_RETRY, "park": pb.NACK_ACTION_PARK, "skip": pb.NACK_ACTION_SKIP}


class ParkEvent(PipelineEventsError):
    """Raised by a handler: park this event now (retrying cannot help); the text is the reason."""


class SkipEvent(PipelineEventsError):
    """Raised by a handler: drop this event (done for the group, as if acknowledged)."""


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """How a group delivers (0 or empty: the server's default).

    Attributes:
        max_deliveries: deliveries of one event before it is parked (default 5).
        backoff: seconds to wait before each redelivery; the last repeats (default 1, 5, 30).
        ack_timeout: seconds a member may hold an event unacknowledged (default 30).
        max_in_flight: events one member holds unacknowledged at most (default 100).
    """

    max_deliveries: int = 0
    backoff: Sequence[float] = ()
    ack_timeout: float = 0.0
    max_in_flight: int = 0

    def to_proto(self, event_filter: Any = None) -> pb.ConsumerGroupSettings:
        return pb.ConsumerGroupSettings(
            filter=event_filter,
            max_deliveries=self.max_deliveries,
            backoff_ms=[round(seconds * 1000) for seconds in self.backoff],
            ack_timeout_ms=round(self.ack_timeout * 1000),
            max_in_flight=self.max_in_flight,
        )

    @classmethod
    def from_proto(cls, message: pb.ConsumerGroupSettings) -> GroupSettings:
        return cls(
            max_deliveries=message.max_deliveries,
            backoff=tuple(ms / 1000 for ms in message.backoff_ms),
            ack_timeout=message.ack_timeout_ms / 1000,
            max_in_flight=message.max_in_flight,
        )


def _time(stamp: Any) -> NanoDatetime:
    return NanoDatetime.from_seconds_nanos(stamp.seconds, stamp.nanos)


@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    """A group and its progress, as the server answered.

    Attributes:
        name: the group's name.
        settings: its settings, defaults filled in.
        event_types, categories, pipeline_ids, processing_ids: its filter (empty: all).
        start_after: the global position it started after.
        checkpoint: every event at or before it is done; a restart resumes after it.
        head: the log's last position when answered (`lag` = head - checkpoint).
        in_flight: events delivered and not yet acknowledged.
        waiting_retry: failed events waiting for their backoff.
        parked: events parked.
        members: members connected.
        created_at: when it was created.
    """

    name: str
    settings: GroupSettings
    event_types: tuple[int, ...]
    categories: tuple[int, ...]
    pipeline_ids: tuple[str, ...]
    processing_ids: tuple[str, ...]
    start_after: int
    checkpoint: int
    head: int
    in_flight: int
    waiting_retry: int
    parked: int
    members: int
    created_at: NanoDatetime

    @property
    def lag(self) -> int:
        """Positions between the checkpoint and the head (an upper bound on events to do)."""
        return max(self.head - self.checkpoint, 0)

    @classmethod
    def from_proto(cls, message: pb.ConsumerGroup) -> ConsumerGroup:
        f = message.settings.filter
        return cls(
            name=message.name,
            settings=GroupSettings.from_proto(message.settings),
            event_types=tuple(f.event_types),
            categories=tuple(f.categories),
            pipeline_ids=tuple(f.aggregate_ids),
            processing_ids=tuple(f.processing_ids),
            start_after=message.start_after,
            checkpoint=message.checkpoint,
            head=message.head,
            in_flight=message.in_flight,
            waiting_retry=message.waiting_retry,
            parked=message.parked,
            members=message.members,
            created_at=_time(message.created_at),
        )


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One delivery of a parked event: when, to whom, and how it ended."""

    delivered_at: NanoDatetime
    member: str
    outcome: str


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a group gave up on (`event` is a client RecordedEvent)."""

    event: Any
    reason: str
    parked_at: NanoDatetime
    deliveries: int
    attempts: tuple[DeliveryAttempt, ...]

    @classmethod
    def from_proto(cls, message: pb.ParkedEvent, wrap: Callable[[Any], Any]) -> ParkedEvent:
        return cls(
            event=wrap(message.event),
            reason=message.reason,
            parked_at=_time(message.parked_at),
            deliveries=message.deliveries,
            attempts=tuple(
                DeliveryAttempt(_time(a.delivered_at), a.member, a.outcome)
                for a in message.attempts
            ),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a handler is given: the event (a client RecordedEvent) and its delivery count."""

    event: Any
    delivery_count: int


@dataclass
class WorkerStats:
    """What a worker did until it stopped."""

    acked: int = 0
    failed: int = 0  # nacked to be retried
    parked: int = 0  # nacked to be parked (ParkEvent)
    skipped: int = 0
    reconnects: int = 0
    member_ids: list[str] = field(default_factory=list)


def chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), MAX_IDS):
        yield list(ids[start : start + MAX_IDS])


def _outcome(error: BaseException | None) -> tuple[int | None, str]:
    """The nack action (None: ack) and reason for a handler's outcome."""
    if error is None:
        return None, ""
    if isinstance(error, SkipEvent):
        return pb.NACK_ACTION_SKIP, str(error)
    if isinstance(error, ParkEvent):
        return pb.NACK_ACTION_PARK, str(error) or "parked by the handler"
    return pb.NACK_ACTION_RETRY, f"{type(error).__name__}: {error}"[:4096]


def _count(stats: WorkerStats, action: int | None) -> None:
    if action is None:
        stats.acked += 1
    elif action == pb.NACK_ACTION_RETRY:
        stats.failed += 1
    elif action == pb.NACK_ACTION_PARK:
        stats.parked += 1
    else:
        stats.skipped += 1


def _start(group: str, max_in_flight: int, member_name: str) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(
        start=pb.ConsumeStart(group=group, max_in_flight=max_in_flight, member_name=member_name)
    )


class _Answers:
    """Acks gathered and sent as one Ack (nacks go at once).

    The server refills a member once a quarter of its window is free, so acks are sent
    when a quarter of the window is done, or when the caller flushes (idle, stopping).
    """

    def __init__(self, send: Callable[[pb.ConsumeRequest | None], None]):
        self.send = send
        self.acks: list[str] = []
        self.batch = 1  # acks per Ack message: a quarter of the window, once it is known

    def joined(self, max_in_flight: int) -> None:
        self.batch = max(1, max_in_flight // 4)

    def done(self, event_id: str, action: int | None, reason: str) -> bool:
        """Note a handler's outcome; True when the acks gathered should go now."""
        if action is None:
            self.acks.append(event_id)
            return len(self.acks) >= self.batch
        self.send(
            pb.ConsumeRequest(nack=pb.Nack(event_ids=[event_id], action=action, reason=reason))
        )
        return False

    def flush(self) -> None:
        acks, self.acks = self.acks, []
        for ids in chunks(acks):
            self.send(pb.ConsumeRequest(ack=pb.Ack(event_ids=ids)))


_LEAVE = pb.ConsumeRequest(leave=pb.Leave())
ACK_DELAY = 0.002  # seconds an ack waits, at most, for others to share its message


class _AsyncStream:
    """One Consume stream of an async worker: `concurrency` handler tasks fed by a reader."""

    def __init__(
        self, open_call: Callable[[AsyncIterator[Any]], Any], start: Any, concurrency: int
    ):
        self.requests: asyncio.Queue[pb.ConsumeRequest | None] = asyncio.Queue()
        self.answers = _Answers(self.requests.put_nowait)
        self.start = start
        self.concurrency = concurrency
        self.call = open_call(self._outgoing())
        self.work: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self.joined = False  # the server answered `start`
        self.stopping = False
        self.busy = 0  # handlers running
        self._timer: asyncio.TimerHandle | None = None

    async def _outgoing(self) -> AsyncIterator[pb.ConsumeRequest]:
        yield self.start
        while (request := await self.requests.get()) is not None:
            yield request

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.answers.flush()

    async def _worker(self, handler: Any, stats: WorkerStats) -> None:
        while (delivery := await self.work.get()) is not None:
            self.busy += 1
            try:
                await handler(delivery)
            except Exception as error:  # the handler's failure is the nack
                action, reason = _outcome(error)
            else:
                action, reason = None, ""
            self.busy -= 1
            _count(stats, action)
            if self.answers.done(delivery.event.event_id, action, reason) or (
                not self.busy and self.work.empty()  # idle: nobody to share the message with
            ):
                self._flush()
            elif self._timer is None and self.answers.acks:
                self._timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._flush)

    async def _read(self, wrap: Any, stats: WorkerStats) -> None:
        """Deliveries into the work queue until the stream ends (raises its AioRpcError)."""
        while (response := await self.call.read()) is not grpc.aio.EOF:
            if response.WhichOneof("content") == "started":
                stats.member_ids.append(response.started.member_id)
                self.answers.joined(response.started.max_in_flight)
                self.joined = True
            elif not self.stopping:  # after a stop, what comes is handed back unhandled
                for item in response.deliveries.deliveries:
                    self.work.put_nowait(Delivery(wrap(item.event), item.delivery_count))

    async def run(self, handler: Any, stop: asyncio.Event, wrap: Any, stats: WorkerStats) -> None:
        """Until `stop` or the stream's end; raises the stream's AioRpcError.

        On stop the read goes on (cancelling a read would cancel the call, and the last
        acks with it): deliveries not started are dropped, the running handlers finish,
        their acks go, and the half-close lets the server end the stream. What the member
        still holds then goes back to the group uncounted.
        """
        workers = [
            asyncio.create_task(self._worker(handler, stats)) for _ in range(self.concurrency)
        ]
        reader = asyncio.create_task(self._read(wrap, stats))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            self.stopping = True
            while not self.work.empty():
                self.work.get_nowait()
            for _ in workers:
                self.work.put_nowait(None)
            await asyncio.gather(*workers, return_exceptions=True)
            self._flush()
            self.requests.put_nowait(_LEAVE)  # what is left goes back uncounted
            self.requests.put_nowait(None)  # half-close: the server ends the stream
            with contextlib.suppress(asyncio.CancelledError):
                await reader  # raises the stream's error, if it failed
        finally:
            stopping.cancel()
            for task in (*workers, reader):
                task.cancel()


async def run_async_worker(
    open_call: Callable[[AsyncIterator[pb.ConsumeRequest]], Any],
    start: pb.ConsumeRequest,
    handler: Callable[[Delivery], Awaitable[Any]],
    *,
    concurrency: int,
    stop: asyncio.Event,
    wrap: Callable[[Any], Any],
    reconnect_wait: Callable[[grpc.RpcError, int, bool], float | None],
    stats: WorkerStats,
) -> WorkerStats:
    """Consume until `stop` is set: handlers finish, their acks go out, the stream closes.

    `reconnect_wait(error, failures, joined_before)` says how long to wait before joining
    again after a failed stream (None: raise it). What was delivered and not acknowledged when a stream broke is
    delivered again by the server, to this member or another.
    """
    failures = 0
    while not stop.is_set():
        stream = _AsyncStream(open_call, start, concurrency)
        try:
            await stream.run(handler, stop, wrap, stats)
        except grpc.aio.AioRpcError as error:
            failures = 1 if stream.joined else failures + 1
            wait = reconnect_wait(error, failures, bool(stats.member_ids))
            if wait is None:
                raise
            stats.reconnects += 1
            await asyncio.sleep(wait)
            continue
        if not stop.is_set():  # the server ended the stream without an error: join again
            stats.reconnects += 1
            await asyncio.sleep(0.1)
    return stats


class _SyncStream:
    """One Consume stream of a sync worker: a reader thread, handlers on the pool."""

    def __init__(self, open_call: Callable[[Iterator[Any]], Any], start: Any, concurrency: int):
        self.requests: queue.SimpleQueue[pb.ConsumeRequest | None] = queue.SimpleQueue()
        self.answers = _Answers(self.requests.put)
        self.start = start
        self.concurrency = concurrency
        self.slots = threading.Semaphore(concurrency)
        self.lock = threading.Lock()
        self.received: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.call = open_call(self._outgoing())
        self.reader = threading.Thread(target=self._read, name="consumer-reader", daemon=True)
        self.reader.start()

    def _outgoing(self) -> Iterator[pb.ConsumeRequest]:
        yield self.start
        while (request := self.requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self.call:
                self.received.put(response)
            self.received.put(None)
        except grpc.RpcError as error:
            self.received.put(error)

    def _handle(self, handler: Any, delivery: Delivery, stats: WorkerStats) -> None:
        try:
            handler(delivery)
        except Exception as error:  # the handler's failure is the nack
            action, reason = _outcome(error)
        else:
            action, reason = None, ""
        with self.lock:
            _count(stats, action)
            if self.answers.done(delivery.event.event_id, action, reason):
                self.answers.flush()
        self.slots.release()

    def _flush(self) -> None:
        with self.lock:
            self.answers.flush()

    def run(
        self, pool: ThreadPoolExecutor, handler: Any, stop: threading.Event, wrap: Any,
        stats: WorkerStats,
    ) -> grpc.RpcError | None:  # fmt: skip
        """Until `stop` or the stream's end; the stream's error, if it failed."""
        broken: grpc.RpcError | None = None
        try:
            while not stop.is_set() and broken is None:
                try:
                    response = self.received.get(timeout=ACK_DELAY)
                except queue.Empty:
                    self._flush()  # nothing new for a moment: the acks gathered go now
                    continue
                if response is None:
                    break
                if isinstance(response, grpc.RpcError):
                    broken = response
                elif response.WhichOneof("content") == "started":
                    stats.member_ids.append(response.started.member_id)
                    self.answers.joined(response.started.max_in_flight)
                else:
                    for item in response.deliveries.deliveries:
                        while not self.slots.acquire(timeout=ACK_DELAY):
                            self._flush()  # every handler busy: what they acked goes now
                            if stop.is_set():
                                return None
                        delivery = Delivery(wrap(item.event), item.delivery_count)
                        pool.submit(self._handle, handler, delivery, stats)
        finally:
            # Every handler holds a slot until it has answered: take them all back.
            for _ in range(self.concurrency):
                self.slots.acquire()
            for _ in range(self.concurrency):
                self.slots.release()
            self._flush()
            self.requests.put(_LEAVE)  # what is left goes back uncounted
            self.requests.put(None)  # half-close: the server ends the stream
            self.reader.join(timeout=5.0)
            if self.reader.is_alive():
                self.call.cancel()
                self.reader.join()
        return broken


def run_sync_worker(
    open_call: Callable[[Iterator[pb.ConsumeRequest]], Any],
    start: pb.ConsumeRequest,
    handler: Callable[[Delivery], Any],
    *,
    concurrency: int,
    stop: threading.Event,
    wrap: Callable[[Any], Any],
    reconnect_wait: Callable[[grpc.RpcError, int, bool], float | None],
    stats: WorkerStats,
) -> WorkerStats:
    """`run_async_worker` for the sync client: handlers run on `concurrency` threads."""
    failures = 0
    with ThreadPoolExecutor(concurrency, thread_name_prefix="consumer") as pool:
        while not stop.is_set():
            joined = len(stats.member_ids)
            broken = _SyncStream(open_call, start, concurrency).run(
                pool, handler, stop, wrap, stats
            )
            if broken is None:
                if not stop.is_set():  # the server ended it without an error: join again
                    stop.wait(0.1)
                continue
            failures = 1 if len(stats.member_ids) > joined else failures + 1
            wait = reconnect_wait(broken, failures, bool(stats.member_ids))
            if wait is None:
                raise broken
            stats.reconnects += 1
            stop.wait(wait)
    return stats


def nack_action(name: str) -> int:
    return _NACK[name]


def ids_of(event_ids: Iterable[str]) -> list[str]:
    return [str(event_id) for event_id in event_ids]

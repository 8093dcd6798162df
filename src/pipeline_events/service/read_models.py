"""The read models the state RPCs answer from, kept current by following the store.

One task folds the log in order (`projections.apply`, the same fold a `replay`
of the history runs), page by page from the last position folded, then waits
for appends. The states live in memory; a snapshot of all of them (state and
position, `projections.Replayed.to_bytes`) is saved in the store every
`snapshot_every` events and on close, so a restart folds only the events after
it. Encoding every state grows with their number, so snapshots are also spaced
by SNAPSHOT_COST_FACTOR times the last one's encoding time: they never take more
than a twentieth of the time (under ingest into a store of 212,000 events,
encoding a snapshot every 10,000 events had taken 42% of the server's samples). A snapshot of another fold version, or damaged, is dropped and the states
rebuilt from the log, as is one ahead of the log (a store restored from an
older backup).

Appends are folded in batches: after the log moves, the task waits up to
COALESCE_SECONDS for more appends before it reads, unless a query is waiting
for a position it has not folded (read-your-writes), which wakes it at once.
One-event publishes at thousands per second then cost one read and fold per
batch, not one per publish.

Until the first catch-up (the log's head when the service started) is folded,
queries wait for it briefly and are then told to retry: a restart never
answers NOT_FOUND for a run that is in the log.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Sequence

from pipeline_events import adapter
from pipeline_events.errors import DecodeError
from pipeline_events.projections import (
    Folded,
    PipelineState,
    ProcessingRunState,
    ProcessingStatus,
    Replayed,
    SnapshotError,
    apply,
)
from pipeline_events.store import EventStore, StoreClosedError, StoreError
from pipeline_events.store.base import HeadSignal

_log = logging.getLogger(__name__)

SNAPSHOT_NAME = "projections"  # the store's snapshot of every read model
DEFAULT_SNAPSHOT_EVERY = 10_000  # events folded between snapshots
READ_PAGE = 1000  # events per read of the log
SNAPSHOT_COST_FACTOR = 20  # seconds between snapshots, at least, per second of encoding
COALESCE_SECONDS = 0.005  # appends gathered before a fold, unless a query waits
FOLD_AT_CLOSE = 10_000  # events folded at close before the last snapshot, at most
RETRY_SECONDS = 1.0  # after a store error, before reading again


class ReadModels:
    """Every pipeline's and run's state, folded from the store and kept current."""

    def __init__(
        self,
        store: EventStore,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        snapshot_cost_factor: float = SNAPSHOT_COST_FACTOR,
    ):
        self.store = store
        self.snapshot_every = snapshot_every
        self.snapshot_cost_factor = snapshot_cost_factor
        self.states = Replayed()
        self.position = 0  # the log is folded up to here (events, or positions scanned)
        self.caught_up_to = 0  # the head when the service started (ready once folded)
        self.undecodable = 0  # stored events the fold could not decode (logged, skipped)
        self.snapshot_position = 0  # position of the snapshot saved (or loaded) last
        self.next_snapshot_at = 0.0  # time.monotonic() before which no snapshot is saved
        # Run ids in the order first seen, beside their first positions (ascending):
        # ListProcessingRuns pages from the newest backwards, by position.
        self._order: list[uuid.UUID] = []
        self._first_positions: list[int] = []
        self._by_pipeline: dict[uuid.UUID, tuple[list[uuid.UUID], list[int]]] = {}
        self._signal = HeadSignal()
        self._wanted = asyncio.Event()  # a query waits for a position not yet folded
        self._waiting = 0  # queries waiting so
        self._gathering = False  # appends are in the log, gathering before a fold
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the snapshot (if usable) and begin following the store."""
        self.caught_up_to = await self.store.head_position()
        await self._load_snapshot()
        if self.position >= self.caught_up_to:
            self._ready.set()
        self._task = asyncio.create_task(self._follow(), name="read-models")

    async def close(self) -> None:
        """Stop following; save a snapshot if anything was folded since the last one."""
        if self._task is not None:
            # Cancelled until done: Python 3.11's wait_for can swallow a cancellation that
            # lands as the awaited call completes, and the task would go on waiting.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)
            self._task = None
        await self._fold_the_rest()
        if self.position > self.snapshot_position:
            try:
                await self._save_snapshot()
            except StoreError as error:  # the store closed first: the next start folds more
                _log.warning("read models: no snapshot saved at close: %s", error)
        self._signal.close()

    async def _fold_the_rest(self) -> None:
        """Fold what was appended since the last fold (appends gathering, see above), so the
        snapshot at close is at the head; not a long rebuild cut short by a stop."""
        try:
            while True:
                page = await self.store.read_all(after_position=self.position, limit=READ_PAGE)
                if not page.events and page.scanned_to <= self.position:
                    return
                if page.head - self.position > FOLD_AT_CLOSE:
                    return
                self._fold(page.events)
                self._advance(page.scanned_to)
        except StoreError:  # the store closed first: the next start folds the rest
            return

    async def _load_snapshot(self) -> None:
        try:
            saved = await self.store.load_snapshot(SNAPSHOT_NAME)
        except StoreError as error:  # derived data: the log still rebuilds the states
            _log.warning("read models: no snapshot loaded (%s): rebuilding from the log", error)
            return
        if saved is None:
            return
        if saved.position > self.caught_up_to:
            _log.warning(
                "read models: the snapshot is at position %d, beyond the log's head %d"
                " (an older store?): rebuilding from the log",
                saved.position,
                self.caught_up_to,
            )
            return
        try:
            states = await asyncio.to_thread(Replayed.from_bytes, saved.data)
        except SnapshotError as error:
            _log.info("read models: snapshot not used (%s): rebuilding from the log", error)
            return
        self.states = states
        for run in states.runs.values():
            self._index(run)
        self._advance(saved.position)
        self.snapshot_position = saved.position

    async def _save_snapshot(self) -> None:
        # Encoded while the fold waits (this task or close), so the states hold still.
        position = self.position
        started = time.monotonic()
        data = await asyncio.to_thread(self.states.to_bytes)
        took = time.monotonic() - started
        await self.store.save_snapshot(SNAPSHOT_NAME, position, data)
        self.snapshot_position = position
        self.next_snapshot_at = time.monotonic() + self.snapshot_cost_factor * took

    async def _follow(self) -> None:
        while True:
            try:
                page = await self.store.read_all(after_position=self.position, limit=READ_PAGE)
                self._fold(page.events)
                self._advance(page.scanned_to)
                if self.position >= self.caught_up_to:
                    self._ready.set()
                if (
                    self.position - self.snapshot_position >= self.snapshot_every
                    and time.monotonic() >= self.next_snapshot_at
                ):
                    await self._save_snapshot()
                if self.position >= page.head:
                    await self.store.wait_for_append(self.position)
                    await self._gather_appends()
                else:
                    # Small reads run on the loop's thread and never suspend: without this
                    # a rebuild would hold the loop (every RPC) until it caught up.
                    await asyncio.sleep(0)
            except StoreClosedError:
                return
            except StoreError as error:
                _log.warning("read models: reading the store failed, retrying: %s", error)
                await asyncio.sleep(RETRY_SECONDS)

    async def _gather_appends(self) -> None:
        """Let a burst of appends gather before reading them, unless a query waits."""
        if self._wanted.is_set():
            return
        self._gathering = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), COALESCE_SECONDS)
        finally:
            self._gathering = False

    def _fold(self, events: Iterable[object]) -> None:
        states, runs = self.states, self.states.runs
        for message in events:
            try:
                # Not Folded.from_proto: the folds never read recorded_at, and decoding
                # that timestamp cost a quarter to a third of a cold rebuild (bench/state_queries.py).
                recorded = Folded(
                    adapter.from_envelope(message.envelope),  # type: ignore[attr-defined]
                    message.global_position,  # type: ignore[attr-defined]
                    message.revision,  # type: ignore[attr-defined]
                )
            except DecodeError as error:
                # The service validates what it stores; this is a store written otherwise.
                self.undecodable += 1
                if self.undecodable == 1 or self.undecodable % 10_000 == 0:
                    _log.warning(
                        "read models: %d stored events cannot be decoded and are not folded;"
                        " the latest: %s",
                        self.undecodable,
                        error,
                    )
                continue
            processing_id = getattr(recorded.event, "processing_id", None)
            if processing_id is None or processing_id in runs:
                apply(states, recorded)
            else:
                apply(states, recorded)
                self._index(runs[processing_id])

    def _index(self, run: ProcessingRunState) -> None:
        self._order.append(run.processing_id)
        self._first_positions.append(run.first_position)
        ids, positions = self._by_pipeline.setdefault(run.pipeline_id, ([], []))
        ids.append(run.processing_id)
        positions.append(run.first_position)

    def _advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            self._signal.advance(position)

    # --- queries ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the log as it was at start is folded (before: answers could be stale)."""
        return self._ready.is_set()

    async def wait(self, min_position: int, timeout: float) -> int:
        """Wait until ready and folded up to `min_position` (or the timeout); the position."""
        deadline = time.monotonic() + timeout
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return self.position
        if self.position < min_position:
            remaining = max(0.0, deadline - time.monotonic())
            self._waiting += 1
            self._wanted.set()  # fold now: do not gather more appends first
            try:
                await self._signal.wait(min_position - 1, remaining)
            finally:
                self._waiting -= 1
                if not self._waiting:
                    self._wanted.clear()
        return self.position

    async def settle(self, timeout: float) -> int:
        """Fold the appends gathering now, if any (a query then sees what folding each
        append at once would have shown); the position."""
        if self._gathering:
            await self.wait(self.position + 1, timeout)
        return self.position

    def pipeline(self, pipeline_id: uuid.UUID) -> PipelineState | None:
        """A pipeline's state (None: not in the log as folded)."""
        return self.states.pipelines.get(pipeline_id)

    def run(self, processing_id: uuid.UUID) -> ProcessingRunState | None:
        """A run's state (None: not in the log as folded)."""
        return self.states.runs.get(processing_id)

    def runs_page(
        self,
        *,
        pipeline_id: uuid.UUID | None,
        statuses: Sequence[ProcessingStatus],
        page_size: int,
        before_position: int | None,
    ) -> tuple[list[ProcessingRunState], int | None]:
        """Runs newest first whose first event is before `before_position` (None: all).

        Returns the page and the first position to continue before (None: no more).
        A status filter scans past the runs it skips (O(runs skipped)).
        """
        if pipeline_id is None:
            ids, positions = self._order, self._first_positions
        else:
            ids, positions = self._by_pipeline.get(pipeline_id, ([], []))
        end = (
            len(ids) if before_position is None else bisect.bisect_left(positions, before_position)
        )
        wanted = set(statuses)
        runs = self.states.runs
        page: list[ProcessingRunState] = []
        index = end - 1
        while index >= 0 and len(page) < page_size:
            run = runs[ids[index]]
            if not wanted or run.status in wanted:
                page.append(run)
            index -= 1
        more = index >= 0 and len(page) == page_size
        return page, (positions[index + 1] if more else None)

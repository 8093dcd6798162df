"""Refused calls recorded as SecurityViolation events: the log is its own audit trail.

Every refusal of `AuthGuard` (no token, an unknown one, a role or pipeline the
caller does not have) is counted by (source, violation type, user). Once per
`interval` the counts become events on the system pipeline `SYSTEM_PIPELINE`
(created with a PipelineCreated the first time), one per source and type,
saying how many calls it covers; beyond `max_sources` sources in one interval
the rest share one event. So a flood of bad calls adds a bounded number of
events per interval and costs each call only a dictionary update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from typing import Any

from pipeline_events import adapter, domain
from pipeline_events.store import (
    EventStore,
    ExpectedState,
    StoreError,
    WrongExpectedRevisionError,
)

_log = logging.getLogger(__name__)

#: The pipeline (aggregate) the service's own security events go to.
SYSTEM_PIPELINE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pipeline-events:security")
SYSTEM_NAME = "pipeline-events security"
DEFAULT_INTERVAL = 10.0  # seconds between flushes
DEFAULT_MAX_SOURCES = 100  # events per interval at most (then one for the rest)
_SEVERITY = {
    "unauthenticated": domain.SecurityViolationSeverity.MEDIUM,
    "permission_denied": domain.SecurityViolationSeverity.HIGH,
}

Key = tuple[str, str, str]  # (source ip, violation type, user id or "")


def source_of(context: Any) -> str:
    """The caller's address without the port (`ipv4:203.0.113.7:51234` -> `203.0.113.7`)."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, _ = rest.rpartition(":")
        return host.strip("[]").replace("%5B", "").replace("%5D", "") or rest
    return peer


class ViolationRecorder:
    """Counts refusals and writes them as events, one per source and type per interval."""

    def __init__(
        self,
        store: EventStore,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_sources: int = DEFAULT_MAX_SOURCES,
    ):
        self.store = store
        self.interval = interval
        self.max_sources = max_sources
        self._counts: Counter[Key] = Counter()
        self._created = False
        self._task: asyncio.Task[None] | None = None
        self.recorded = 0  # events written so far

    def note(self, violation_type: str, source: str, user_id: str | None = None) -> None:
        """Count one refused call (cheap: a flood of them costs a dict update each)."""
        self._counts[(source, violation_type, user_id or "")] += 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="violations")

    async def close(self) -> None:
        """Stop, writing what was counted since the last flush."""
        if self._task is not None:
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)
        with contextlib.suppress(StoreError):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except StoreError as error:  # counted again next time: nothing is dropped
                _log.warning("security violations not recorded yet: %s", error)

    async def flush(self) -> int:
        """Write the counted refusals as events; how many events were written."""
        if not self._counts:
            return 0
        counts, self._counts = self._counts, Counter()
        ranked = counts.most_common()
        events: list[Any] = []
        for (source, kind, user), count in ranked[: self.max_sources]:
            events.append(
                domain.SecurityViolation.new(
                    SYSTEM_PIPELINE,
                    kind,
                    f"{count} refused call{'s' if count != 1 else ''} ({kind.replace('_', ' ')})",
                    _SEVERITY.get(kind, domain.SecurityViolationSeverity.MEDIUM),
                    user_id=user or None,
                    source_ip=source,
                )
            )
        rest = ranked[self.max_sources :]
        if rest:
            total = sum(count for _, count in rest)
            events.append(
                domain.SecurityViolation.new(
                    SYSTEM_PIPELINE,
                    "many_sources",
                    f"{total} more refused calls from {len(rest)} more sources",
                    domain.SecurityViolationSeverity.HIGH,
                )
            )
        try:
            await self._create_system_pipeline()
            await self.store.append([adapter.to_envelope(e) for e in events])
        except StoreError:
            self._counts.update(counts)  # try again at the next flush
            raise
        self.recorded += len(events)
        return len(events)

    async def _create_system_pipeline(self) -> None:
        """Its PipelineCreated, once: only if the stream is new (another replica may have)."""
        if self._created:
            return
        created = domain.PipelineCreated.new(SYSTEM_PIPELINE, SYSTEM_NAME, 0, "pipeline-events")
        with contextlib.suppress(WrongExpectedRevisionError):  # it exists already
            await self.store.append(
                [adapter.to_envelope(created)], {str(SYSTEM_PIPELINE): ExpectedState.NO_STREAM}
            )
        self._created = True

"""Event stores: one interface (`EventStore`), in-memory and SQLite backends, opened by URL."""

from __future__ import annotations

from pipeline_events.store.base import (
    AggregatePage,
    AppendResult,
    DuplicateEventError,
    EventFilter,
    EventStore,
    ExpectedRevision,
    ExpectedState,
    InvalidEventError,
    Position,
    ProposedEvent,
    ReadResult,
    RecordedEvent,
    Snapshot,
    StoreClosedError,
    StoreError,
    WrongExpectedRevisionError,
)
from pipeline_events.store.lock import StoreLockedError
from pipeline_events.store.memory import MemoryEventStore
from pipeline_events.store.sqlite import SQLiteEventStore

__all__ = [
    "AggregatePage",
    "AppendResult",
    "DuplicateEventError",
    "EventFilter",
    "EventStore",
    "ExpectedRevision",
    "ExpectedState",
    "InvalidEventError",
    "MemoryEventStore",
    "Position",
    "ProposedEvent",
    "ReadResult",
    "RecordedEvent",
    "SQLiteEventStore",
    "Snapshot",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "WrongExpectedRevisionError",
    "open_store",
    "parse_store_url",
]


def parse_store_url(url: str) -> tuple[str, dict[str, str]]:
    """(scheme, options) of a store URL; for SQLite, options["path"] is the file.

    `sqlite:///events.db` is relative to the working directory and
    `sqlite:////var/lib/events.db` is absolute (three slashes, then the path,
    as in SQLAlchemy). `?durability=process|power` chooses when commits are
    fsynced.

    Raises:
        StoreError: the URL names no store this version can open.
    """
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    if parts.scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise StoreError(f"store URL {url!r}: memory:// takes no path or options")
        return "memory", {}
    if parts.scheme != "sqlite":
        raise StoreError(
            f"unsupported store URL {url!r}: use sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH"
            " or memory://"
        )
    if parts.netloc:
        raise StoreError(
            f"store URL {url!r} names a host ({parts.netloc!r}): a SQLite store is a local file,"
            " sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise StoreError(f"no file in store URL {url!r}: use sqlite:///PATH")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - {"durability"})
    if unknown:
        raise StoreError(f"store URL {url!r}: unknown option {unknown[0]!r} (known: durability)")
    durability = options.get("durability", "process")
    if durability not in ("process", "power"):
        raise StoreError(f"durability must be 'process' or 'power', not {durability!r}")
    return "sqlite", {"path": path, "durability": durability}


async def open_store(url: str) -> EventStore:
    """Open a store by URL: `memory://`, `sqlite:///relative.db`, `sqlite:////absolute.db`.

    A `?durability=power` query on a SQLite URL fsyncs every commit.

    Raises:
        StoreError: a bad URL, or a file that cannot be the store (a directory, a
            missing directory, not SQLite, a newer schema, in use by another process:
            StoreLockedError).
    """
    scheme, options = parse_store_url(url)
    if scheme == "memory":
        return MemoryEventStore()
    return await SQLiteEventStore.open(options["path"], durability=options["durability"])  # type: ignore[arg-type]

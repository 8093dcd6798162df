"""Event stores: one interface (`EventStore`), in-memory, SQLite and NATS JetStream backends,
opened by URL."""

from __future__ import annotations

import re
from typing import Any

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


def parse_store_url(url: str) -> tuple[str, dict[str, Any]]:
    """(scheme, options) of a store URL; for SQLite, options["path"] is the file.

    `nats://HOST:PORT[,HOST:PORT...]?stream=NAME&replicas=N&prefix=P&duplicate_window=S`
    (and user, password, token, creds) is a JetStream stream (see `store.nats`).
    `sqlite:///events.db` is relative to the working directory and
    `sqlite:////var/lib/events.db` is absolute (three slashes, then the path,
    as in SQLAlchemy). `?durability=process|power` chooses when commits are
    fsynced.

    Raises:
        StoreError: the URL names no store this version can open.
    """
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    if parts.scheme == "nats":
        return "nats", _nats_options(url, parts.netloc, parts.path, parse_qsl(parts.query))
    if parts.scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise StoreError(f"store URL {url!r}: memory:// takes no path or options")
        return "memory", {}
    if parts.scheme != "sqlite":
        raise StoreError(
            f"unsupported store URL {url!r}: use sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH,"
            " nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N] or memory://"
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


_NATS_OPTIONS = ("stream", "prefix", "replicas", "duplicate_window", "user", "password", "token",
                 "creds")  # fmt: skip
_NATS_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _nats_options(url: str, netloc: str, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
    """The options of a nats:// URL (see `store.nats.NatsOptions`)."""
    if path not in ("", "/"):
        raise StoreError(f"store URL {url!r}: a nats:// URL takes no path (use ?stream=NAME)")
    hosts = [host for host in netloc.split(",") if host]
    if not hosts:
        raise StoreError(f"store URL {url!r} names no server: nats://HOST:PORT[,HOST:PORT...]")
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreError(f"store URL {url!r}: {host!r} is not HOST:PORT")
    options: dict[str, Any] = dict(query)
    unknown = sorted(set(options) - set(_NATS_OPTIONS))
    if unknown:
        raise StoreError(
            f"store URL {url!r}: unknown option {unknown[0]!r} (known: {', '.join(_NATS_OPTIONS)})"
        )
    for key in ("stream", "prefix"):
        if key in options and not _NATS_NAME.fullmatch(options[key]):
            raise StoreError(
                f"{key} must be 1-64 letters, digits, '_' or '-', not {options[key]!r}"
            )
    replicas = options.get("replicas", "1")
    if replicas not in ("1", "2", "3", "4", "5"):
        raise StoreError(f"replicas must be 1 to 5 (JetStream's range), not {replicas!r}")
    options["replicas"] = int(replicas)
    window = options.get("duplicate_window", "120")
    try:
        options["duplicate_window"] = float(window)
    except ValueError:
        raise StoreError(f"duplicate_window is in seconds, not {window!r}") from None
    if not 1 <= options["duplicate_window"] <= 7 * 24 * 3600:
        raise StoreError(f"duplicate_window must be 1 s to 7 days, not {window!r}")
    options["servers"] = tuple(f"nats://{host}" for host in hosts)
    return options


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
    if scheme == "nats":
        try:
            from pipeline_events.store.nats import NatsEventStore, NatsOptions
        except ImportError as error:
            raise StoreError(
                f"the NATS store needs the nats extra: pip install 'pipeline-events[nats]' ({error})"
            ) from error
        return await NatsEventStore.open(NatsOptions(**options))
    return await SQLiteEventStore.open(options["path"], durability=options["durability"])  # type: ignore[arg-type]

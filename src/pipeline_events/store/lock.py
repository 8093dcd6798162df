"""One process owns a store: an exclusive lock beside the store's file, held while it is open.

The lock is `flock` on `<store>-lock` (it holds the owner's pid, so a second
opener can say who has the store). flock, not SQLite's own fcntl locks: those
are per process and only guard single transactions, and two processes that
both write would each keep a private idea of the head. The lock dies with its
process, `kill -9` included, so a crashed server never leaves a stale lock.
Other processes may still read the file (a backup, `sqlite3 -readonly`).
"""

from __future__ import annotations

import fcntl
import os

from pipeline_events.store.base import StoreError


class StoreLockedError(StoreError):
    """Another process has the store open."""


class StoreLock:
    """The exclusive lock of one store file; `release()` (or process exit) frees it."""

    def __init__(self, store_path: str):
        self.path = store_path + "-lock"
        self._fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StoreError(
                f"cannot create the lock file {self.path}: {error.strerror}"
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"store {store_path} is in use by process {owner} (lock file {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Free the lock (the file stays: removing it could race with a new owner)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

"""A queue for SQLite's write lock shared by every process that opens one database file.

Why: SQLite lets one connection write at a time and makes the others wait in its busy
handler, which polls by sleeping 1, 2, 5, 10 ... up to 100 ms between attempts. With
``rofecare serve --workers 2`` the two workers' group commits collided constantly and
each loser slept: creates had a p95 of 2.2 s (measured with benchmarks/rest.py) while the
database was idle most of the time. An exclusive ``flock`` on a file beside the database,
taken by the writer thread before ``BEGIN IMMEDIATE``, makes the waiters queue in the
kernel instead: the next one wakes the moment the lock is released, and SQLite's busy
handler is left for the cases it was made for (a checkpoint, a tool that does not take
this lock).

The lock is advisory and only orders writers; SQLite's own locking still decides
correctness, so a process without it (the ``sqlite3`` shell, an older Rofecare) is safe,
just not queued. The kernel releases it when its holder dies. It is held for one write
transaction (a group commit of at most a few dozen writes, or one reindex batch), which is
why a plain blocking wait is acceptable: no holder keeps it longer than a transaction.
``flock`` releases the GIL while it waits. Where ``fcntl`` does not exist (Windows) the
lock does nothing and SQLite's busy handler serializes the writers as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class ProcessWriteLock:
    """An exclusive lock on ``<database>-writer.lock``, one per store (and so per writer
    thread): two stores in one process each open their own descriptor, and ``flock`` locks
    of distinct open files exclude each other even within a process."""

    def __init__(self, database: Path) -> None:
        self._path = database.with_name(database.name + "-writer.lock")
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        fd = self._descriptor()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ProcessRole:
    """A role that one store at a time holds among every process sharing a database: an
    exclusive ``flock`` on ``<database>-<role>.lock``, taken without waiting and kept until
    ``close`` or the holder's death (the kernel then releases it, and the next store that
    asks takes the role over).

    Why a role rather than a lock per use: some work is cheaper done always by the same
    process (index_log.py, the background apply: a connection's page cache is dropped
    whenever another connection, in practice another process's, wrote the file)."""

    def __init__(self, database: Path, role: str) -> None:
        self._path = database.with_name(f"{database.name}-{role}.lock")
        self._fd: int | None = None
        self._held = False

    def held(self) -> bool:
        """Whether this store holds the role, taking it if nobody does."""
        if self._held:
            return True
        if fcntl is None:  # pragma: no cover - Windows: no way to tell, so everyone holds it
            self._held = True
            return True
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._held = True
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the role
            self._fd = None
        self._held = False

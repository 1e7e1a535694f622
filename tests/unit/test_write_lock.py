"""The writers' queue lock: two stores on one file (as two worker processes) never write at
once, and a waiter proceeds as soon as the holder lets go."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fhir_server.storage.sqlite.write_lock import ProcessWriteLock

fcntl = pytest.importorskip("fcntl")


def test_two_locks_on_one_database_exclude_each_other(tmp_path: Path) -> None:
    database = tmp_path / "rofecare.sqlite3"
    first, second = ProcessWriteLock(database), ProcessWriteLock(database)
    events: list[str] = []
    holding = threading.Event()

    def hold_then_release() -> None:
        with first.held():
            events.append("first in")
            holding.set()
            time.sleep(0.2)
            events.append("first out")

    thread = threading.Thread(target=hold_then_release)
    thread.start()
    assert holding.wait(5)
    with second.held():
        events.append("second in")
    thread.join(5)
    assert events == ["first in", "first out", "second in"]
    assert first.path == tmp_path / "rofecare.sqlite3-writer.lock"
    first.close()
    second.close()


def test_the_lock_is_released_when_the_holder_fails(tmp_path: Path) -> None:
    lock = ProcessWriteLock(tmp_path / "db")
    with pytest.raises(RuntimeError), lock.held():
        raise RuntimeError("the transaction failed")
    other = ProcessWriteLock(tmp_path / "db")
    fd = other._descriptor()
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if held
    fcntl.flock(fd, fcntl.LOCK_UN)
    lock.close()
    other.close()

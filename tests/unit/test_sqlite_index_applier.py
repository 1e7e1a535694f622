"""One applier among the processes sharing a store: the background apply of the index log.

Two stores on one file stand for two ``rofecare serve`` workers (``flock`` locks of distinct
open files exclude each other within a process as between processes). The first store to
apply its backlog becomes the applier; the other leaves its rows to it, and applies them
itself only when the applier has not within ``APPLIER_HANDOVER_SECONDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite import store as store_module
from tests.unit.test_sqlite_index_log import Stack, opened, patient, settled


@pytest.fixture
def quick_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backlogs applied 50 ms after a write; no eager apply after a search."""
    monkeypatch.setattr(store_module, "APPLY_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(store_module, "EAGER_SECONDS", 0.0)


@pytest.fixture
async def applier(tmp_path: Path, quick_apply: None) -> AsyncIterator[Stack]:
    """A store that took the applier role: its first write was applied in the background."""
    path = tmp_path / "shared.sqlite3"
    async with opened(path) as store:
        stack = Stack(store, path)
        await stack.resources.update("Patient", "a1", patient("a1", "Okafor"))
        await settled(lambda: not stack.logged())
        assert stack.logged() == []
        yield stack


async def handed_over(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once ``store`` leaves a backlog to the applier."""
    seen = asyncio.Event()
    loop = asyncio.get_running_loop()
    original = store._hand_over

    def recorded(bulk: bool) -> None:
        original(bulk)
        loop.call_soon_threadsafe(seen.set)

    monkeypatch.setattr(store, "_hand_over", recorded)
    return seen


async def test_the_applier_applies_the_rows_another_process_logged(
    applier: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "APPLIER_HANDOVER_SECONDS", 3600.0)
    async with opened(applier.path) as other:
        left = await handed_over(other, monkeypatch)
        await Stack(other, applier.path).resources.update("Patient", "b1", patient("b1", "Mensah"))
        await asyncio.wait_for(left.wait(), 10)
        assert [name for name, _ in applier.logged()] == ["Patient"]  # the other left it

        await applier.resources.update("Patient", "a2", patient("a2", "Diallo"))
        await settled(lambda: not applier.logged())
        assert applier.logged() == []  # the applier's backlog took the other's row too
        assert await applier.ids("Patient", [("family", "mensah")]) == ["b1"]


async def test_rows_the_applier_leaves_are_applied_by_their_writer_after_the_handover(
    applier: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applier writes nothing more, so nothing wakes it: the other process applies its
    own rows once the handover time has passed."""
    monkeypatch.setattr(store_module, "APPLIER_HANDOVER_SECONDS", 0.3)
    async with opened(applier.path) as other:
        left = await handed_over(other, monkeypatch)
        await Stack(other, applier.path).resources.update("Patient", "b1", patient("b1", "Mensah"))
        await asyncio.wait_for(left.wait(), 10)
        await settled(lambda: not applier.logged())
        assert applier.logged() == []


async def test_the_role_passes_to_another_process_when_the_applier_closes(
    tmp_path: Path, quick_apply: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "APPLIER_HANDOVER_SECONDS", 3600.0)
    path = tmp_path / "shared.sqlite3"
    async with opened(path) as second:
        async with opened(path) as first:
            stack = Stack(first, path)
            await stack.resources.update("Patient", "a1", patient("a1", "Okafor"))
            await settled(lambda: not stack.logged())
        # The applier closed (its role's lock with it): the next backlog takes the role.
        writer = Stack(second, path)
        await writer.resources.update("Patient", "b1", patient("b1", "Mensah"))
        await settled(lambda: not writer.logged())
        assert writer.logged() == []

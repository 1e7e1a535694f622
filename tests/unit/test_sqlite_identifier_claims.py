"""Identifier claims (storage/sqlite/claims.py): every version holds a key per identifier,
and a conditional create on one ``identifier=system|value`` is checked against those keys
in the write transaction, with nothing of the index log applied first.

Two stores on one file stand for two ``rofecare serve`` workers; the index log's timers are
lengthened (``slow_apply``) so that rows stay pending until a test reads where they are.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from fhir_server.definitions import load_definitions
from fhir_server.search.registry import load_search_parameters
from fhir_server.services.reindex import reindex
from fhir_server.services.search_index import SearchIndex
from fhir_server.storage.sqlite import SqliteStore
from fhir_server.storage.sqlite import store as store_module
from fhir_server.storage.sqlite.claims import identifier_key
from fhir_server.storage.sqlite.schema import connect
from tests.unit.test_sqlite_index_log import (
    Stack,
    crash,
    logged_types,
    slow_apply,
    stack,
)

__all__ = ["slow_apply", "stack"]  # fixtures used by name

SYNTHEA = "https://github.com/synthetichealth/synthea"


def organization(identifier: str | None, name: str = "Clinic") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Organization", "name": name}
    if identifier is not None:
        body["identifier"] = [{"system": SYNTHEA, "value": identifier}]
    return body


async def create_unless(stack: Stack, criteria: str, body: dict[str, Any]) -> tuple[bool, str]:
    """A conditional create: (created, the id answered)."""
    outcome = await stack.resources.create("Organization", body, if_none_exist=criteria)
    return outcome.created, outcome.version.resource_id


def claims(path: Path) -> list[str]:
    with closing(connect(path, read_only=True)) as connection:
        rows = connection.execute("SELECT claim FROM resource_claim ORDER BY claim").fetchall()
    return [row[0] for row in rows]


async def test_a_condition_on_an_identifier_sees_another_workers_create_and_applies_nothing(
    stack: Stack,
) -> None:
    other = SqliteStore(stack.path)
    await other.open()
    try:
        first = await Stack(other, stack.path).resources.create("Organization", organization("1"))
        assert logged_types(stack) == {"Organization"}

        created, _ = await create_unless(stack, f"identifier={SYNTHEA}|2", organization("2"))

        assert created
        # Both creates' rows still wait in the log: the condition applied none of them.
        assert [kind for kind, _ in stack.logged()] == ["Organization", "Organization"]
        created, answered = await create_unless(stack, f"identifier={SYNTHEA}|1", organization("1"))
        assert (created, answered) == (False, first.version.resource_id)
    finally:
        await other.close()


async def test_identifier_keys_follow_updates_and_deletions(stack: Stack) -> None:
    await stack.resources.update("Organization", "o1", {**organization("1"), "id": "o1"})
    await stack.resources.update("Organization", "o1", {**organization("2"), "id": "o1"})

    assert (await create_unless(stack, f"identifier={SYNTHEA}|2", organization("2")))[0] is False
    assert (await create_unless(stack, f"identifier={SYNTHEA}|1", organization("1")))[0] is True

    await stack.resources.delete("Organization", "o1")
    assert (await create_unless(stack, f"identifier={SYNTHEA}|2", organization("2")))[0] is True
    held = [key.split("\x1f")[1:] for key in claims(stack.path)]
    assert sorted(held) == [["Organization", SYNTHEA, "1"], ["Organization", SYNTHEA, "2"]]


async def test_other_conditions_and_other_types_are_judged_as_searches(stack: Stack) -> None:
    await stack.resources.update("Organization", "o1", {**organization("7"), "id": "o1"})
    location = {"resourceType": "Location", "identifier": [{"system": SYNTHEA, "value": "8"}]}
    await stack.resources.create("Location", location)

    # A value in any system: not a key, the index answers (and finds the Organization).
    assert await create_unless(stack, "identifier=7", organization("7")) == (False, "o1")
    # The same identifier on another type is no match.
    assert (await create_unless(stack, f"identifier={SYNTHEA}|8", organization("8")))[0] is True
    # Two parameters: not a key either.
    criteria = f"name=Clinic&identifier={SYNTHEA}|7"
    assert await create_unless(stack, criteria, organization("7")) == (False, "o1")


async def test_a_schema_8_database_gets_its_identifier_keys_when_it_opens(
    tmp_path: Path, slow_apply: None
) -> None:
    path = tmp_path / "old.sqlite3"
    store = SqliteStore(path)
    await store.open()
    stack = Stack(store, path)
    await stack.resources.update("Organization", "o1", {**organization("1"), "id": "o1"})
    await stack.resources.update("Organization", "o2", {**organization("2"), "id": "o2"})
    await stack.resources.delete("Organization", "o2")
    crash(store)  # with the rows still in the log: the upgrade must apply them first
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("DELETE FROM resource_claim")
        connection.execute("UPDATE store_meta SET value = '8' WHERE key = 'schema_version'")
        connection.commit()

    upgraded = SqliteStore(path)
    stack = Stack(upgraded, path)  # as the server's core: indexing is given before opening
    await upgraded.open()
    try:
        assert claims(path) == [identifier_key("Organization", SYNTHEA, "1")]
        assert await create_unless(stack, f"identifier={SYNTHEA}|1", organization("1")) == (
            False,
            "o1",
        )
        assert (await create_unless(stack, f"identifier={SYNTHEA}|2", organization("2")))[0]
        assert await upgraded.check() == []
    finally:
        await upgraded.close()
    with closing(connect(path, read_only=True)) as connection:
        version = connection.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert version == (str(store_module.SCHEMA_VERSION),)


async def test_reindex_gives_back_identifier_keys_and_keeps_the_rules_claims(
    stack: Stack,
) -> None:
    await stack.resources.update("Organization", "o1", {**organization("1"), "id": "o1"})
    with closing(sqlite3.connect(stack.path)) as connection:
        rkey = connection.execute("SELECT rkey FROM resource_current WHERE id = 'o1'").fetchone()
        connection.execute("DELETE FROM resource_claim")
        connection.execute("INSERT INTO resource_claim VALUES ('rule:kept', ?)", rkey)
        connection.commit()
    index = SearchIndex(
        load_search_parameters(),
        load_definitions().is_resource_type,
        default_count=100,
        max_count=100,
    )

    summary = await reindex(stack.store, index)

    assert summary.reindexed == 1
    assert claims(stack.path) == [identifier_key("Organization", SYNTHEA, "1"), "rule:kept"]

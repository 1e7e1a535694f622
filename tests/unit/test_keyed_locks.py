"""KeyedLocks serialize one key, leave other keys free and forget idle keys."""

from __future__ import annotations

import asyncio

from fhir_server.services.locks import KeyedLocks


async def test_one_key_is_serialized_and_forgotten_when_idle() -> None:
    locks = KeyedLocks()
    inside = 0
    most = 0

    async def worker() -> None:
        nonlocal inside, most
        async with locks.hold(("Patient", "a")):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(worker() for _ in range(20)))
    assert most == 1
    assert len(locks) == 0


async def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = KeyedLocks()
    entered = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("a"):
            await entered.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    async with locks.hold("b"):
        entered.set()
    await task
    assert len(locks) == 0

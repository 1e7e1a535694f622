"""Signing keys for the life of the server: created on first use, rotated by age, shared.

Every worker process signs and verifies tokens with the keys in the identity store. Each
keeps the ring in memory (a token check must not touch storage) and reads the store again
every ``REFRESH_SECONDS``, or at once when a token names a key it does not know yet (another
worker rotated). Rotation is a compare-and-swap on the stored key ids, so two workers that
find the key old at the same moment make one new key between them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fhir_server.auth.identity import IdentityStore
from fhir_server.auth.keys import Algorithm, KeyRing, SigningKey

REFRESH_SECONDS = 60
FORCED_REFRESH_GAP = 1.0  # an unknown kid re-reads the store at most once a second


class KeyManager:
    def __init__(
        self,
        store: IdentityStore,
        algorithm: Algorithm,
        max_age_seconds: int,
        max_token_lifetime: int,
        clock: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self._store = store
        self._algorithm = algorithm
        self._max_age = max_age_seconds
        self._clock = clock
        # A worker may sign with a key up to REFRESH_SECONDS after another retired it: the
        # grace of a retired key covers that too, so rotation never cuts a token short.
        self._lifetime = max_token_lifetime + REFRESH_SECONDS + 1
        self._ring = KeyRing((), self._lifetime)
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    def ring(self) -> KeyRing:
        return self._ring

    async def refresh(self, *, force: bool = False) -> KeyRing:
        """Read the keys again (and rotate or create them when due)."""
        gap = FORCED_REFRESH_GAP if force else REFRESH_SECONDS
        if time.monotonic() - self._loaded_at < gap:
            if not force:
                return self._ring
            # A token names a key we do not know, just after a reload: wait for the gap
            # (at most a second) rather than refuse a key another worker just made. The
            # gap keeps tokens with made-up kids from hammering the store.
            await asyncio.sleep(gap - (time.monotonic() - self._loaded_at))
        async with self._lock:
            if time.monotonic() - self._loaded_at < gap:
                return self._ring
            self._ring = await self._load()
            self._loaded_at = time.monotonic()
        return self._ring

    async def rotate(self) -> SigningKey:
        """Replace the signing key now (``rofecare keys rotate``, or a suspected leak: then
        also restart with a shorter token lifetime, since the old key verifies until its
        tokens expire)."""
        async with self._lock:
            while True:
                stored = await self._store.signing_keys()
                ring, key = KeyRing(stored, self._lifetime).rotated(self._algorithm, self._clock())
                if await self._store.replace_signing_keys([k.kid for k in stored], list(ring.keys)):
                    self._ring, self._loaded_at = ring, time.monotonic()
                    return key

    async def _load(self) -> KeyRing:
        while True:
            stored = await self._store.signing_keys()
            now = self._clock()
            ring = KeyRing(stored, self._lifetime)
            due = not any(key.retired_at is None for key in stored) or (
                now - ring.signing_key.created_at >= self._max_age
            )
            prunable = set(ring.prunable(now))
            if not due and not prunable:
                return ring
            keys = [key for key in stored if key.kid not in prunable]
            if due:
                ring, _ = KeyRing(keys, self._lifetime).rotated(self._algorithm, now)
                keys = list(ring.keys)
            if await self._store.replace_signing_keys([k.kid for k in stored], keys):
                return KeyRing(keys, self._lifetime)
            # another worker changed them meanwhile: read what it wrote

"""kill -9 in the middle of concurrent writes loses no acknowledged write and no consistency.

Writer threads in the test process create and update Patients and Observations (and fight
over one shared Patient) against a real server, recording every write answered 2xx. The
server is SIGKILLed while they run, restarted on the same data directory, and then:
every acknowledged version is still there with the content that was sent, and the store's
own consistency check finds nothing wrong.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fhir_server.storage.sqlite import SqliteStore
from tests.e2e.fhir import FHIR_JSON, Json, marker_of, observation, patient, tagged
from tests.e2e.server import RunningServer, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WRITER_THREADS = 8
WRITE_TIMEOUT_S = 10.0
ACK_WAIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Ack:
    """A write the server answered with 2xx: this version must survive a crash."""

    resource_type: str
    resource_id: str
    version: int
    marker: str


class Hammer:
    """Writer threads that create and update resources until the server goes away."""

    def __init__(self, base: str, hot: Json) -> None:
        self._base = base
        self._hot = hot
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(index,), daemon=True)
            for index in range(WRITER_THREADS)
        ]
        self.acks: list[Ack] = [Ack("Patient", hot["id"], 1, marker_of(hot) or "")]
        self.unexpected: list[str] = []
        self.interrupted = 0  # writers whose request was cut off by the kill

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_for_acks(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self.acks) >= count or self.unexpected, ACK_WAIT_TIMEOUT_S
            )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WRITE_TIMEOUT_S + 5)
        assert not any(thread.is_alive() for thread in self._threads), "a writer hangs"

    def _work(self, index: int) -> None:
        with requests.Session() as session:
            try:
                self._write_until_stopped(index, session)
            except requests.RequestException:
                # The server was killed: the request in flight is not acknowledged.
                with self._changed:
                    self.interrupted += 1

    def _write_until_stopped(self, index: int, session: requests.Session) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            marker = f"w{index}-{n}"
            body = patient(marker)
            patient_id = self._send(session, "POST", "Patient", body, marker)
            if patient_id is not None:
                for k in (1, 2):
                    update = tagged({**body, "id": patient_id}, f"{marker}-u{k}")
                    self._send(session, "PUT", f"Patient/{patient_id}", update, f"{marker}-u{k}")
                weight = observation(patient_id, marker)
                observation_id = self._send(session, "POST", "Observation", weight, marker)
                if observation_id is not None:
                    amended = {**weight, "id": observation_id, "status": "amended"}
                    amended = tagged(amended, f"{marker}-u1")
                    self._send(
                        session, "PUT", f"Observation/{observation_id}", amended, f"{marker}-u1"
                    )
            hot = tagged({**self._hot}, f"{marker}-hot")
            self._send(session, "PUT", f"Patient/{self._hot['id']}", hot, f"{marker}-hot")

    def _send(
        self, session: requests.Session, method: str, path: str, body: Json, marker: str
    ) -> str | None:
        response = session.request(
            method,
            f"{self._base}/{path}",
            json=body,
            headers={"Content-Type": FHIR_JSON},
            timeout=WRITE_TIMEOUT_S,
        )
        if 200 <= response.status_code < 300:
            stored = response.json()
            ack = Ack(
                stored["resourceType"], stored["id"], int(stored["meta"]["versionId"]), marker
            )
            with self._changed:
                if marker_of(stored) != marker:
                    self.unexpected.append(f"{method} {path}: answer lacks tag {marker}")
                self.acks.append(ack)
                self._changed.notify_all()
            resource_id: str = stored["id"]
            return resource_id
        # 412 is a lost race on the shared Patient: refused, hence not acknowledged.
        if response.status_code != 412 or "hot" not in marker:
            with self._changed:
                self.unexpected.append(f"{method} {path}: {response.status_code} {response.text}")
                self._changed.notify_all()
        return None


@pytest.fixture
def servers() -> Iterator[list[RunningServer]]:
    """Servers a test starts; whatever is still running at the end is killed."""
    started: list[RunningServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()


def check_store(path: Path) -> list[str]:
    async def run() -> list[str]:
        store = SqliteStore(path)
        await store.open()
        try:
            return await store.check()
        finally:
            await store.close()

    return asyncio.run(run())


def vread(session: requests.Session, base: str, ack: Ack) -> str | None:
    """Why ``ack`` is not readable at its version after the restart; None when it is."""
    url = f"{base}/{ack.resource_type}/{ack.resource_id}/_history/{ack.version}"
    response = session.get(url, headers={"Accept": FHIR_JSON}, timeout=10)
    if response.status_code != 200:
        return f"{url}: {response.status_code} {response.text[:200]}"
    if marker_of(response.json()) != ack.marker:
        return f"{url}: tag {marker_of(response.json())!r}, acknowledged {ack.marker!r}"
    return None


def current_version(session: requests.Session, base: str, key: tuple[str, str]) -> int:
    response = session.get(f"{base}/{key[0]}/{key[1]}", timeout=10)
    assert response.status_code == 200, (key, response.status_code, response.text)
    version: int = int(response.json()["meta"]["versionId"])
    return version


# About 600 writes/s are acknowledged, so these kill at roughly 0.05 s, 0.3 s and 1.5 s; counting
# acknowledgements instead of sleeping keeps the three moments distinct on slow machines too.
@pytest.mark.parametrize("kill_after_acks", [5, 200, 900], ids=["early", "middle", "late"])
def test_kill_9_mid_write_keeps_acknowledged_writes(
    tmp_path: Path, servers: list[RunningServer], kill_after_acks: int
) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir, tmp_path / "first.log")
    servers.append(first)
    hot = requests.post(f"{first.base}/Patient", json=patient("hot-v1"), timeout=10)
    assert hot.status_code == 201, hot.text

    hammer = Hammer(first.base, hot.json())
    hammer.start()
    try:
        reached = hammer.wait_for_acks(kill_after_acks)
        first.kill()  # SIGKILL while the writers are still sending
    finally:
        hammer.stop()
    assert not hammer.unexpected, hammer.unexpected[:5]
    assert reached, f"only {len(hammer.acks)} writes acknowledged; log:\n{first.log()}"
    assert hammer.interrupted > 0, "no writer was cut off by the kill"
    acks = list(hammer.acks)

    second = start_server(data_dir, tmp_path / "second.log")
    servers.append(second)
    newest: dict[tuple[str, str], int] = {}
    for ack in acks:
        key = (ack.resource_type, ack.resource_id)
        newest[key] = max(newest.get(key, 0), ack.version)

    def check_ack(ack: Ack) -> str | None:
        with requests.Session() as session:
            return vread(session, second.base, ack)

    with ThreadPoolExecutor(max_workers=8) as pool:
        missing = [problem for problem in pool.map(check_ack, acks) if problem]
    assert not missing, f"{len(missing)} of {len(acks)} acknowledged writes lost: {missing[:5]}"
    with requests.Session() as session:
        behind = {
            key: (version, current)
            for key, version in newest.items()
            if (current := current_version(session, second.base, key)) < version
        }
    assert not behind, f"current version older than acknowledged: {behind}"

    second.terminate()
    problems = check_store(data_dir / "rofecare.sqlite3")
    assert problems == []

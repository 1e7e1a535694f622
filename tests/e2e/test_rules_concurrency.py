"""The guarded hospital rules across worker processes: simultaneous requests to a real
`rofecare serve --workers 2`, of which exactly one may win (issue 7: admissions and
appointments, also under concurrency). In-process interleavings are tested in
tests/rules/; here the two workers share no lock, only the store's guard."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.server import RunningServer, start_server
from tests.rules.conftest import encounter, hospital_patient, practitioner
from tests.rules.resources import appointment

CONTENDERS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("rules")
    running = start_server(
        directory / "data", directory / "server.log", ["--workers", "2"], profiles="enforce"
    )
    try:
        yield running
    finally:
        running.terminate()


def created(server: RunningServer, resource: dict[str, Any]) -> str:
    answer = requests.post(f"{server.base}/{resource['resourceType']}", json=resource, timeout=30)
    assert answer.status_code == 201, answer.text
    identifier: str = answer.json()["id"]
    return identifier


def at_once(server: RunningServer, resources: list[dict[str, Any]]) -> list[requests.Response]:
    """POST every resource from its own thread, released together."""
    barrier = threading.Barrier(len(resources))
    answers: list[requests.Response | None] = [None] * len(resources)

    def send(index: int) -> None:
        session = requests.Session()
        barrier.wait()
        resource = resources[index]
        answers[index] = session.post(
            f"{server.base}/{resource['resourceType']}", json=resource, timeout=60
        )

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(resources))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def statuses(answers: list[requests.Response]) -> list[int]:
    return sorted(answer.status_code for answer in answers)


def test_of_simultaneous_admissions_of_one_patient_exactly_one_wins(server: RunningServer) -> None:
    patient = created(server, hospital_patient("MRN-E2E-ADM"))
    doctor = created(server, practitioner())
    answers = at_once(
        server, [encounter(patient, doctor, "IMP", "in-progress") for _ in range(CONTENDERS)]
    )
    assert statuses(answers) == [201] + [409] * (CONTENDERS - 1), [a.text for a in answers]
    search = requests.get(
        f"{server.base}/Encounter", params={"subject": f"Patient/{patient}"}, timeout=30
    )
    assert search.json()["total"] == 1


def test_of_simultaneous_bookings_of_one_slot_exactly_one_wins(server: RunningServer) -> None:
    doctor = created(server, practitioner())
    actor = f"Practitioner/{doctor}"
    slots = [
        appointment(f"2026-12-20T09:{minute:02d}:00Z", f"2026-12-20T10:{minute:02d}:00Z", actor)
        for minute in range(0, 5 * CONTENDERS, 5)
    ]
    answers = at_once(server, slots)
    assert statuses(answers) == [201] + [409] * (CONTENDERS - 1), [a.text for a in answers]


def test_of_simultaneous_registrations_of_one_number_exactly_one_wins(
    server: RunningServer,
) -> None:
    answers = at_once(server, [hospital_patient("MRN-E2E-RACE") for _ in range(CONTENDERS)])
    assert statuses(answers) == [201] + [409] * (CONTENDERS - 1)
    assert {"rofecare-1901"} == {
        coding["code"]
        for answer in answers
        if answer.status_code == 409
        for coding in answer.json()["issue"][0]["details"]["coding"]
    }

"""``rofecare load``: files and folders into the store through the one write path.

The command runs in process (``cli.main``) on a real SQLite file in ``tmp_path``; the store
is then read through the API, as a client would see the loaded data.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fhir_server.cli import main
from tests.api.conftest import make_client, observation, patient
from tests.rules.conftest import hospital_patient

NPI = "http://hl7.org/fhir/sid/us-npi"


@pytest.fixture(autouse=True)
def _minimal_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests load minimal resources to test the loader, not the hospital's profiles
    (tests/e2e/test_profiles_e2e.py loads Synthea with them enforced); the subprocesses
    inherit the setting too."""
    monkeypatch.setenv("ROFECARE_PROFILE_VALIDATION", "off")


def write(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def write_ndjson(path: Path, lines: list[Any], *, compressed: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if compressed:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def practitioner(npi: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "identifier": [{"system": NPI, "value": npi}],
        "name": [{"family": f"Doctor {npi}"}],
        **extra,
    }


def patient_seen_by(npi: str, mrn: str) -> dict[str, Any]:
    """A Synthea-like patient transaction naming its practitioner by conditional reference."""
    url = f"urn:uuid:00000000-0000-4000-8000-{int(mrn):012d}"
    subject = patient(identifier=[{"system": "http://hospital.example/mrn", "value": mrn}])
    return bundle(
        "transaction",
        [
            post(subject, url),
            post(
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": url},
                    "participant": [
                        {"individual": {"reference": f"Practitioner?identifier={NPI}|{npi}"}}
                    ],
                }
            ),
        ],
    )


def load(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """Run ``rofecare load``; its exit status and what it printed on stderr."""
    status = main(["load", *(str(arg) for arg in args)])
    return status, capsys.readouterr().err


def summary(stderr: str) -> dict[str, int]:
    line = re.search(
        r"created ([\d,]+), updated ([\d,]+), unchanged ([\d,]+), "
        r"skipped ([\d,]+) \(loaded before\), failed ([\d,]+)",
        stderr,
    )
    assert line is not None, stderr
    names = ("created", "updated", "unchanged", "skipped", "failed")
    return {
        name: int(value.replace(",", "")) for name, value in zip(names, line.groups(), strict=True)
    }


def report_of(stderr: str) -> list[dict[str, Any]]:
    found = re.search(r"report: (\S+) \(", stderr)
    assert found is not None, stderr
    return [json.loads(line) for line in Path(found.group(1)).read_text().splitlines()]


def count(data: Path, resource_type: str) -> int:
    with make_client(data) as client:
        total: int = client.get(f"/fhir/{resource_type}?_summary=count").json()["total"]
    return total


def test_a_folder_of_every_kind_of_input_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, data = tmp_path / "in", tmp_path / "data"
    subject_url = "urn:uuid:6a3e1b8e-2b9f-4b1c-9a55-1f7f3c2d4e01"
    write(
        source / "a-transaction.json",
        bundle(
            "transaction",
            [
                post(patient(), subject_url),
                post(observation(subject_url)),
            ],
        ),
    )
    write(
        source / "b-batch.json", bundle("batch", [post(practitioner("1")), post(practitioner("2"))])
    )
    write(
        source / "nested" / "c-collection.json",
        bundle(
            "collection",
            [
                {
                    "fullUrl": "http://x/Organization/org-1",
                    "resource": {"resourceType": "Organization", "id": "org-1", "name": "St Mary"},
                },
                {"resource": {"resourceType": "Location", "name": "Ward 3"}},
                {"fullUrl": "urn:uuid:no-resource"},
            ],
        ),
    )
    write(
        source / "nested" / "d-searchset.json",
        bundle(
            "searchset",
            [
                {
                    "resource": {"resourceType": "Organization", "id": "org-2", "name": "Lab"},
                    "search": {"mode": "match"},
                },
                {
                    "resource": {"resourceType": "OperationOutcome", "issue": []},
                    "search": {"mode": "outcome"},
                },
            ],
        ),
    )
    write_ndjson(
        source / "patients.ndjson",
        [patient(id=f"nd-{n}", name=[{"family": f"Line {n}"}]) for n in range(3)],
    )
    write_ndjson(source / "more.ndjson.gz", [patient(id="gz-1")], compressed=True)
    write(source / "medication.json", {"resourceType": "Medication", "id": "med-1"})
    (source / "single.json.gz").write_bytes(
        gzip.compress(json.dumps({"resourceType": "Medication", "id": "med-2"}).encode())
    )
    write(source / "manifest.json", [{"path": "not FHIR"}])  # ignored in a folder
    (source / "README.md").write_text("not read")

    status, stderr = load(capsys, source, "--data-dir", data)

    assert status == 0, stderr
    assert summary(stderr) == dict(created=13, updated=0, unchanged=0, skipped=0, failed=0)
    assert "Loaded 8 files (8 bundles)" in stderr
    assert "1 JSON files are no FHIR data: ignored" in stderr
    assert "load" in stderr and "13/13" in stderr  # the progress bar counts resources
    assert report_of(stderr) == []
    assert re.search(r"report: \S+/data/load-report-\d{8}T\d{6}Z\.ndjson", stderr)
    expected = {
        "Patient": 5,
        "Observation": 1,
        "Practitioner": 2,
        "Organization": 2,
        "Location": 1,
        "Medication": 2,
    }
    assert {kind: count(data, kind) for kind in expected} == expected
    with make_client(data) as client:
        # NDJSON and collections keep their ids (PUT by id), so references between them hold
        assert client.get("/fhir/Patient/nd-2").json()["name"][0]["family"] == "Line 2"
        assert client.get("/fhir/Organization/org-1").status_code == 200
        # a transaction's urn:uuid references are rewritten, as for POST /fhir
        obs = client.get("/fhir/Observation").json()["entry"][0]["resource"]
        assert client.get(f"/fhir/{obs['subject']['reference']}").status_code == 200


JOBS = pytest.mark.parametrize("jobs", ["1", "2"], ids=["in-process", "two-workers"])
"""``--jobs 2`` runs the bundles in worker processes (fhir_server/load_workers.py): the
outcome, the report and the waiting for data must be the same as in process."""


@JOBS
def test_failures_are_reported_where_they_are_and_the_rest_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    source, data = tmp_path / "in", tmp_path / "data"
    (source / "broken").mkdir(parents=True)
    (source / "broken" / "truncated.json").write_text('{"resourceType": "Bundle", "type": ')
    write(
        source / "batch.json",
        bundle(
            "batch",
            [
                post(patient(id="ok-1")),
                post(patient(gender="robot")),
                post(patient()),
            ],
        ),
    )
    write(
        source / "transaction.json",
        bundle(
            "transaction",
            [
                post(patient()),
                post(patient()),
                post(patient(birthDate="yesterday")),
            ],
        ),
    )
    write(source / "history.json", bundle("history", []))
    write_ndjson(
        source / "lines.ndjson",
        [
            patient(id="line-1"),
            "{not json",
            {"name": "no resourceType"},
            patient(id="line-4", gender="robot"),
            "",
            patient(id="line-6"),
        ],
    )
    missing = tmp_path / "missing.json"

    status, stderr = load(capsys, source, missing, "--data-dir", data, "--jobs", jobs)

    assert status == 1
    # loaded: 2 of the batch, lines 1 and 6; failed: 1 + 3 (the transaction) + 3 lines +
    # the broken file + the history Bundle + the missing path
    assert summary(stderr) == dict(created=4, updated=0, unchanged=0, skipped=0, failed=10)
    assert count(data, "Patient") == 4
    report = {
        (r["file"].split("/")[-1], r.get("entry"), r.get("line")): r for r in report_of(stderr)
    }
    assert set(report) == {
        ("truncated.json", None, None),
        ("batch.json", 1, None),
        ("transaction.json", 2, None),
        ("history.json", None, None),
        ("lines.ndjson", None, 2),
        ("lines.ndjson", None, 3),
        ("lines.ndjson", None, 4),
        ("missing.json", None, None),
    }
    assert report["truncated.json", None, None]["code"] == "rofecare-1506"
    batch_entry = report["batch.json", 1, None]
    assert (batch_entry["status"], batch_entry["code"]) == (400, "rofecare-1401")
    assert batch_entry["expression"] == ["Bundle.entry[1].resource.gender"]
    assert batch_entry["resource"] == "Patient"
    assert batch_entry["diagnostics"].startswith("Bundle.entry[1] (POST Patient)")
    failed_transaction = report["transaction.json", 2, None]
    assert failed_transaction["expression"] == ["Bundle.entry[2].resource.birthDate"]
    assert report["history.json", None, None]["code"] == "rofecare-2604"
    assert report["lines.ndjson", None, 2]["code"] == "rofecare-1506"
    assert report["lines.ndjson", None, 3]["code"] == "rofecare-2603"
    line_4 = report["lines.ndjson", None, 4]
    assert line_4["expression"] == ["Patient.gender"] and line_4["resource"] == "Patient/line-4"
    assert line_4["diagnostics"].startswith("line 4 (PUT Patient/line-4)")
    assert (
        report["missing.json", None, None]["status"],
        report["missing.json", None, None]["code"],
    ) == (404, "rofecare-2601")


def test_a_second_run_skips_what_is_loaded_and_a_forgotten_row_reloads_only_its_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, data = tmp_path / "in", tmp_path / "data"
    for number in range(3):
        pair = [post(patient(name=[{"family": f"P{number}"}])) for _ in range(2)]
        write(source / f"p{number}.json", bundle("transaction", pair))
    write_ndjson(source / "ids.ndjson", [patient(id=f"id-{n}") for n in range(5)])

    status, first = load(capsys, source, "--data-dir", data, "--concurrency", "2")
    assert status == 0 and summary(first)["created"] == 11

    status, second = load(capsys, source, "--data-dir", data)
    assert status == 0
    assert summary(second) == dict(created=0, updated=0, unchanged=0, skipped=11, failed=0)
    assert count(data, "Patient") == 11

    ledger = sqlite3.connect(data / "load-ledger.sqlite3")
    with ledger:
        assert ledger.execute("SELECT count(*) FROM loaded").fetchone()[0] == 4
        ledger.execute("DELETE FROM loaded WHERE source LIKE '%p1.json'")
    ledger.close()
    status, third = load(capsys, source, "--data-dir", data)
    assert status == 0
    assert summary(third) == dict(created=2, updated=0, unchanged=0, skipped=9, failed=0)
    assert count(data, "Patient") == 13  # that bundle's two plain POSTs again, nothing else

    status, restarted = load(capsys, source / "ids.ndjson", "--data-dir", data, "--restart")
    assert status == 0  # PUT by id: loading again makes new versions, no new resources
    assert summary(restarted) == dict(created=0, updated=5, unchanged=0, skipped=0, failed=0)
    assert count(data, "Patient") == 13


def test_a_ledger_for_a_deleted_store_is_not_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, data = tmp_path / "in", tmp_path / "data"
    write_ndjson(source / "ids.ndjson", [patient(id=f"id-{n}") for n in range(3)])
    assert load(capsys, source, "--data-dir", data)[0] == 0
    (data / "rofecare.sqlite3").unlink()
    status, stderr = load(capsys, source, "--data-dir", data)
    assert status == 0 and "The store is empty: ignoring 1 ledger rows" in stderr
    assert summary(stderr)["created"] == 3


@JOBS
def test_a_bundle_waits_for_the_resources_its_conditional_references_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    """Patients sort before the practitioners they reference; a later folder creates the
    same practitioner again. The patient waits until its own folder is read, so it loads
    before the duplicate could make its reference ambiguous."""
    source, data = tmp_path / "in", tmp_path / "data"
    write(source / "a" / "Ada.json", patient_seen_by("111", "1"))
    write(source / "a" / "Bob.json", patient_seen_by("222", "2"))
    write(
        source / "a" / "prerequisites" / "practitioners.json",
        bundle(
            "batch",
            [
                post(practitioner("111"), ifNoneExist=f"identifier={NPI}|111"),
                post(practitioner("222"), ifNoneExist=f"identifier={NPI}|222"),
            ],
        ),
    )
    write(source / "b" / "duplicates.json", bundle("transaction", [post(practitioner("111"))]))

    status, stderr = load(capsys, source, "--data-dir", data, "--concurrency", "3", "--jobs", jobs)

    assert status == 0, stderr
    assert summary(stderr) == dict(created=7, updated=0, unchanged=0, skipped=0, failed=0)
    assert "2 bundles waited for resources loaded after them" in stderr
    assert report_of(stderr) == []
    with make_client(data) as client:
        encounters = client.get("/fhir/Encounter").json()["entry"]
        for entry in encounters:
            reference = entry["resource"]["participant"][0]["individual"]["reference"]
            assert client.get(f"/fhir/{reference}").json()["identifier"][0]["value"] in (
                "111",
                "222",
            )


def test_batch_entries_waiting_for_data_are_retried_on_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    encounter = {
        "resourceType": "Encounter",
        "status": "planned",
        "class": {"code": "AMB"},
        "participant": [{"individual": {"reference": f"Practitioner?identifier={NPI}|333"}}],
    }
    batch = write(tmp_path / "batch.json", bundle("batch", [post(patient()), post(encounter)]))
    prerequisite = write(tmp_path / "practitioner.json", practitioner("333", id="dr-333"))

    status, stderr = load(capsys, batch, "--data-dir", data)
    assert status == 1  # nothing created the practitioner: a failure after all
    assert summary(stderr) == dict(created=1, updated=0, unchanged=0, skipped=0, failed=1)
    (failure,) = report_of(stderr)
    assert (failure["entry"], failure["status"], failure["code"]) == (1, 412, "rofecare-2406")

    status, stderr = load(capsys, batch, prerequisite, "--data-dir", data)
    assert status == 0, stderr  # only the entry that failed runs again
    assert summary(stderr) == dict(created=2, updated=0, unchanged=0, skipped=1, failed=0)
    assert count(data, "Patient") == 1 and count(data, "Encounter") == 1


@JOBS
def test_warn_mode_loads_what_breaks_rules_and_the_report_lists_each(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    jobs: str,
) -> None:
    """ROFECARE_PROFILE_VALIDATION=warn (loading an archive that is not the hospital's):
    everything loads; each resource breaking a profile or a rule is a warning line of the
    report (its entry and every rule key) and counted in the summary, not a log line each."""
    monkeypatch.setenv("ROFECARE_PROFILE_VALIDATION", "warn")
    future_birth = hospital_patient("MRN-2", birthDate="2999-01-01")  # rof-pat-2
    archive = write(
        tmp_path / "archive.json",
        bundle(
            "transaction",
            [
                post(hospital_patient("MRN-1")),
                post(hospital_patient("MRN-1")),  # rule rofecare-1901: one patient per MRN
                post(future_birth),
                post(hospital_patient("MRN-3")),
            ],
        ),
    )
    status, stderr = load(capsys, archive, "--data-dir", tmp_path / "data", "--jobs", jobs)
    assert status == 0, stderr
    assert summary(stderr)["created"] == 4 and summary(stderr)["failed"] == 0
    assert "loaded with warnings: 2 resources (" in stderr
    assert "0 failures, 2 warnings" in stderr
    assert "accepted although" not in stderr  # the report tells it, not the log
    assert logging.getLogger("rofecare.profiles").level == logging.NOTSET  # put back
    lines = sorted(report_of(stderr), key=lambda line: line["entry"])
    assert [(line["entry"], line["severity"], line["status"]) for line in lines] == [
        (1, "warning", 201),  # the second patient with MRN-1
        (2, "warning", 201),
    ]
    assert "rofecare-1901" in lines[0]["keys"] and "rof-pat-2" in lines[1]["keys"]
    assert lines[1]["expression"] and all(line["file"] == str(archive) for line in lines)
    assert count(tmp_path / "data", "Patient") == 4


def test_exit_status_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    good = write(tmp_path / "good.json", patient(id="p1"))
    assert load(capsys, good, "--data-dir", data)[0] == 0
    status, stderr = load(capsys, tmp_path / "nothing-here", "--data-dir", data)
    assert status == 1 and "failed 1" in stderr
    explicit = write(tmp_path / "manifest.json", {"files": []})  # named: must be FHIR
    report = tmp_path / "reports" / "mine.ndjson"
    status, stderr = load(capsys, explicit, "--data-dir", data, "--report", report)
    assert status == 1
    assert json.loads(report.read_text())["code"] == "rofecare-2603"
    for option in ("--concurrency", "--jobs"):
        with pytest.raises(SystemExit) as usage:
            main(["load", str(good), option, "0"])
        assert usage.value.code == 2


@pytest.mark.slow
@JOBS
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path: Path, jobs: str) -> None:
    """Lines without ids are plain POSTs: loaded twice they would be duplicates, lost they
    would be missing. After an interrupted run and a resumed one, each is there once. With
    workers, the Ctrl-C goes to the whole process group, as at a terminal: the workers
    ignore it and finish what they were given, and the loader records it."""
    source, data = tmp_path / "patients.ndjson", tmp_path / "data"
    lines = 5_000
    write_ndjson(source, [patient(name=[{"family": f"N{n}"}]) for n in range(lines)])
    command = [
        sys.executable,
        "-m",
        "fhir_server",
        "load",
        str(source),
        "--data-dir",
        str(data),
        "--concurrency",
        jobs,
        "--jobs",
        jobs,
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ledger = data / "load-ledger.sqlite3"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ledger.exists() and _rows(ledger) >= 1:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted: run the same command again to resume" in stderr
    loaded_first = summary(stderr)["created"]
    assert 0 < loaded_first < lines
    assert _rows(ledger) * 500 == loaded_first  # every committed batch is recorded

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr)["created"] == lines - loaded_first
    assert count(data, "Patient") == lines


def _rows(ledger: Path) -> int:
    try:
        with sqlite3.connect(ledger) as connection:
            rows: int = connection.execute("SELECT count(*) FROM loaded").fetchone()[0]
            return rows
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_store_that_cannot_be_opened_is_said_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    good = write(tmp_path / "good.json", patient(id="p1"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "rofecare.sqlite3").write_bytes(b"not a database, " * 400)

    status, stderr = load(capsys, good, "--data-dir", data, "--jobs", jobs)
    assert status == 1
    assert "Cannot open the store" in stderr and "not a database" in stderr
    assert "Traceback" not in stderr

    assert main(["reindex", "--data-dir", str(data)]) == 1
    assert "Cannot open the store" in capsys.readouterr().err

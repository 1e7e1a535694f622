"""``rofecare reindex``: a SearchParameter added after the data fills in for older resources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.api.conftest import FHIR_JSON, make_client, marital_text_parameter, patient

MARITAL_TEXT = marital_text_parameter()


def found(tmp_path: Path) -> list[str]:
    with make_client(tmp_path) as client:
        bundle = client.get(
            "/fhir/Patient?marital-text=married&_sort=_id&_count=500",
            headers={"Prefer": "handling=strict"},
        ).json()
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def test_reindex_command_indexes_resources_written_before_the_parameter(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        for number in range(120):
            body = patient(id=f"p{number:03d}", maritalStatus={"text": "Married"})
            assert client.put(f"/fhir/Patient/p{number:03d}", json=body).status_code == 201
        # Indexed before the parameter exists (a search applies what waits in the index
        # log); a version still waiting there when it comes is indexed with it.
        assert client.get("/fhir/Patient?_count=1").status_code == 200
        client.put(f"/fhir/SearchParameter/{MARITAL_TEXT['id']}", json=MARITAL_TEXT)
        later = patient(id="later", maritalStatus={"text": "married"})
        client.put("/fhir/Patient/later", json=later, headers=FHIR_JSON)
        client.delete("/fhir/Patient/p000")
    assert found(tmp_path) == ["later"]  # written after the parameter

    result = subprocess.run(
        [sys.executable, "-m", "fhir_server", "reindex", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # 120 Patients and a SearchParameter, and the AuditEvents of the 123 writes
    assert "reindex" in result.stderr and "244/244" in result.stderr  # the progress bar
    assert "Reindexed 244 of 244 resources" in result.stderr
    expected = ["later", *(f"p{number:03d}" for number in range(1, 120))]
    assert found(tmp_path) == expected  # the deleted p000 stays out


def test_reindex_without_a_database_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fhir_server", "reindex", "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "No database" in result.stderr

"""All of ../shared/data/synthea, POSTed unchanged to a real server as Bundles.

The ``conditional/`` patient bundles reference Practitioners, Organizations and Locations
by conditional reference (``Practitioner?identifier=...``), so the two prerequisite batches
(conditional creates with ``ifNoneExist``) go first, as their SOURCE.md says, and the
self-contained bundles last; the patient transactions run four at a time, as partner
systems would send them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.server import start_server

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("synthea")
    server = start_server(directory / "data", directory / "server.log")
    try:
        yield server.base
    finally:
        server.terminate()


def _post(base: str, path: Path) -> tuple[Path, int, list[dict[str, Any]]]:
    response = requests.post(base, data=path.read_bytes(), headers=FHIR_JSON, timeout=300)
    if response.status_code != 200:
        return path, response.status_code, [{"response": {"status": response.text[:600]}}]
    return path, response.status_code, response.json().get("entry", [])


def test_every_synthea_bundle_loads_and_is_searchable(base: str) -> None:
    manifest = json.loads((SYNTHEA / "manifest.json").read_text())
    prerequisites = sorted((SYNTHEA / "conditional" / "prerequisites").glob("*.json"))
    patients = [SYNTHEA / item["path"] for item in manifest if "prerequisites" not in item["path"]]
    expected: Counter[str] = Counter()
    for path in [*prerequisites, *patients]:
        for entry in json.loads(path.read_text())["entry"]:
            expected[entry["resource"]["resourceType"]] += 1

    failures: list[str] = []
    results = [_post(base, path) for path in prerequisites]
    # The self-contained bundles create the same hospitals (same Synthea identifiers) with
    # plain POSTs; loaded first, they would make the conditional references ambiguous (412).
    conditional = [path for path in patients if path.parent.name == "conditional"]
    selfcontained = [path for path in patients if path not in conditional]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for group in (conditional, selfcontained):
            results += list(pool.map(lambda path: _post(base, path), group))
    for path, status, entries in results:
        bad = [e["response"] for e in entries if e["response"]["status"][:3] not in ("200", "201")]
        if status != 200 or bad:
            failures.append(f"{path.name}: HTTP {status}, {bad[:2]}")
    assert failures == [], "\n".join(failures)

    for resource_type, count in sorted(expected.items()):
        answer = requests.get(f"{base}/{resource_type}?_summary=count", timeout=30).json()
        assert answer["total"] == count, resource_type

    # Search finds a loaded patient's data through the rewritten references.
    sample = next(item for item in manifest if item.get("birthDate"))
    patient = requests.get(
        f"{base}/Patient", params={"birthdate": sample["birthDate"], "gender": sample["gender"]},
        timeout=30,
    ).json()["entry"][0]["resource"]  # fmt: skip
    observations = requests.get(
        f"{base}/Observation",
        params={"subject": f"Patient/{patient['id']}", "_summary": "count"},
        timeout=30,
    ).json()
    assert observations["total"] >= sample["resource_counts"].get("Observation", 0)


@pytest.mark.e2e
def test_everything_returns_a_loaded_patients_whole_bundle(fhir_base: str) -> None:
    """A self-contained Synthea bundle POSTed as a transaction, then Patient/$everything read
    over pages of 20: its patient compartment as matches, each once, and the Organization and
    Practitioner its encounters and claims reference as includes; nothing else."""
    path = SYNTHEA / "selfcontained" / "Luigi_Wiegand_e27d88b0-c5e5-4042-ad49-184f6a900ee3.json"
    response = requests.post(fhir_base, data=path.read_bytes(), headers=FHIR_JSON, timeout=120)
    assert response.status_code == 200, response.text[:600]
    created = {
        tuple(entry["response"]["location"].split("/")[:2]) for entry in response.json()["entry"]
    }
    patient_id = next(rid for kind, rid in created if kind == "Patient")
    context = {key for key in created if key[0] in ("Organization", "Practitioner")}
    assert len(created) == 61 and len(context) == 2

    matches: list[tuple[str, ...]] = []
    includes: set[tuple[str, ...]] = set()
    url: str | None = f"{fhir_base}/Patient/{patient_id}/$everything?_count=20"
    while url is not None:
        page = requests.get(url, timeout=30).json()
        assert page["resourceType"] == "Bundle" and page["total"] == len(created) - len(context)
        for entry in page.get("entry", []):
            key = (entry["resource"]["resourceType"], entry["resource"]["id"])
            assert entry["fullUrl"] == f"{fhir_base}/{key[0]}/{key[1]}"
            if entry["search"]["mode"] == "match":
                matches.append(key)
            else:
                includes.add(key)
        url = next((ln["url"] for ln in page["link"] if ln["relation"] == "next"), None)
    assert matches[0] == ("Patient", patient_id)
    assert len(matches) == len(set(matches)) and set(matches) == created - context
    assert includes == context

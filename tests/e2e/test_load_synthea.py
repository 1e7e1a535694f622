"""``rofecare load`` on all of ../shared/data/synthea, as a user would run it.

No order is given: the folder is walked in sorted order, so the ``conditional/`` patients
come before the ``prerequisites/`` they reference and wait for them (their folder's retry),
and the ``selfcontained/`` bundles, which create the same hospitals again, come after.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.api.conftest import make_client

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"


def _run(data: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fhir_server", "load", str(SYNTHEA), "--data-dir", str(data)]
    # Synthea is US synthetic data (SNOMED diagnoses, lab results without a performer), not
    # the hospital's: loaded as a partner's archive, with every profile and rule checked and
    # what breaks them reported, not refused (test_load_under_profiles below shows what
    # enforcement makes of it).
    environment = {**os.environ, "ROFECARE_PROFILE_VALIDATION": "warn"}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)


def _counts(stderr: str) -> dict[str, int]:
    found = re.search(
        r"created ([\d,]+), updated ([\d,]+), unchanged ([\d,]+), "
        r"skipped ([\d,]+) \(loaded before\), failed ([\d,]+)",
        stderr,
    )
    assert found is not None, stderr
    names = ("created", "updated", "unchanged", "skipped", "failed")
    return {n: int(v.replace(",", "")) for n, v in zip(names, found.groups(), strict=True)}


@pytest.mark.slow
def test_rofecare_load_loads_all_of_synthea_once(tmp_path: Path) -> None:
    manifest = json.loads((SYNTHEA / "manifest.json").read_text())
    expected: Counter[str] = Counter()
    for item in manifest:  # the patients and the two prerequisite batches
        expected.update(item["resource_counts"])
    total = sum(expected.values())
    data = tmp_path / "data"

    first = _run(data)

    assert first.returncode == 0, first.stderr[-3000:]
    assert _counts(first.stderr) == dict(created=total, updated=0, unchanged=0, skipped=0, failed=0)
    report = re.search(r"report: (\S+) \((\d+) failures, ([\d,]+) warnings\)", first.stderr)
    assert report is not None and report.group(2) == "0"
    lines = [json.loads(line) for line in Path(report.group(1)).read_text().splitlines()]
    assert {line["severity"] for line in lines} == {"warning"}
    assert len(lines) == int(report.group(3).replace(",", "")) > 0
    broken = Counter(key for line in lines for key in line["keys"])
    assert broken["min:Condition.code.coding:icd10"] > 0 and broken["rof-lr-1"] > 0
    with make_client(data) as client:
        for resource_type, count in sorted(expected.items()):
            answer = client.get(f"/fhir/{resource_type}?_summary=count").json()
            assert answer["total"] == count, resource_type

    second = _run(data)

    assert second.returncode == 0, second.stderr[-3000:]
    assert _counts(second.stderr) == dict(
        created=0, updated=0, unchanged=0, skipped=total, failed=0
    )


def test_load_under_profiles_refuses_what_breaks_the_hospital_s_rules(tmp_path: Path) -> None:
    """The same archive with the profiles enforced (the server's default): the whole
    transaction of a patient whose diagnoses are not ICD-10 is refused, and the report
    names the rules it broke."""
    bundle = sorted((SYNTHEA / "selfcontained").glob("*.json"))[0]
    command = [sys.executable, "-m", "fhir_server", "load", str(bundle)]
    command += ["--data-dir", str(tmp_path / "data")]
    environment = {**os.environ, "ROFECARE_PROFILE_VALIDATION": "enforce"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode != 0
    counts = _counts(done.stderr)
    assert counts["created"] == 0 and counts["failed"] > 0
    report = re.search(r"report: (\S+) \((\d+) failures", done.stderr)
    assert report is not None
    text = Path(report.group(1)).read_text()
    assert "rofecare-1801" in text or "rofecare-1802" in text
    assert "Condition.code.coding:icd10" in text

"""The report of ``rofecare load``: one JSON object per failure, and per resource loaded
with warnings, written as it happens.

Each line says where it is in the input, in the input's own terms (the file, and its
``Bundle.entry`` index or NDJSON line, not the index in the Bundle the loader built), and
what the server answered: ``severity`` (``error``: not loaded; ``warning``: loaded), HTTP
status, OperationOutcome issue type, Rofecare code, diagnostics and FHIRPath expressions,
as ``POST /fhir`` would have answered them. A warning line also lists the ``keys`` of every
rule the resource breaks: under ``ROFECARE_PROFILE_VALIDATION=warn`` that is the list of
what to clean in a migrated archive, which the server log only tells one line at a time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from fhir_server.errors import FhirError, Issue
from fhir_server.services.load_sources import Unit

ENTRY_PATH = re.compile(r"Bundle\.entry\[(\d+)\]")


class Report:
    """One JSON object per line, written as it happens (flushed each time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(record).decode() + "\n")

    def close(self) -> None:
        self._file.close()


def failure_record(
    unit: Unit, indices: tuple[int, ...], entry: int | None, error: FhirError
) -> dict[str, Any]:
    """A report line: where the failing entry is in its file, and the OperationOutcome."""
    return _located(unit, indices, entry, outcome_fields(error))


def warning_record(
    unit: Unit, indices: tuple[int, ...], entry: int, status: int, warnings: Sequence[Issue]
) -> dict[str, Any]:
    """A report line: where an entry loaded with ``warnings`` is in its file, and what they
    say (the first in full, the keys and paths of all)."""
    # What the resource breaks before what could not be checked (a claimed US Core profile
    # this server does not know, 1805, which most Synthea resources carry besides).
    first = next((issue for issue in warnings if issue.code != "not-supported"), warnings[0])
    keys = {issue.key or issue.rofecare_code or issue.code for issue in warnings}
    outcome = {
        "severity": "warning",
        "status": status,
        "code": first.rofecare_code,
        "issue": first.code,
        "keys": sorted(keys),
        "diagnostics": first.diagnostics,
        "expression": list(dict.fromkeys(path for each in warnings for path in each.expression)),
    }
    return _located(unit, indices, entry, outcome)


def _located(
    unit: Unit, indices: tuple[int, ...], entry: int | None, outcome: dict[str, Any]
) -> dict[str, Any]:
    record: dict[str, Any] = {"file": unit.source}
    if entry is None:
        return {**record, **outcome}
    index = indices[entry]
    position = unit.positions[index]
    record["line" if unit.by_line else "entry"] = position
    resource = unit.entries[index].get("resource") if index < len(unit.entries) else None
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        name = resource["resourceType"]
        record["resource"] = f"{name}/{resource['id']}" if "id" in resource else name
    kind = str(record.get("resource", "")).split("/")[0]

    def relocate(text: str, *, expression: bool) -> str:
        """``Bundle.entry[i]`` of the Bundle processed, as the file's entry or line."""
        found = ENTRY_PATH.match(text)
        if found is None or int(found.group(1)) != entry:
            return text
        rest = text[found.end() :]
        if not unit.by_line:
            return f"Bundle.entry[{position}]{rest}"
        if not expression:
            return f"line {position}{rest}"
        return kind + rest.removeprefix(".resource") if kind else text

    outcome = dict(outcome)
    outcome["diagnostics"] = relocate(outcome["diagnostics"], expression=False)
    outcome["expression"] = [relocate(path, expression=True) for path in outcome["expression"]]
    return {**record, **outcome}


def outcome_fields(error: FhirError) -> dict[str, Any]:
    """The OperationOutcome in brief: its first error, and the paths of all its issues (a
    resource breaking the schema in three places names the three). The first error, not the
    first issue: a Synthea Condition refused by a hospital rule also carries the warning
    that its US Core profile is unknown, and the report named the warning as the reason."""
    issue = next(
        (each for each in error.issues if each.severity in ("fatal", "error")), error.issues[0]
    )
    paths = [path for each in error.issues for path in each.expression]
    return {
        "severity": "error",
        "status": error.status,
        "code": issue.rofecare_code or error.rofecare_code,
        "issue": issue.code,
        "diagnostics": issue.diagnostics,
        "expression": list(dict.fromkeys(paths)),
    }

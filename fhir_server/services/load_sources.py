"""What ``rofecare load`` reads: FHIR JSON files, NDJSON files and folders of them.

Every input becomes a stream of **units**: Bundles that ``BundleService`` can process
exactly as if they had been POSTed to the FHIR base (https://hl7.org/fhir/R4/http.html#transaction),
each with a content key for the resume ledger and, for each entry, its place in the file
(``Bundle.entry`` index or NDJSON line) so that a failure can be reported where it is.

- A ``transaction`` or ``batch`` Bundle file is one unit, processed unchanged.
- A ``collection`` or ``searchset`` Bundle loads its entries' resources; a ``document`` or
  ``message`` Bundle is itself the resource to keep (that is how R4 stores them). A single
  resource file loads that resource. NDJSON (https://hl7.org/fhir/uv/bulkdata/) holds one
  resource per line. All of these become ``batch`` units whose entries are PUT ``Type/id``
  when the resource has an id (the ids other resources of the data set reference, and
  idempotent when loaded twice) and POST otherwise.
- Folders are walked recursively in a deterministic order (names sorted by code point);
  each folder's end is marked so that the loader can retry, within that folder, the bundles
  that waited for resources loaded later in it.

Bytes are hashed before they are parsed: a JSON file's key is the sha256 of its bytes, an
NDJSON batch's the sha256 of its lines (and of where they start). Keys name content, not
paths, so a moved or renamed file is still recognized as loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_server.errors import BadRequest, FhirError, NotFound, PayloadTooLarge

JSON_SUFFIXES = (".json", ".json.gz")
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
# Resources per unit made of NDJSON lines or collection entries: large enough to share group
# commits (the batch runs its entries 16 at a time), small enough to lose little on a crash.
BATCH_SIZE = 500
EXECUTED = ("transaction", "batch")
ENTRIES_LOADED = ("collection", "searchset")
KEPT_WHOLE = ("document", "message")
READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class Unit:
    """One Bundle to process, as read from ``source``.

    ``positions[i]`` is where ``bundle.entry[i]`` came from: its index in the file's
    ``Bundle.entry`` or, when ``by_line``, its NDJSON line (1-based)."""

    source: str
    number: int  # the unit's rank within its file
    key: str
    bundle: dict[str, Any]
    positions: tuple[int, ...]
    by_line: bool = False

    @property
    def kind(self) -> str:
        return str(self.bundle.get("type"))

    @property
    def entries(self) -> list[Any]:
        entries = self.bundle.get("entry")
        return entries if isinstance(entries, list) else []

    def select(self, selection: Sequence[int] | None) -> dict[str, Any]:
        """The Bundle restricted to the entries ``selection`` names (None: all of it)."""
        if selection is None:
            return self.bundle
        entries = self.entries
        return {**self.bundle, "entry": [entries[index] for index in selection]}


@dataclass(frozen=True)
class Fault:
    """A file, or an NDJSON line, that holds nothing loadable: a reported failure."""

    source: str
    error: FhirError
    line: int | None = None


@dataclass(frozen=True)
class Ignored:
    """Valid JSON that is no FHIR resource (``manifest.json``), met while walking a folder."""

    source: str


@dataclass(frozen=True)
class FolderEnd:
    """Everything under ``folder`` has been read."""

    folder: str


Item = Unit | Fault | Ignored | FolderEnd


@dataclass(frozen=True)
class Walk:
    """Reading options shared by the walk and by the re-reading of a deferred unit."""

    max_bytes: int
    exclude: Collection[Path] = ()

    def items(self, paths: Sequence[Path]) -> Iterator[Item]:
        """The units of every path, in the order given; folders in sorted order."""
        for found in self._files(paths):
            if isinstance(found, tuple):
                yield from self.file_items(*found)
            else:
                yield found

    def count(self, paths: Sequence[Path]) -> int:
        """How many resources (and faults) ``items`` will meet: the progress bar's total.

        NDJSON lines are counted, not parsed; JSON files are parsed (orjson reads a 1 MB
        Bundle in about 2 ms), the price of a total known before loading starts."""
        total = 0
        for found in self._files(paths):
            if isinstance(found, Fault):
                total += 1
            elif isinstance(found, tuple):
                total += self._count_file(*found)
        return total

    def file_items(self, path: Path, explicit: bool) -> Iterator[Unit | Fault | Ignored]:
        """The units of one file. A file named on the command line must hold FHIR data;
        one met in a folder may be something else (a manifest) and is then ignored."""
        if path.name.endswith(NDJSON_SUFFIXES):
            yield from _ndjson_units(path)
            return
        try:
            raw = _read_limited(path, self.max_bytes)
        except FhirError as error:
            yield Fault(str(path), error)
            return
        except READ_ERRORS as error:
            yield Fault(str(path), _unreadable(path, error))
            return
        yield from _json_units(str(path), raw, explicit=explicit)

    def unit(self, source: str, number: int) -> Unit | Fault:
        """Unit ``number`` of ``source`` read again (a deferred bundle is retried from disk,
        so that waiting bundles cost no memory)."""
        for item in self.file_items(Path(source), explicit=True):
            if isinstance(item, Unit) and item.number == number:
                return item
            if isinstance(item, Fault) and item.line is None:
                return item
        return Fault(source, _unreadable(Path(source), OSError("the file changed")))

    def _files(self, paths: Sequence[Path]) -> Iterator[tuple[Path, bool] | Fault | FolderEnd]:
        """(file, named explicitly) in load order, and the end of each folder."""
        seen: set[Path] = set()
        excluded = {path.resolve() for path in self.exclude}
        for path in paths:
            if path.is_dir():
                yield from self._folder(path, seen, excluded)
            elif path.exists():
                if path.resolve() not in excluded:
                    yield path, True
            else:
                error = NotFound(f"No such file or folder: {path}", rofecare_code="rofecare-2601")
                yield Fault(str(path), error)

    def _folder(
        self, folder: Path, seen: set[Path], excluded: set[Path]
    ) -> Iterator[tuple[Path, bool] | Fault | FolderEnd]:
        real = folder.resolve()
        if real in seen or real in excluded:  # a symlink loop, or the data directory
            return
        seen.add(real)
        try:
            names = sorted(os.listdir(folder))
        except OSError as error:
            yield Fault(str(folder), _unreadable(folder, error))
            return
        for name in names:
            if name.startswith("."):
                continue
            path = folder / name
            if path.is_dir():
                yield from self._folder(path, seen, excluded)
            elif (
                name.endswith(JSON_SUFFIXES + NDJSON_SUFFIXES)
                and path.is_file()
                and path.resolve() not in excluded
            ):
                yield path, False
        yield FolderEnd(str(folder))

    def _count_file(self, path: Path, explicit: bool) -> int:
        if path.name.endswith(NDJSON_SUFFIXES):
            try:
                with _open(path) as stream:
                    return sum(1 for line in stream if line.strip())
            except READ_ERRORS:
                return 1
        count = 0
        for item in self.file_items(path, explicit):
            count += len(item.positions) if isinstance(item, Unit) else int(isinstance(item, Fault))
        return count


# -- JSON ----------------------------------------------------------------------------------------


def _json_units(source: str, raw: bytes, *, explicit: bool) -> Iterator[Unit | Fault | Ignored]:
    key = hashlib.sha256(raw).hexdigest()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        yield Fault(source, BadRequest(f"Not valid JSON: {error}", rofecare_code="rofecare-1506"))
        return
    if not _is_resource(document):
        if explicit:
            yield Fault(source, _not_a_resource("The file"))
        else:
            yield Ignored(source)
        return
    if document["resourceType"] != "Bundle" or document.get("type") in KEPT_WHOLE:
        yield Unit(source, 0, key, _batch([document]), (0,))
        return
    kind = document.get("type")
    if kind in EXECUTED:
        entries = document.get("entry", [])
        count = len(entries) if isinstance(entries, list) else 0
        yield Unit(source, 0, key, document, tuple(range(count)))
        return
    if kind not in ENTRIES_LOADED:
        yield Fault(
            source,
            BadRequest(
                f"A {str(kind)[:40]!r} Bundle is not loaded: give a transaction, batch, "
                "collection, searchset, document or message Bundle, or NDJSON",
                expression="Bundle.type",
                rofecare_code="rofecare-2604",
            ),
        )
        return
    chosen = [
        (index, entry["resource"])
        for index, entry in enumerate(_list(document.get("entry")))
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and _dict(entry.get("search")).get("mode") != "outcome"
    ]
    for number, start in enumerate(range(0, len(chosen), BATCH_SIZE)):
        part = chosen[start : start + BATCH_SIZE]
        unit_key = key if len(chosen) <= BATCH_SIZE else f"{key}/{number}"
        positions = tuple(index for index, _ in part)
        yield Unit(source, number, unit_key, _batch([r for _, r in part]), positions)


# -- NDJSON --------------------------------------------------------------------------------------


def _ndjson_units(path: Path) -> Iterator[Unit | Fault]:
    source = str(path)
    lines: list[tuple[int, bytes]] = []
    number = 0
    line_number = 0
    try:
        with _open(path) as stream:
            for line_number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                lines.append((line_number, line))
                if len(lines) == BATCH_SIZE:
                    yield from _ndjson_batch(source, number, lines)
                    number += 1
                    lines = []
    except READ_ERRORS as error:
        yield from _ndjson_batch(source, number, lines)
        yield Fault(source, _unreadable(path, error), line=line_number + 1)
        return
    yield from _ndjson_batch(source, number, lines)


def _ndjson_batch(
    source: str, number: int, lines: list[tuple[int, bytes]]
) -> Iterator[Unit | Fault]:
    if not lines:
        return
    digest = hashlib.sha256(f"{lines[0][0]}\n".encode())
    resources: list[Any] = []
    positions: list[int] = []
    for line_number, line in lines:
        digest.update(line)
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            yield Fault(
                source,
                BadRequest(f"Not valid JSON: {error}", rofecare_code="rofecare-1506"),
                line=line_number,
            )
            continue
        if not _is_resource(resource):
            yield Fault(source, _not_a_resource("The line"), line=line_number)
            continue
        resources.append(resource)
        positions.append(line_number)
    if resources:
        yield Unit(source, number, digest.hexdigest(), _batch(resources), tuple(positions), True)


# -- helpers -------------------------------------------------------------------------------------


def _batch(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch writing each resource: PUT by id (the id the data set's references use),
    POST when it has none."""
    entries = []
    for resource in resources:
        resource_type = resource["resourceType"]
        if "id" in resource:
            request = {"method": "PUT", "url": f"{resource_type}/{resource['id']}"}
        else:
            request = {"method": "POST", "url": resource_type}
        entries.append({"resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def _is_resource(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("resourceType"), str)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _open(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _read_limited(path: Path, max_bytes: int) -> bytes:
    """The file's (decompressed) bytes; 413 past ``max_bytes``, as ``POST /fhir`` answers."""
    with _open(path) as stream:
        raw = stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"The file holds more than {max_bytes} bytes (ROFECARE_MAX_BUNDLE_BYTES); "
            "split it, or give the resources as NDJSON",
            rofecare_code="rofecare-1507",
        )
    return raw


def _unreadable(path: Path, error: BaseException) -> FhirError:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return BadRequest(f"Cannot read {path}: {reason}", rofecare_code="rofecare-2602")


def _not_a_resource(what: str) -> FhirError:
    return BadRequest(
        f"{what} holds JSON that is not a FHIR resource (no resourceType)",
        expression="resourceType",
        rofecare_code="rofecare-2603",
    )

"""The search benchmark's data: 100,000+ Synthea resources, ``python benchmarks/search_data.py``.

Why Synthea, replicated: search cost depends on how many rows an index holds and how the
values spread, so the benchmark needs a realistic mix (many Observations per Patient, a few
common LOINC codes, decades of dates, references everywhere) at the size the targets name.
The 30 self-contained bundles of ../shared/data/synthea/selfcontained/ hold ~7,000
resources; each copy of a bundle gets fresh ids and its internal references rewritten, so
copies are separate patients with their own Observations. The ``conditional/`` bundles are
not used: their references are conditional (``Practitioner?identifier=...``) and need the
prerequisite batches resolved first, which adds nothing for search.

Why in process, through ``ResourceService.update``: the server has no transaction Bundle
yet, and 100,000 HTTP round trips would measure HTTP rather than build a dataset. The store
and service come from ``build_app`` (the composition root), so every resource takes the
real write path, validation and search indexing included, with client ids (update-as-create,
https://hl7.org/fhir/R4/http.html#upsert). Durability is relaxed (``synchronous=OFF`` when
Settings accept it, else ``NORMAL``) for the load only; the queries never depend on it.

A marker file in the data directory records what was loaded, the expected result sizes
and the ids the queries use; a later run with the same request reuses the data.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time
import unicodedata
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from fhir_server.app import build_app
from fhir_server.config import Settings
from fhir_server.services.resources import ResourceService
from fhir_server.storage.sqlite.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea" / "selfcontained"
DEFAULT_DATA_DIR = Path("/tmp/rofecare-search-bench")
MARKER = "search-benchmark.json"
DEFAULT_RESOURCES = 100_000
DEFAULT_SMITH_SHARE = 0.04  # of patient copies renamed Smith (3/4) or Smithson (1/4)
SEED = 20240610
CHUNK = 64  # writes in flight: keeps the writer thread busy while others validate
ID_NAMESPACE = uuid.UUID("6f1d7c2e-3b8a-4f0e-9a51-2c4d8e7b9f10")
LOINC = "http://loinc.org"
# The date-range query of the benchmark: Observation?date=ge2020-01-01&date=lt2021-01-01
DATE_RANGE = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))
NAME_PREFIX, CHAINED_NAME = "smi", "smith"
# What decides how resources are indexed and stored: a dataset written by other code may
# lack index rows the queries need, so a change here means loading again.
FINGERPRINTED = (
    "fhir_server/search",
    "fhir_server/storage",
    "fhir_server/definitions/data/search-parameters.json",
)

Entry = tuple[str, str, dict[str, Any]]  # resourceType, fullUrl, resource


# -- what was loaded -----------------------------------------------------------------------------


@dataclass
class Dataset:
    """The marker file: the request, what it produced, and facts the queries are chosen from."""

    requested: int
    resources: int
    counts: dict[str, int]
    source: str
    seed: int
    smith_share: float
    schema_version: int
    code_fingerprint: str
    synchronous: str
    load_seconds: float
    top_code: dict[str, Any]  # system, code, display, observations
    busiest_patient: str
    busiest_patient_observations: int
    median_patient: str
    median_patient_observations: int
    patients_matching_name_prefix: int  # Patient?name=smi
    patients_matching_chained_name: int  # name=smith
    observations_of_chained_name: int  # Observation?subject:Patient.name=smith
    observations_in_date_range: int  # Observation?date=ge2020-01-01&date=lt2021-01-01
    observation_first: str
    observation_last: str
    observations_by_year: dict[str, int]
    neutralized_references: int

    @property
    def load_rate(self) -> float:
        return self.resources / self.load_seconds if self.load_seconds else 0.0

    def same_request(self, requested: int, source: Path, smith_share: float) -> bool:
        return (
            self.requested == requested
            and self.source == str(source)
            and self.seed == SEED
            and self.smith_share == smith_share
            and self.schema_version == SCHEMA_VERSION
            and self.code_fingerprint == code_fingerprint()
        )


@dataclass
class Tally:
    """Counts kept while loading, so expected result sizes are exact for the stored data."""

    counts: Counter[str] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    displays: dict[tuple[str, str], str] = field(default_factory=dict)
    observations_by_patient: Counter[str] = field(default_factory=Counter)
    patient_names: dict[str, list[str]] = field(default_factory=dict)
    years: Counter[str] = field(default_factory=Counter)
    in_date_range: int = 0
    first: datetime | None = None
    last: datetime | None = None
    neutralized: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, resource_type: str, resource: dict[str, Any]) -> None:
        self.counts[resource_type] += 1
        if resource_type == "Patient":
            self.patient_names[resource["id"]] = name_parts(resource)
        elif resource_type == "Observation":
            self._observation(resource)

    def _observation(self, resource: dict[str, Any]) -> None:
        for coding in resource.get("code", {}).get("coding", []):
            if coding.get("system") == LOINC and "code" in coding:
                key = (LOINC, coding["code"])
                self.codes[key] += 1
                self.displays.setdefault(key, coding.get("display", ""))
        subject = resource.get("subject", {}).get("reference", "")
        if subject.startswith("Patient/"):
            self.observations_by_patient[subject.removeprefix("Patient/")] += 1
        moment = effective(resource)
        if moment is None:
            return
        self.years[str(moment.year)] += 1
        self.in_date_range += DATE_RANGE[0] <= moment < DATE_RANGE[1]
        self.first = moment if self.first is None else min(self.first, moment)
        self.last = moment if self.last is None else max(self.last, moment)


def name_parts(patient: dict[str, Any]) -> list[str]:
    """Every part of every name, folded as FHIR string search folds them (case, accents)."""
    parts: list[str] = []
    for name in patient.get("name", []):
        parts += [name[key] for key in ("family", "text") if isinstance(name.get(key), str)]
        for key in ("given", "prefix", "suffix"):
            parts += [part for part in name.get(key, []) if isinstance(part, str)]
    return [fold(part) for part in parts]


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def effective(observation: dict[str, Any]) -> datetime | None:
    """Observation.effective[x] as a UTC instant (the start of a period); None if absent."""
    value = observation.get("effectiveDateTime") or observation.get("effectiveInstant")
    if value is None:
        value = observation.get("effectivePeriod", {}).get("start")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None  # a partial date (2020, 2020-05): not in the Synthea data
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- copies of the Synthea bundles ---------------------------------------------------------------


def read_bundles(folder: Path) -> list[list[Entry]]:
    bundles: list[list[Entry]] = []
    for path in sorted(folder.glob("*.json")):
        bundle = json.loads(path.read_text())
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            continue  # manifest.json and friends
        entries = [
            (entry["resource"]["resourceType"], entry.get("fullUrl", ""), entry["resource"])
            for entry in bundle.get("entry", [])
            if isinstance(entry.get("resource"), dict)
        ]
        if entries:
            bundles.append(entries)
    if not bundles:
        raise SystemExit(f"no FHIR Bundles in {folder}")
    return bundles


def replicate(
    bundle: list[Entry], copy: int, index: int, smith_share: float, tally: Tally
) -> list[Entry]:
    """Copy ``copy`` of bundle ``index``: fresh ids, references into the bundle rewritten.

    Ids are derived from (copy, bundle, fullUrl) so they are stable across runs and unique
    even where two bundles share an Organization id. A reference that cannot be resolved
    inside the bundle (``urn:uuid:`` of another bundle, a conditional ``Type?query``) is
    dropped, keeping the Reference's other elements; none occurs in the self-contained set.
    """
    links: dict[str, str] = {}
    ids: list[str] = []
    for resource_type, full_url, resource in bundle:
        new = str(uuid.uuid5(ID_NAMESPACE, f"{copy}/{index}/{full_url or resource.get('id')}"))
        ids.append(new)
        if full_url:
            links[full_url] = f"{resource_type}/{new}"
        if "id" in resource:
            links[f"{resource_type}/{resource['id']}"] = f"{resource_type}/{new}"
    rng = random.Random(f"{SEED}/{copy}/{index}")
    copies: list[Entry] = []
    for (resource_type, _, resource), new in zip(bundle, ids, strict=True):
        body = _rewrite(resource, links, tally)
        body["id"] = new
        if resource_type == "Patient":
            _rename(body, rng, smith_share)
        copies.append((resource_type, new, body))
    return copies


def _rewrite(node: Any, links: dict[str, str], tally: Tally) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, links, tally) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    dropped = False
    for key, value in node.items():
        if key == "reference" and isinstance(value, str):
            if value in links:
                out[key] = links[value]
            elif value.startswith("urn:") or "?" in value:
                tally.neutralized += 1
                dropped = True
            else:
                out[key] = value  # contained (#id), or a literal reference left as it is
        else:
            out[key] = _rewrite(value, links, tally)
    if dropped and not out:
        out["display"] = "reference not loaded by the search benchmark"
    return out


def _rename(patient: dict[str, Any], rng: random.Random, smith_share: float) -> None:
    """Make a deterministic share of patients Smith or Smithson, so ``name=smi`` finds some."""
    draw = rng.random()
    if draw >= smith_share:
        return
    family = "Smith" if draw < smith_share * 0.75 else "Smithson"
    for name in patient.get("name", []):
        if name.get("use") != "maiden":
            name["family"] = family


# -- loading -------------------------------------------------------------------------------------


def settings_for(data_dir: Path) -> Settings:
    """Loading settings: durability relaxed (OFF if Settings accept it), search indexing on,
    and the Rofecare profiles and rules off as in the server the queries run on (ENGINE_ONLY:
    Synthea's copies are not Rofecare's patients)."""
    chosen: dict[str, Any] = {
        "data_dir": data_dir,
        "store": "sqlite",
        "search_indexing": True,
        "profile_validation": "off",
    }
    try:
        return Settings(**(chosen | {"sqlite_synchronous": "OFF"}))
    except ValidationError:  # Settings that only know FULL and NORMAL
        return Settings(**(chosen | {"sqlite_synchronous": "NORMAL"}))


async def load(
    data_dir: Path, requested: int, source: Path, smith_share: float
) -> tuple[Tally, float, str]:
    """Write whole bundle copies until ``requested`` resources; (tally, seconds, synchronous)."""
    bundles = read_bundles(source)
    settings = settings_for(data_dir)
    app = build_app(settings)
    tally = Tally()
    async with app.router.lifespan_context(app):
        service = cast(ResourceService, app.state.service)
        started = time.monotonic()
        reported = 0
        copy = 0
        while tally.total < requested:
            for index, bundle in enumerate(bundles):
                if tally.total >= requested:
                    break
                entries = replicate(bundle, copy, index, smith_share, tally)
                for start in range(0, len(entries), CHUNK):
                    await _write(service, entries[start : start + CHUNK])
                for resource_type, _, body in entries:
                    tally.add(resource_type, body)
                if tally.total - reported >= 10_000:
                    reported = tally.total
                    rate = tally.total / (time.monotonic() - started)
                    print(f"  {tally.total:,} resources, {rate:,.0f}/s", flush=True)
            copy += 1
        seconds = time.monotonic() - started
    return tally, seconds, settings.sqlite_synchronous


async def _write(service: ResourceService, entries: list[Entry]) -> None:
    results = await asyncio.gather(*(service.update(t, i, body) for t, i, body in entries))
    for (resource_type, resource_id, _), result in zip(entries, results, strict=True):
        if not result.created:  # an id collision would silently shrink the dataset
            raise SystemExit(f"{resource_type}/{resource_id} existed already: ids collide")


def summarise(
    tally: Tally, requested: int, source: Path, smith_share: float, seconds: float, sync: str
) -> Dataset:
    by_patient = tally.observations_by_patient
    if not tally.codes or not by_patient:
        raise SystemExit("the source holds no coded Observations of Patients")
    (system, code), observations = tally.codes.most_common(1)[0]
    ranked = by_patient.most_common()
    busiest, busiest_count = ranked[0]
    median, median_count = ranked[len(ranked) // 2]
    chained = {p for p, parts in tally.patient_names.items() if _matches(parts, CHAINED_NAME)}
    return Dataset(
        requested=requested,
        resources=tally.total,
        counts=dict(tally.counts.most_common()),
        source=str(source),
        seed=SEED,
        smith_share=smith_share,
        schema_version=SCHEMA_VERSION,
        code_fingerprint=code_fingerprint(),
        synchronous=sync,
        load_seconds=round(seconds, 2),
        top_code={
            "system": system,
            "code": code,
            "display": tally.displays.get((system, code), ""),
            "observations": observations,
        },
        busiest_patient=busiest,
        busiest_patient_observations=busiest_count,
        median_patient=median,
        median_patient_observations=median_count,
        patients_matching_name_prefix=sum(
            _matches(parts, NAME_PREFIX) for parts in tally.patient_names.values()
        ),
        patients_matching_chained_name=len(chained),
        observations_of_chained_name=sum(by_patient[p] for p in chained),
        observations_in_date_range=tally.in_date_range,
        observation_first=tally.first.isoformat() if tally.first else "",
        observation_last=tally.last.isoformat() if tally.last else "",
        observations_by_year=dict(sorted(tally.years.items())),
        neutralized_references=tally.neutralized,
    )


def _matches(parts: list[str], prefix: str) -> bool:
    return any(part.startswith(prefix) for part in parts)


def code_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        top = ROOT / name
        for path in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


# -- the cache -----------------------------------------------------------------------------------


def ensure(
    data_dir: Path,
    requested: int = DEFAULT_RESOURCES,
    source: Path = SYNTHEA,
    smith_share: float = DEFAULT_SMITH_SHARE,
    reload: bool = False,
) -> Dataset:
    """The dataset in ``data_dir``, loaded unless the marker says it is there already."""
    marker = data_dir / MARKER
    if marker.exists() and not reload:
        dataset = Dataset(**json.loads(marker.read_text()))
        if dataset.same_request(requested, source, smith_share):
            print(f"reusing the dataset in {data_dir} ({dataset.resources:,} resources)")
            return dataset
        print(
            f"the dataset in {data_dir} was loaded for another request or by other"
            " search/storage code; loading again"
        )
    _remove_store(data_dir)
    print(f"loading {requested:,}+ resources from {source} into {data_dir} ...", flush=True)
    tally, seconds, sync = asyncio.run(load(data_dir, requested, source, smith_share))
    dataset = summarise(tally, requested, source, smith_share, seconds, sync)
    marker.write_text(json.dumps(asdict(dataset), indent=1) + "\n")
    return dataset


def _remove_store(data_dir: Path) -> None:
    """Delete only what this loader writes; anything else in the directory is left alone."""
    database = settings_for(data_dir).sqlite_path()
    for path in (
        data_dir / MARKER,
        database,
        database.with_name(database.name + "-wal"),
        database.with_name(database.name + "-shm"),
    ):
        path.unlink(missing_ok=True)


def describe(dataset: Dataset) -> str:
    code = dataset.top_code
    counts = ", ".join(f"{t} {n:,}" for t, n in dataset.counts.items())
    years = dataset.observations_by_year
    recent = ", ".join(f"{y}: {n:,}" for y, n in list(years.items())[-6:])
    return "\n".join(
        [
            f"{dataset.resources:,} resources: {counts}",
            f"loaded in {dataset.load_seconds:,.1f} s ({dataset.load_rate:,.0f} resources/s,"
            f" synchronous={dataset.synchronous})",
            f"most common Observation code: {code['system']}|{code['code']} ({code['display']}),"
            f" {code['observations']:,} Observations",
            f"busiest patient: Patient/{dataset.busiest_patient} with"
            f" {dataset.busiest_patient_observations:,} Observations; median patient"
            f" {dataset.median_patient_observations:,}",
            f"Observation dates {dataset.observation_first[:10]} .. {dataset.observation_last[:10]}"
            f"; {dataset.observations_in_date_range:,} in 2020; by year (last six): {recent}",
            f"patients matching name={NAME_PREFIX}: {dataset.patients_matching_name_prefix:,}"
            f" ({dataset.smith_share:.0%} of copies renamed Smith/Smithson); Observations of"
            f" patients named {CHAINED_NAME}*: {dataset.observations_of_chained_name:,}",
            f"references dropped as unresolvable: {dataset.neutralized_references:,}",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resources", type=int, default=DEFAULT_RESOURCES, help="at least this many (100,000)"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="kept between runs")
    parser.add_argument("--reload", action="store_true", help="load again even if cached")
    parser.add_argument("--source", type=Path, default=SYNTHEA, help="folder of Synthea bundles")
    parser.add_argument(
        "--smith-share", type=float, default=DEFAULT_SMITH_SHARE, help="patients renamed Smith*"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.resources < 1 or not 0 <= args.smith_share <= 1:
        parser.error("--resources must be positive and --smith-share within 0..1")
    dataset = ensure(
        args.data_dir, args.resources, args.source.resolve(), args.smith_share, args.reload
    )
    print(describe(dataset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

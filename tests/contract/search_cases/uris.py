"""URI parameters (search.html#uri): exact, case-sensitive matches; :below and :above on URLs.

``:below`` matches the URL itself and everything under it, ``:above`` the URL itself and every
URL it lies under. Fixtures avoid URLs that differ only in a partial path segment (``.../123`` vs
``.../1234`` under ``:above``), where a character-prefix and a path-segment reading disagree.
"""

from __future__ import annotations

from tests.contract.search_cases import SPEC, Resource, SearchCase

URI = f"{SPEC}#uri"
MODIFIERS = f"{SPEC}#modifiers"
ESCAPING = f"{SPEC}#escaping"
MULTI = f"{SPEC}#combining"


def _value_set(id_: str, url: str | None = None, **elements: object) -> Resource:
    value_set: Resource = {"resourceType": "ValueSet", "id": id_, "status": "active"}
    if url is not None:
        value_set["url"] = url
    value_set.update(elements)
    return value_set


def _code_system(id_: str, url: str) -> Resource:
    return {
        "resourceType": "CodeSystem",
        "id": id_,
        "url": url,
        "status": "active",
        "content": "not-present",
    }


VALUE_SETS = (
    _value_set("vs-123", "http://acme.org/fhir/ValueSet/123"),
    _value_set("vs-1234", "http://acme.org/fhir/ValueSet/1234"),
    _value_set("vs-root", "http://acme.org/fhir/ValueSet"),
    _value_set("vs-fhir", "http://acme.org/fhir"),
    _value_set("vs-other", "http://other.org/fhir/ValueSet/123"),
    _value_set("vs-oid", "urn:oid:1.2.3.4.5"),
    _value_set("vs-comma", "http://acme.org/fhir/ValueSet/a,b"),
    _value_set("vs-nourl", name="Unpublished"),
)

CODE_SYSTEMS = (
    _code_system("cs-colors", "http://example.org/cs/colors"),
    _code_system("cs-colors-extended", "http://example.org/cs/colors-extended"),
    _code_system("cs-shapes", "http://example.org/cs/shapes"),
    _code_system("cs-elsewhere", "http://elsewhere.org/cs/colors"),
)

COMPOSED = (
    _value_set(
        "vs-loinc",
        "http://example.org/vs/vitals",
        compose={"include": [{"system": "http://loinc.org"}]},
    ),
    _value_set(
        "vs-snomed",
        "http://example.org/vs/findings",
        compose={"include": [{"system": "http://snomed.info/sct"}]},
    ),
    _value_set(
        "vs-both",
        "http://example.org/vs/mixed",
        compose={"include": [{"system": "http://snomed.info/sct"}, {"system": "http://loinc.org"}]},
    ),
)


def _vs_case(name: str, query: str, expected: tuple[str, ...], note: str) -> SearchCase:
    return SearchCase(name, VALUE_SETS, "ValueSet", query, expected, note=note)


CASES: tuple[SearchCase, ...] = (
    _vs_case(
        "uri-exact",
        "url=http://acme.org/fhir/ValueSet/123",
        ("vs-123",),
        f"a uri matches exactly and entirely: not '.../1234', not another host ({URI})",
    ),
    _vs_case(
        "uri-case-sensitive",
        "url=http://acme.org/fhir/valueset/123",
        (),
        f"uri matches are case sensitive ({URI}, 'precise, case and accent sensitive')",
    ),
    _vs_case(
        "uri-percent-encoded",
        "url=http%3A%2F%2Facme.org%2Ffhir%2FValueSet%2F123",
        ("vs-123",),
        f"a fully percent-encoded URL means the same ({ESCAPING})",
    ),
    _vs_case(
        "uri-urn-oid",
        "url=urn:oid:1.2.3.4.5",
        ("vs-oid",),
        f"searching by an OID ({URI}, fourth example)",
    ),
    _vs_case(
        "uri-or",
        "url=http://acme.org/fhir/ValueSet/123,urn:oid:1.2.3.4.5",
        ("vs-123", "vs-oid"),
        f"OR of URIs ({MULTI}, {ESCAPING})",
    ),
    _vs_case(
        "uri-escaped-comma",
        "url=http://acme.org/fhir/ValueSet/a\\,b",
        ("vs-comma",),
        f"'\\,' keeps a comma inside one URI ({ESCAPING})",
    ),
    _vs_case(
        "uri-below",
        "url:below=http://acme.org/fhir",
        ("vs-123", "vs-1234", "vs-root", "vs-fhir", "vs-comma"),
        f":below matches the URL and every URL under it ({URI}, {MODIFIERS} below)",
    ),
    _vs_case(
        "uri-below-deeper",
        "url:below=http://acme.org/fhir/ValueSet",
        ("vs-123", "vs-1234", "vs-root", "vs-comma"),
        f":below from a deeper path: http://acme.org/fhir is above it, not below ({URI})",
    ),
    _vs_case(
        "uri-above",
        "url:above=http://acme.org/fhir/ValueSet/123/_history/5",
        ("vs-123", "vs-root", "vs-fhir"),
        f":above matches the URLs the value lies under (the spec's _history/5 example); "
        f"'.../1234' and another host do not ({URI}, {MODIFIERS} above)",
    ),
    SearchCase(
        name="uri-codesystem-system-exact",
        fixtures=CODE_SYSTEMS,
        resource_type="CodeSystem",
        query="system=http://example.org/cs/colors",
        expected=("cs-colors",),
        note=f"CodeSystem 'system' (CodeSystem.url) is exact: '-extended' is another URI ({URI})",
    ),
    SearchCase(
        name="uri-codesystem-url-below",
        fixtures=CODE_SYSTEMS,
        resource_type="CodeSystem",
        query="url:below=http://example.org/cs",
        expected=("cs-colors", "cs-colors-extended", "cs-shapes"),
        note=f":below on CodeSystem.url; another host with the same path does not match ({URI})",
    ),
    SearchCase(
        name="uri-repeating-element",
        fixtures=COMPOSED,
        resource_type="ValueSet",
        query="reference=http://loinc.org",
        expected=("vs-loinc", "vs-both"),
        note=f"a uri parameter over a repeating element (compose.include.system) matches any "
        f"repetition ({URI})",
    ),
)

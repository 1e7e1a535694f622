"""SMART App Launch 2.x scopes
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html): parsing of v1 and v2
forms, wildcards, checks, and the grant that narrows a request to what roles permit.
"""

from __future__ import annotations

import pytest

from fhir_server.auth.scopes import (
    InvalidScope,
    ResourceScope,
    ScopeSet,
    UnsupportedScope,
    parse_scope,
)

# (text, canonical v2 form)
VALID = [
    ("user/Patient.cruds", "user/Patient.cruds"),
    ("patient/*.rs", "patient/*.rs"),
    ("system/Observation.s", "system/Observation.s"),
    ("patient/Observation.c", "patient/Observation.c"),
    ("user/Encounter.rus", "user/Encounter.rus"),
    ("user/Encounter.cd", "user/Encounter.cd"),
    ("user/*.cruds", "user/*.cruds"),
    ("user/MedicationRequest.crus", "user/MedicationRequest.crus"),
    # v1 ("Scope Equivalence")
    ("user/Patient.read", "user/Patient.rs"),
    ("user/Patient.write", "user/Patient.cud"),
    ("user/Patient.*", "user/Patient.cruds"),
    ("patient/*.read", "patient/*.rs"),
    ("user/*.*", "user/*.cruds"),
    ("system/*.write", "system/*.cud"),
]

NON_RESOURCE = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "email",
    "launch/Practitioner",
]

# (text, a word the reason must contain)
MALFORMED = [
    ("clinician/Patient.rs", "context"),  # unknown context
    ("Patient/Patient.rs", "context"),
    ("/Patient.rs", "context"),
    ("user/Patient.sr", "order"),  # letters out of order
    ("user/Patient.rr", "order"),  # repeated
    ("user/Patient.rx", "unknown"),  # unknown letter
    ("user/Patient.RS", "unknown"),
    ("user/Patient.readwrite", "unknown"),
    ("user/Patient.", "letters"),  # empty letters
    ("user/Patient", "'.'"),  # missing '.'
    ("user/*", "'.'"),
    ("user/patient.rs", "resource type"),  # lower-case type
    ("user/.rs", "resource type"),
    ("user/Pa-tient.rs", "resource type"),
    ("user/Patient2.rs", "resource type"),
    ("user/" + "P" * 65 + ".rs", "resource type"),
    ("user/Patient.r.s", "unknown"),
    ("user/Patient.rs?", "query"),
    ("", "token"),
    ("user/Patient.rs extra", "token"),
    ('say"hi"', "token"),
]


@pytest.mark.parametrize(("text", "canonical"), VALID)
def test_valid_resource_scopes_parse_to_their_canonical_form(text: str, canonical: str) -> None:
    scope = parse_scope(text)
    assert scope is not None
    assert str(scope) == canonical
    assert parse_scope(canonical) == scope


def test_parsed_fields() -> None:
    assert parse_scope("patient/Observation.rs") == ResourceScope(
        "patient", "Observation", frozenset("rs")
    )


def test_longest_type_name_is_accepted() -> None:
    assert parse_scope("user/" + "P" * 64 + ".r") is not None


@pytest.mark.parametrize(
    ("v1", "v2"),
    [("read", "rs"), ("write", "cud"), ("*", "cruds")],
)
def test_v1_suffixes_equal_their_v2_letters(v1: str, v2: str) -> None:
    for context in ("patient", "user", "system"):
        assert parse_scope(f"{context}/Condition.{v1}") == parse_scope(f"{context}/Condition.{v2}")


@pytest.mark.parametrize("text", NON_RESOURCE)
def test_non_resource_scopes_give_none(text: str) -> None:
    assert parse_scope(text) is None


@pytest.mark.parametrize(("text", "word"), MALFORMED)
def test_malformed_scopes_raise_invalid_scope_naming_it(text: str, word: str) -> None:
    with pytest.raises(InvalidScope) as caught:
        parse_scope(text)
    assert not isinstance(caught.value, UnsupportedScope)
    assert caught.value.scope == text
    assert repr(text) in str(caught.value)
    assert word in caught.value.reason


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.rs?category=laboratory",
        "user/Condition.rs?category=problem-list-item&clinical-status=active",
        "patient/*.rs?_security=N",
    ],
)
def test_granular_scopes_are_unsupported(text: str) -> None:
    with pytest.raises(UnsupportedScope) as caught:
        parse_scope(text)
    assert isinstance(caught.value, InvalidScope)
    assert caught.value.scope == text


def test_a_malformed_granular_scope_is_invalid_not_unsupported() -> None:
    with pytest.raises(InvalidScope) as caught:
        parse_scope("patient/Observation.sr?category=laboratory")
    assert not isinstance(caught.value, UnsupportedScope)


@pytest.mark.parametrize(
    ("context", "resource_type", "letters"),
    [
        ("clinic", "Patient", "r"),
        ("user", "patient", "r"),
        ("user", "Patient", ""),
        ("user", "Patient", "rx"),
    ],
)
def test_resource_scope_refuses_bad_fields(context: str, resource_type: str, letters: str) -> None:
    with pytest.raises(InvalidScope):
        ResourceScope(context, resource_type, frozenset(letters))  # type: ignore[arg-type]


# (scope, resource type, interaction, covered)
COVERS = [
    ("user/Patient.rs", "Patient", "r", True),
    ("user/Patient.rs", "Patient", "s", True),
    ("user/Patient.rs", "Patient", "u", False),
    ("user/Patient.rs", "Observation", "r", False),
    ("patient/*.rs", "Observation", "r", True),
    ("patient/*.rs", "AuditEvent", "s", True),
    ("patient/*.rs", "Observation", "c", False),
    ("user/*.cruds", "Anything", "d", True),
]


@pytest.mark.parametrize(("text", "resource_type", "interaction", "covered"), COVERS)
def test_covers(text: str, resource_type: str, interaction: str, covered: bool) -> None:
    scope = parse_scope(text)
    assert scope is not None
    assert scope.covers(resource_type, interaction) is covered


@pytest.mark.parametrize("interaction", ["read", "x", "", "rs"])
def test_unknown_interaction_is_a_programming_error(interaction: str) -> None:
    scope = parse_scope("user/Patient.rs")
    assert scope is not None
    with pytest.raises(ValueError, match="interaction"):
        scope.covers("Patient", interaction)
    with pytest.raises(ValueError, match="interaction"):
        ScopeSet.parse("user/Patient.rs").allows("Patient", interaction)


def test_scope_set_parse_splits_keeps_other_and_collapses_duplicates() -> None:
    scopes = ScopeSet.parse(
        "openid  fhirUser launch/patient patient/Observation.rs patient/Observation.read openid"
    )
    assert [str(s) for s in scopes.resource_scopes] == ["patient/Observation.rs"]
    assert scopes.other == frozenset({"openid", "fhirUser", "launch/patient"})
    assert scopes.has("openid")
    assert scopes.has("launch/patient")
    assert not scopes.has("offline_access")
    assert not scopes.has("patient/Observation.rs")


def test_scope_set_merges_letters_of_the_same_context_and_type() -> None:
    scopes = ScopeSet.parse("user/Observation.rs user/Observation.cu patient/Observation.d")
    assert str(scopes) == "patient/Observation.d user/Observation.crus"


def test_scope_set_parse_raises_on_the_first_bad_scope() -> None:
    with pytest.raises(InvalidScope) as caught:
        ScopeSet.parse("openid user/Patient.sr user/Patient.xx")
    assert caught.value.scope == "user/Patient.sr"
    with pytest.raises(UnsupportedScope):
        ScopeSet.parse("openid patient/Observation.rs?category=vital-signs")


def test_empty_scope_string_is_the_empty_set() -> None:
    assert ScopeSet.parse("") == ScopeSet()
    assert ScopeSet.parse("   ") == ScopeSet()
    assert str(ScopeSet()) == ""


def test_parse_lenient_drops_and_reports_granular_and_malformed_scopes() -> None:
    scopes, dropped = ScopeSet.parse_lenient(
        "openid patient/Observation.rs?category=laboratory user/Patient.rs "
        "clinician/Patient.rs patient/Condition.sr launch/patient "
        "patient/Observation.rs?category=laboratory"
    )
    assert str(scopes) == "launch/patient openid user/Patient.rs"
    assert dropped == [
        "patient/Observation.rs?category=laboratory",
        "clinician/Patient.rs",
        "patient/Condition.sr",
    ]


def test_parse_lenient_with_nothing_bad_drops_nothing() -> None:
    scopes, dropped = ScopeSet.parse_lenient("openid user/*.rs")
    assert dropped == []
    assert scopes == ScopeSet.parse("openid user/*.rs")


def test_str_is_canonical_sorted_and_stable() -> None:
    a = ScopeSet.parse(
        "user/Patient.read openid patient/*.rs user/Observation.s user/Observation.r"
    )
    b = ScopeSet.parse("user/Observation.rs patient/*.read user/Patient.rs openid openid")
    assert a == b
    assert hash(a) == hash(b)
    assert str(a) == str(b) == "openid patient/*.rs user/Observation.rs user/Patient.rs"
    assert ScopeSet.parse(str(a)) == a


def test_other_refuses_resource_scopes() -> None:
    with pytest.raises(InvalidScope):
        ScopeSet((), frozenset({"user/Patient.rs"}))


def test_allows_and_contexts_for() -> None:
    scopes = ScopeSet.parse("patient/Observation.rs user/Patient.rs system/Patient.s user/*.s")
    assert scopes.allows("Observation", "r")
    assert not scopes.allows("Observation", "c")
    assert scopes.allows("Observation", "s")  # via user/*.s
    assert scopes.allows("Observation", "r", contexts=["patient"])
    assert not scopes.allows("Observation", "r", contexts=["user", "system"])
    assert not scopes.allows("Patient", "r", contexts=["system"])
    assert scopes.allows("Patient", "s", contexts=["system"])

    assert scopes.contexts_for("Observation", "r") == {"patient"}
    assert scopes.contexts_for("Observation", "s") == {"patient", "user"}
    assert scopes.contexts_for("Patient", "s") == {"user", "system"}
    assert scopes.contexts_for("Patient", "d") == frozenset()
    assert scopes.contexts_for("Condition", "s") == {"user"}


def test_union() -> None:
    left = ScopeSet.parse("openid user/Observation.rs")
    right = ScopeSet.parse("fhirUser user/Observation.cu user/Patient.r")
    assert str(left.union(right)) == "fhirUser openid user/Observation.crus user/Patient.r"
    assert left.union(ScopeSet()) == left


# (allowed, requested, granted)
GRANT = [
    # user -> patient narrowing
    ("patient/Patient.rs", "user/Patient.cruds", "patient/Patient.rs"),
    ("user/Patient.rs", "patient/Patient.cruds", "patient/Patient.rs"),
    ("user/Patient.cruds", "user/Patient.rs", "user/Patient.rs"),
    ("patient/Patient.cruds", "patient/Patient.r", "patient/Patient.r"),
    # letters from several allowed scopes merge, then intersect with the request
    ("user/Observation.rs user/Observation.cu", "user/Observation.cruds", "user/Observation.crus"),
    ("user/Observation.rs user/*.c", "user/Observation.cruds", "user/Observation.crs"),
    # contexts kept apart when both are granted
    (
        "user/Observation.rs patient/Observation.cu",
        "user/Observation.cruds",
        "patient/Observation.cu user/Observation.rs",
    ),
    # system only from system, and system never grants user or patient
    ("system/Patient.rs", "system/Patient.cruds", "system/Patient.rs"),
    ("user/Patient.cruds", "system/Patient.rs", ""),
    ("patient/Patient.cruds", "system/Patient.rs", ""),
    ("system/Patient.cruds", "user/Patient.rs", ""),
    ("system/Patient.cruds", "patient/Patient.rs", ""),
    # '*' in allowed covers any type; a requested '*' needs a '*', never expanded
    ("user/*.rs", "user/Condition.cruds", "user/Condition.rs"),
    ("user/*.cruds", "patient/*.rs", "patient/*.rs"),
    ("user/Patient.rs user/Observation.rs", "user/*.rs", ""),
    ("user/*.r user/Patient.s", "user/*.rs", "user/*.r"),
    # empty letters or other types are dropped
    ("user/Patient.rs", "user/Patient.cud", ""),
    ("user/Patient.rs", "user/Observation.rs", ""),
    ("", "user/Patient.rs", ""),
    # non-resource scopes pass through unchanged
    (
        "user/Patient.rs",
        "openid fhirUser launch/patient user/Patient.rs",
        ("fhirUser launch/patient openid user/Patient.rs"),
    ),
    ("", "openid offline_access", "offline_access openid"),
]


@pytest.mark.parametrize(("allowed", "requested", "granted"), GRANT)
def test_grant(allowed: str, requested: str, granted: str) -> None:
    result = ScopeSet.parse(allowed).grant(ScopeSet.parse(requested))
    assert str(result) == granted


def test_grant_never_exceeds_either_side() -> None:
    allowed = ScopeSet.parse("user/Observation.crus patient/Condition.rs user/*.s")
    requested = ScopeSet.parse(
        "user/Observation.cruds user/Condition.cruds patient/*.rs user/Patient.rs"
    )
    granted = allowed.grant(requested)
    for resource_type in ("Observation", "Condition", "Patient", "Encounter"):
        for letter in "cruds":
            for context in ("patient", "user", "system"):
                if granted.allows(resource_type, letter, contexts=(context,)):
                    assert allowed.allows(resource_type, letter)
                    assert requested.allows(resource_type, letter)

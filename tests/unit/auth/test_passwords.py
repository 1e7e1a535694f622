"""The password policy refuses each weak kind of password; the argon2id hasher round-trips."""

from __future__ import annotations

import argon2
import pytest

from fhir_server.auth import passwords
from fhir_server.auth.passwords import (
    PasswordHasher,
    PasswordPolicy,
    WeakPassword,
    common_passwords,
)

GOOD = "Correct-Horse-42"
POLICY = PasswordPolicy()


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    """Tiny costs: the tests check behaviour, not strength."""
    return PasswordHasher(time_cost=1, memory_cost_kib=1024, parallelism=1)


# --- hasher -----------------------------------------------------------------------------------


def test_hash_is_argon2id_and_round_trips(hasher: PasswordHasher) -> None:
    encoded = hasher.hash(GOOD)
    assert encoded.startswith("$argon2id$")
    assert "m=1024,t=1,p=1" in encoded
    assert hasher.verify(encoded, GOOD) is True


def test_each_hash_has_its_own_salt(hasher: PasswordHasher) -> None:
    assert hasher.hash(GOOD) != hasher.hash(GOOD)


def test_wrong_password_is_false(hasher: PasswordHasher) -> None:
    assert hasher.verify(hasher.hash(GOOD), GOOD + "x") is False


def test_unicode_is_normalized_before_hashing(hasher: PasswordHasher) -> None:
    composed, decomposed = "Caf\u00e9-Noir-2024", "Cafe\u0301-Noir-2024"
    assert hasher.verify(hasher.hash(composed), decomposed) is True


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=1024,t=1,p=1$bm90LWJhc2U2NA",
        "$argon2id$v=19$m=1024,t=1,p=1$!!!$!!!",
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$\u00e9\u00e9\u00e9",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "pbkdf2_sha256$600000$salt$hash",
    ],
)
def test_malformed_or_foreign_hash_is_false(hasher: PasswordHasher, encoded: str) -> None:
    assert hasher.verify(encoded, GOOD) is False


def test_other_argon2_variants_are_refused() -> None:
    plain = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=argon2.Type.I)
    encoded = plain.hash(GOOD)
    assert encoded.startswith("$argon2i$")
    assert plain.verify(encoded, GOOD)  # argon2-cffi alone accepts it
    assert PasswordHasher(time_cost=1, memory_cost_kib=1024).verify(encoded, GOOD) is False


def test_unpaired_surrogate_password_is_false_not_an_error(hasher: PasswordHasher) -> None:
    assert hasher.verify(hasher.hash(GOOD), "\ud800") is False


def test_needs_rehash_only_when_parameters_change(hasher: PasswordHasher) -> None:
    encoded = hasher.hash(GOOD)
    assert hasher.needs_rehash(encoded) is False
    assert PasswordHasher(time_cost=2, memory_cost_kib=1024).needs_rehash(encoded) is True
    assert PasswordHasher(time_cost=1, memory_cost_kib=2048).needs_rehash(encoded) is True
    assert PasswordHasher(time_cost=1, memory_cost_kib=1024, parallelism=2).needs_rehash(encoded)


def test_old_parameters_still_verify(hasher: PasswordHasher) -> None:
    stronger = PasswordHasher(time_cost=2, memory_cost_kib=2048)
    assert stronger.verify(hasher.hash(GOOD), GOOD) is True


def test_unreadable_hash_needs_rehash(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash("not a hash") is True


def test_default_costs_are_rfc_9106_second_option_with_one_lane() -> None:
    salt = "c2FsdHNhbHRzYWx0c2FsdA"  # 16 bytes
    tag = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"  # 32 bytes
    assert PasswordHasher().needs_rehash(f"$argon2id$v=19$m=65536,t=3,p=1${salt}${tag}") is False


def test_dummy_verify_does_the_work_of_a_real_verify(hasher: PasswordHasher) -> None:
    hasher.dummy_verify(GOOD)
    hasher.dummy_verify("")
    fixed = hasher._dummy
    assert fixed.startswith("$argon2id$")
    assert hasher.needs_rehash(fixed) is False  # this hasher's costs, salt and tag lengths
    assert hasher.verify(fixed, GOOD) is False  # well formed: argon2 runs in full, then differs
    assert PasswordHasher(time_cost=1, memory_cost_kib=1024)._dummy != fixed  # random per hasher


# --- common-passwords list --------------------------------------------------------------------


def test_common_passwords_list_is_loaded_once_and_lowercase() -> None:
    listed = common_passwords()
    assert common_passwords() is listed
    assert passwords.COMMON_PASSWORDS is listed
    assert len(listed) == 1000
    assert {"123456", "password", "password123", "pe#5gz29ptzmse"} <= listed
    assert all(entry == entry.lower() and entry.strip() == entry for entry in listed)


def test_unknown_module_attribute_still_raises() -> None:
    with pytest.raises(AttributeError):
        _ = passwords.NO_SUCH_THING


# --- policy -----------------------------------------------------------------------------------


def test_good_password_passes() -> None:
    assert POLICY.problems(GOOD, "alice") == []
    POLICY.check(GOOD, "alice")


def test_too_short() -> None:
    assert POLICY.problems("Ab1-efghijk", "alice") == [
        "The password must be at least 12 characters long."
    ]


def test_too_long() -> None:
    assert POLICY.problems("Ab1-" * 65, "alice") == [
        "The password must be at most 256 characters long."
    ]
    assert POLICY.problems("Ab1-" * 64, "alice") == []


def test_too_few_classes() -> None:
    assert POLICY.problems("onlylowercase-but-long", "alice") == [
        "The password must mix at least 3 of: lowercase letters, uppercase letters, digits, "
        "other characters."
    ]


def test_equal_to_username_in_other_case() -> None:
    assert POLICY.problems("DrJaneSmith-1", "drjanesmith-1") == [
        "The password must not be the username."
    ]


def test_reversed_username() -> None:
    assert POLICY.problems("1-htimsenajrd", "DrJaneSmith-1") == [
        "The password must not be the username reversed."
    ]


def test_containing_the_username() -> None:
    assert POLICY.problems("Xx-JSmith-2024", "jsmith") == [
        "The password must not contain the username."
    ]


def test_short_username_may_appear_inside() -> None:
    assert POLICY.problems("Bobsleigh-2024", "bob") == []


def test_common_password_in_any_case() -> None:
    # Long enough and three classes, yet in the list (entry 305 of Django's list).
    for candidate in ("pe#5gz29ptzmse", "PE#5GZ29PTZMSE"):
        assert POLICY.problems(candidate, "alice") == [
            "The password is one of the most commonly used passwords."
        ]


def test_common_password_with_a_relaxed_policy() -> None:
    relaxed = PasswordPolicy(min_length=8, min_classes=2)
    assert relaxed.problems("Password123", "alice") == [
        "The password is one of the most commonly used passwords."
    ]


def test_unpaired_surrogate_is_refused() -> None:
    assert POLICY.problems(GOOD + "\ud800", "alice") == [
        "The password contains characters that are not valid Unicode text."
    ]


def test_weak_password_lists_every_broken_rule_at_once() -> None:
    with pytest.raises(WeakPassword) as caught:
        POLICY.check("monkey", "Monkey")
    assert caught.value.problems == [
        "The password must be at least 12 characters long.",
        "The password must mix at least 3 of: lowercase letters, uppercase letters, digits, "
        "other characters.",
        "The password must not be the username.",
        "The password is one of the most commonly used passwords.",
    ]
    assert str(caught.value) == "; ".join(caught.value.problems)
    assert isinstance(caught.value, ValueError)

"""The compiled schema validator is cached on disk, and only where it is safe to trust."""

from __future__ import annotations

import os
from pathlib import Path

import fastjsonschema
import pytest

from fhir_server.validation import compiled_cache
from fhir_server.validation.compiled_cache import compiled_validator

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}\\Z"}},
    "required": ["id"],
}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(compiled_cache.CACHE_DIR_VARIABLE, str(directory))
    return directory


def accepts(validate: object, value: object) -> bool:
    assert callable(validate)
    try:
        validate(value)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def test_the_first_compile_is_kept_and_the_next_run_uses_it(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = compiled_validator(SCHEMA)
    kept = list(cache.glob("r4-validator-*.marshal"))
    assert len(kept) == 1
    assert kept[0].stat().st_mode & 0o077 == 0  # private to the user

    def no_compiling(definition: object) -> object:
        raise AssertionError("compiled again although the cache holds it")

    monkeypatch.setattr(compiled_cache, "_compile", no_compiling)
    second = compiled_validator(SCHEMA)
    for value in ({"id": "abc"}, {"id": "abc\n"}, {"id": 7}, {}):
        assert accepts(first, value) == accepts(second, value)
    assert accepts(second, {"id": "abc"}) and not accepts(second, {"id": "abc\n"})


def test_another_schema_is_compiled_and_kept_apart(cache: Path) -> None:
    compiled_validator(SCHEMA)
    other = {**SCHEMA, "required": []}
    validate = compiled_validator(other)
    assert accepts(validate, {})
    assert len(list(cache.glob("r4-validator-*.marshal"))) == 2


def test_a_corrupt_cache_file_is_compiled_again_and_replaced(cache: Path) -> None:
    compiled_validator(SCHEMA)
    (kept,) = cache.glob("r4-validator-*.marshal")
    kept.write_bytes(b"not marshalled code")
    validate = compiled_validator(SCHEMA)
    assert accepts(validate, {"id": "abc"}) and not accepts(validate, {})
    assert kept.read_bytes() != b"not marshalled code"


def test_a_directory_others_may_write_to_is_not_used(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.mkdir()
    os.chmod(cache, 0o777)
    compiled: list[object] = []
    real = compiled_cache._compile

    def counting(definition: dict[str, object]) -> object:
        compiled.append(definition)
        return real(definition)

    monkeypatch.setattr(compiled_cache, "_compile", counting)
    assert compiled_cache.cache_directory() is None
    validate = compiled_validator(SCHEMA)
    compiled_validator(SCHEMA)
    assert accepts(validate, {"id": "abc"})
    assert len(compiled) == 2  # compiled each time, nothing written or read there
    assert list(cache.iterdir()) == []


def test_a_cache_file_others_may_write_to_is_not_loaded(cache: Path) -> None:
    compiled_validator(SCHEMA)
    (kept,) = cache.glob("r4-validator-*.marshal")
    os.chmod(kept, 0o666)
    assert compiled_cache._load(kept) is None

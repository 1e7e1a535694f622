"""Imports point one way (CONVENTIONS.md): a backward edge fails here, not in review.

app -> api -> services -> {storage, search, validation} -> definitions -> errors -> model;
storage backends may use search values but never services or api; the plug-in packages
(operations, adapters, terminology, profiles) use the service layer, never api or storage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS: dict[str, float] = {
    "fhir_server.model": 0,
    "fhir_server.errors": 1,
    "fhir_server.config": 1,
    "fhir_server.definitions": 2,
    "fhir_server.search": 3,
    "fhir_server.validation": 3,
    "fhir_server.auth": 4,
    "fhir_server.events": 4.5,
    "fhir_server.storage": 4,
    "fhir_server.services": 5,
    "fhir_server.api": 6,
    "fhir_server.core": 6.5,
    "fhir_server.app": 7,
    "fhir_server.load_workers": 7.2,
    "fhir_server.cli_identity": 7.5,
    "fhir_server.cli": 8,
    "fhir_server.__main__": 9,
}
PLUGINS = ("operations", "adapters", "terminology", "profiles")
PLUGIN_FORBIDDEN = ("fhir_server.api", "fhir_server.app", "fhir_server.storage")


def _layer(module: str) -> tuple[str, float] | None:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("fhir_server", *PLUGINS):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append((name, path))
    return found


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda value: str(value))
def test_no_backward_imports(module: str, path: Path) -> None:
    own = _layer(module)
    for imported in _imports(path):
        if module.split(".")[0] in PLUGINS:
            assert not imported.startswith(PLUGIN_FORBIDDEN), f"{module} imports {imported}"
            continue
        if imported.split(".")[0] in PLUGINS:
            pytest.fail(f"the core module {module} imports the plug-in {imported}")
        target = _layer(imported)
        if own is None or target is None or target[0] == own[0]:
            continue
        assert target[1] < own[1], f"{module} (layer {own[1]}) imports {imported} ({target[1]})"

"""Every third-party module the server imports is installed by ``pip install .``.

The quick start installs the package without its test extras; an import that only the
test extras satisfy (fhirpathpy once was one) passes every test and breaks the server.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"fhir_server", "operations", "adapters", "terminology", "profiles"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!;~]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "fhir_server").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - FIRST_PARTY - set(sys.stdlib_module_names) - {"__future__"}


def test_runtime_imports_are_declared_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(item) for item in project["dependencies"]}
    installed = set(declared)
    for name in declared:  # and what they bring (fastapi brings starlette)
        installed.update(_name(item) for item in requires(name) or [] if "extra ==" not in item)
    distributions = packages_distributions()
    missing = {
        module: distributions.get(module, [module])
        for module in _imported_modules()
        if not {_name(d) for d in distributions.get(module, [module])} & installed
    }
    assert missing == {}, f"imported by fhir_server but not installed by `pip install .`: {missing}"


def test_no_benchmark_script_shadows_a_package_of_the_server() -> None:
    """``python benchmarks/x.py`` puts benchmarks/ first on sys.path: a script named like a
    package of the server (profiles.py once) makes every in-process import of it fail."""
    scripts = {path.stem for path in (ROOT / "benchmarks").glob("*.py")}
    assert not scripts & FIRST_PARTY

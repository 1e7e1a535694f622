"""docker-compose.yml describes the scaled deployment (issue 5) and is a valid Compose file.

No Docker engine runs where Rofecare is tested, so the file is never started here: it is
validated against the Compose specification's JSON schema (tests/unit/data/SOURCE.md), and
what the deployment relies on is checked in its content: three replica set members with
the initiation, two Rofecare workers on that replica set behind the load balancer, a
health check on every long-running service, and the files it builds from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fhir_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(compose)]
    assert errors == []


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    """The validation is not vacuous: a misspelt health check key is an error."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["lb"]["healthcheck"]["intervall"] = "5s"
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert list(validator.iter_errors(broken))


def test_a_three_member_replica_set_is_initiated(compose: dict[str, Any]) -> None:
    services = compose["services"]
    members = [name for name in services if re.fullmatch(r"mongo\d", name)]
    assert members == ["mongo1", "mongo2", "mongo3"]
    for name in members:
        assert "--replSet" in services[name]["command"]
        assert "healthcheck" in services[name]
    init = services["mongo-init"]
    script = init["command"][-1]
    assert "rs.initiate" in script and all(f"{name}:27017" in script for name in members)
    assert set(init["depends_on"]) == set(members)
    assert all(dep["condition"] == "service_healthy" for dep in init["depends_on"].values())


def test_two_workers_on_the_replica_set_behind_the_load_balancer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    workers = ["rofecare1", "rofecare2"]
    for name in workers:
        worker = services[name]
        store = worker["environment"]["ROFECARE_STORE"]
        settings = Settings(store=store)
        assert settings.uses_mongodb() and "replicaSet=rs0" in store
        assert all(f"{member}:27017" in store for member in ("mongo1", "mongo2", "mongo3"))
        assert worker["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
        assert "/ready" in " ".join(worker["healthcheck"]["test"])
    balancer = services["lb"]
    assert set(balancer["depends_on"]) == set(workers)
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert all(f"server {name}:8080" in nginx for name in workers)
    assert "healthcheck" in balancer and balancer["ports"] == ["8080:80"]


def test_what_the_file_builds_from_exists(compose: dict[str, Any]) -> None:
    assert compose["services"]["rofecare1"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["rofecare", "serve"]' in dockerfile and "USER rofecare" in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source

"""End-to-end fixtures: a real ``rofecare serve`` subprocess shared by the session."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from fhirpy import SyncFHIRClient

from tests.e2e.server import STOP_TIMEOUT_S, start_server


@pytest.fixture(scope="session")
def fhir_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The FHIR base URL of a server started for this test session.

    At the end it is stopped with SIGTERM and must exit cleanly (code 0) within 15 s.
    """
    directory = tmp_path_factory.mktemp("rofecare-e2e")
    server = start_server(directory / "data", directory / "server.log")
    try:
        yield server.base
    finally:
        code, seconds = server.terminate()
    hint = ""
    if code == -signal.SIGTERM:
        hint = " (killed by its own SIGTERM: the signal was re-raised after a graceful shutdown)"
    assert code == 0, (
        f"rofecare exited with code {code}{hint} {seconds:.1f} s after SIGTERM "
        f"(expected 0 within {STOP_TIMEOUT_S} s); log:\n{server.log()}"
    )


@pytest.fixture
def client(fhir_base: str) -> SyncFHIRClient:
    """A fhirpy client as a newcomer would build it."""
    return SyncFHIRClient(fhir_base, requests_config={"timeout": 10})

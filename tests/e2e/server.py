"""Start and stop a real ``rofecare serve`` process for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.05


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    """One ``python -m fhir_server serve`` child process and where it logs."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        """The FHIR base URL."""
        return f"{self.root}/fhir"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, exactly like a crash."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM and wait; the exit code and how long the shutdown took.

        Fails the test (after a SIGKILL, so nothing is left running) when the process does not
        exit within STOP_TIMEOUT_S.
        """
        if self.process.poll() is not None:
            return self.process.returncode, 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"rofecare did not exit within {STOP_TIMEOUT_S} s of SIGTERM; log:\n{self.log()}"
            )
        return code, time.monotonic() - started


def _clean_environment() -> dict[str, str]:
    """The test runner's environment without ROFECARE_* settings that would override flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROFECARE_")}


def start_server(
    data_dir: Path,
    log_path: Path,
    extra_args: Sequence[str] = (),
    *,
    auth: bool = False,
    profiles: str = "off",
    env: dict[str, str] | None = None,
) -> RunningServer:
    """Start ``rofecare serve`` on a free port and return once GET /ready answers 200.

    Authentication is off unless ``auth``: the tests of FHIR behaviour need no tokens;
    the SMART tests turn it on (``env`` adds ROFECARE_* settings). Profile validation is
    off unless ``profiles`` says (enforce, warn): the engine's tests write minimal resources,
    the profile tests write the hospital's."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "fhir_server",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *extra_args,
    ]
    # Output goes to a file, never to a pipe nobody reads (a full pipe would block the server).
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={
                **_clean_environment(),
                "ROFECARE_AUTH_ENABLED": "true" if auth else "false",
                "ROFECARE_PROFILE_VALIDATION": profiles,
                **(env or {}),
            },
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it first
        )
    server = RunningServer(process, port, data_dir, log_path)
    try:
        _wait_ready(server)
    except BaseException:
        server.kill()
        raise
    return server


def _wait_ready(server: RunningServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with requests.Session() as session:
        while True:
            code = server.process.poll()
            if code is not None:
                pytest.fail(
                    f"rofecare exited with code {code} before it was ready:\n{server.log()}"
                )
            try:
                if session.get(f"{server.root}/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"rofecare was not ready within {START_TIMEOUT_S} s:\n{server.log()}")
            time.sleep(POLL_INTERVAL_S)

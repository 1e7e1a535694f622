"""Processes and measurements for benchmarks/rest.py: the server, wrk, CPU, py-spy.

Why here: ``rest.py`` says what is measured (data, scenarios, the order of the run); this
module knows how: a server subprocess that is always stopped, wrk driven through
``lua/replay.lua`` with its result parsed, CPU read from /proc around each run, and py-spy
attached during a separate run so that profiling never perturbs the reported figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import report

LUA = Path(__file__).resolve().parent / "lua" / "replay.lua"
HOST = "127.0.0.1"
SAMPLING_RATE = 100  # py-spy samples per second
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchmarkError(Exception):
    """The run cannot give trustworthy figures (server did not start, requests failed...)."""


# -- the server process ------------------------------------------------------------------------


ENGINE_ONLY = {"ROFECARE_AUTH_ENABLED": "false", "ROFECARE_PROFILE_VALIDATION": "off"}
"""What the REST, search and Bundle benchmarks run with: they measure the FHIR engine on
the loopback; ``benchmarks/auth.py`` measures what tokens and audit add to it, and
``benchmarks/profile_validation.py`` what profile validation adds."""


class Server:
    """A server subprocess in its own session (Ctrl-C reaches us, and we stop it).

    ``env``: ROFECARE_* settings on top of this process's environment; authentication is
    off (``ENGINE_ONLY``) unless they say otherwise. ``cwd``: where it starts (``python -m
    fhir_server`` run there imports that tree's package; side_by_side.py)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.env = {**os.environ, **ENGINE_ONLY, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                cwd=self.cwd,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            try:
                if request(self.port, "GET", "/ready", timeout=2)[0] == 200 and self._all_up():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchmarkError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _all_up(self) -> bool:
        """Every worker started: /ready answers from the first one up, and a run begun
        then gave the first one every early connection (uvicorn logs each worker's
        start-up at its default level)."""
        if "--workers" not in self.argv:
            return True
        workers = int(self.argv[self.argv.index("--workers") + 1])
        return self.log.read_bytes().count(b"Application startup complete.") >= workers

    def stop(self, timeout: float = 20.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"{self.name} ignored SIGTERM for {timeout:.0f} s; killing it", file=sys.stderr)
            process.kill()
            process.wait()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchmarkError(
                f"{self.name} died (exit {self.process.returncode}):\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


_local = threading.local()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request on this thread's keep-alive connection to ``port``."""
    connections: dict[int, http.client.HTTPConnection] = _local.__dict__.setdefault("conns", {})
    headers = {"Accept": "application/fhir+json", **(headers or {})}
    if body is not None:
        headers.setdefault("Content-Type", "application/fhir+json")
    for attempt in (1, 2):
        connection = connections.get(port)
        if connection is None:
            connection = connections[port] = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            connection.request(method, path, body, headers)
            answer = connection.getresponse()
            return answer.status, answer.read()
        except (http.client.HTTPException, ConnectionError):
            # uvicorn closes a keep-alive connection idle for 5 s (as it is while wrk runs):
            # open a new one once. A duplicate create would not matter here.
            connection.close()
            del connections[port]
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Scenario:
    name: str
    lines: list[str]  # METHOD <tab> PATH [<tab> BODY], see benchmarks/lua/replay.lua
    expect: int  # the status a single request of it must get before wrk runs


# -- wrk -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    duration: int
    connections: int
    threads: int
    warmup: int
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (wrk -H)


def measure(
    server: Server,
    scenario: Scenario,
    load: Load,
    work: Path,
    label: str | None = None,
    warmup: Scenario | None = None,
) -> report.Result:
    """Check one request of the scenario, warm up, then run and parse wrk.

    ``warmup``: other requests for the check and the warm-up, when the scenario's must
    each be sent once (creates that a uniqueness rule would refuse the second time)."""
    file = work / f"{scenario.name}.requests"
    file.write_text("\n".join(scenario.lines) + "\n")
    warm_file = file
    first = scenario.lines[0]
    if warmup is not None:
        first = warmup.lines[0]
        warm_file = work / f"{scenario.name}.warmup.requests"
        warm_file.write_text("\n".join(warmup.lines[1:]) + "\n")
    method, path, *body = first.split("\t")
    try:
        status, answer = request(
            server.port,
            method,
            path,
            body[0].encode() if body else None,
            headers=dict(load.headers),
        )
    except OSError as error:
        server.check_alive()
        raise BenchmarkError(f"{scenario.name}: {method} {path} failed: {error}") from error
    if status != scenario.expect:
        raise BenchmarkError(
            f"{scenario.name}: {method} {path} answered {status}, expected {scenario.expect}:"
            f" {answer[:300]!r}"
        )
    if load.warmup:
        wrk(server.port, warm_file, load, load.warmup)
    before, started = cpu_snapshot(server), time.monotonic()
    raw = wrk(server.port, file, load, load.duration)
    wall = time.monotonic() - started
    server.check_alive()
    cpu = cpu_snapshot(server).minus(before, wall)
    return report.Result(
        scenario=label or scenario.name,
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        socket_errors={k: v for k, v in raw["errors"].items() if k != "status"},
        statuses=raw["statuses"],
        server_cpu=cpu.server_user + cpu.server_sys,
        loop_cpu=cpu.loop,
        server_sys=cpu.server_sys,
        wrk_cpu=cpu.children,
        other_cpu=max(0.0, cpu.machine - cpu.server_user - cpu.server_sys - cpu.children),
    )


def wrk(port: int, requests_file: Path, load: Load, seconds: int) -> dict[str, Any]:
    command = wrk_command(port, requests_file, load, seconds)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
            return parsed
    raise BenchmarkError(
        f"wrk gave no result (exit {done.returncode}): {shlex.join(command)}\n"
        f"{done.stdout}{done.stderr}"
    )


def wrk_command(port: int, requests_file: Path, load: Load, seconds: int) -> list[str]:
    return [
        "wrk",
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={LUA}",
        *[f"--header={name}: {value}" for name, value in load.headers],
        f"http://{HOST}:{port}/",
        "--",
        str(requests_file),
        str(load.threads),
    ]


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far (or, after ``minus``, shares of one core over a run)."""

    server_user: float
    server_sys: float
    loop: float  # the server's main thread, where uvicorn runs the event loop
    children: float  # finished child processes: wrk
    machine: float  # every CPU of the machine, busy (not idle, iowait or steal)

    def minus(self, before: Cpu, wall: float) -> Cpu:
        return Cpu(
            *((now - then) / wall for now, then in zip(astuple(self), astuple(before), strict=True))
        )


def cpu_snapshot(server: Server) -> Cpu:
    """CPU of the server and of every process under it (``--workers N`` runs the event
    loops in child processes of a supervisor)."""
    assert server.process is not None
    user = system = loop = 0.0
    for pid in _process_tree(server.process.pid):
        try:
            process_user, process_system = _task_cpu(Path(f"/proc/{pid}/stat"))
            loop += sum(_task_cpu(Path(f"/proc/{pid}/task/{pid}/stat")))
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        user += process_user
        system += process_system
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # /proc/stat "cpu": user nice system idle iowait irq softirq steal ... (clock ticks)
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(ticks[0:3]) + sum(ticks[5:7])
    return Cpu(user, system, loop, usage.ru_utime + usage.ru_stime, busy / _CLOCK_TICKS)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc's children lists."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        queue.extend(int(child) for child in children)
    return found


def _task_cpu(stat: Path) -> tuple[float, float]:
    """(user, system) CPU seconds of a process or thread, from its /proc stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def profile(server: Server, scenario: Scenario, load: Load, work: Path) -> report.Profile:
    """A separate run of ``scenario`` with py-spy attached; the measured runs stay unperturbed."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise BenchmarkError("--profile needs py-spy: pip install py-spy")
    assert server.process is not None
    file, out = work / f"{scenario.name}.requests", work / "profile.txt"
    seconds = max(load.duration, 5)
    with subprocess.Popen(
        wrk_command(server.port, file, load, seconds), stdout=subprocess.PIPE, text=True
    ) as load_process:
        try:
            time.sleep(1)
            spy_run = subprocess.run(
                [spy, "record", "--pid", str(server.process.pid), "--duration",
                 str(seconds - 2), "--rate", str(SAMPLING_RATE), "--gil", "--format", "raw",
                 "--output", str(out)],
                capture_output=True, text=True, timeout=seconds + 30,
            )  # fmt: skip
            stdout, _ = load_process.communicate(timeout=seconds + 30)
        finally:
            if load_process.poll() is None:
                load_process.kill()
    if spy_run.returncode != 0 or not out.exists():
        raise BenchmarkError(f"py-spy failed: {spy_run.stderr[-2000:]}")
    folded = report.fold_profile(out.read_text())
    folded.scenario = scenario.name
    folded.gil_share = folded.samples / (SAMPLING_RATE * (seconds - 2))
    for line in stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            raw = json.loads(line.removeprefix("WRK_RESULT "))
            folded.rps = raw["requests"] / (raw["duration_us"] / 1e6)
    return folded


def run_in_workdir(prefix: str, keep: bool, run: Callable[[Path], int]) -> int:
    """A benchmark's main: a scratch directory, SIGTERM unwinding through the finally blocks
    that stop the servers, and an exit status for failures and interrupts."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return run(work)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def comparison_arguments(description: str | None, rounds: str) -> argparse.ArgumentParser:
    """The options of a benchmark that measures one thing on and off in alternating
    rounds (auth.py, profile_validation.py); each adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (10)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds first (2)")
    parser.add_argument("--rounds", type=int, default=2, help=f"{rounds} pairs (2)")
    parser.add_argument("--workers", type=int, default=2, help="rofecare serve --workers (2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--write-docs", action="store_true", help="rewrite its docs section")
    return parser

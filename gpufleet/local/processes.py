"""Start, track and stop the local fleet's processes.

Ownership: each home has a private random fleet id (`<home>/fleet-id`, made once). Every process
the fleet starts gets it in GPUFLEET_FLEET_ID, and children inherit it (Triton's python backend
stubs, moto's workers), so `stop_all` finds everything an `up` started even when a parent crashed
and left orphans behind. Nobody sets that variable by hand, unlike GPUFLEET_HOME, which users
export to pick a home and which every later shell child would carry: matching on it killed
processes the fleet never started.

Concurrency: `state.json` is read-modify-written only under `<home>/state.lock`, so two tables
(two `up`s, or a start and a stop) never overwrite each other's records.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from filelock import FileLock

from gpufleet.errors import FleetRuntimeError

FLEET_ID_VAR = "GPUFLEET_FLEET_ID"
_FLEET_ID = re.compile(r"[0-9a-f]{32}")
# How long a config check (`haproxy -c`, `promtool check config`) may take before we give up on it.
_CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one process of the fleet, and how to tell it is ready."""

    name: str
    argv: list[str]
    health_url: str
    role: str
    cluster: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Changes when the process's command or generated config changes: `up` restarts it then.
    fingerprint: str = ""
    # A command that validates the process's config without starting it (exit 0 = fine); run before
    # a running process is stopped for a restart, so a broken config never takes a working one down.
    check_argv: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrackedProcess:
    """A process `up` started, as recorded in the state file."""

    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str
    role: str
    cluster: str | None = None
    fingerprint: str = ""


def process_alive(proc: TrackedProcess) -> bool:
    """True when the pid still belongs to the process we started (guards against pid reuse)."""
    try:
        p = psutil.Process(proc.pid)
        return abs(p.create_time() - proc.create_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def preflight(spec: ProcessSpec) -> None:
    """Fail with a clear message, before anything is stopped or started, if `spec` cannot start:
    its program is missing or not executable, or its config check rejects the config."""
    program = spec.argv[0]
    # Popen looks the program up on the child's PATH, which spec.env may change (Triton does).
    search_path = os.pathsep.join(os.get_exec_path({**os.environ, **spec.env}))
    resolved = shutil.which(program, path=search_path)
    if resolved is None:
        why = "not executable" if Path(program).is_file() else "not found"
        raise FleetRuntimeError(
            f"{spec.name}: cannot run {program}: {why}; install it (make setup) or fix its path"
        )
    if not spec.check_argv:
        return
    try:
        check = subprocess.run(
            spec.check_argv,
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetRuntimeError(
            f"{spec.name}: could not check its config with {spec.check_argv[0]}: {exc}"
        ) from exc
    if check.returncode != 0:
        lines = [ln.strip() for ln in (check.stderr + check.stdout).splitlines() if ln.strip()]
        # Checkers end with a summary ("Fatal errors found"): the first error line says what is wrong.
        errors = [ln for ln in lines if re.search(r"alert|error|failed", ln, re.IGNORECASE)]
        detail = (errors or lines or [f"exit code {check.returncode}"])[0][:300]
        raise FleetRuntimeError(
            f"{spec.name}: its config is rejected by `{' '.join(spec.check_argv)}`: {detail}"
        )


class ProcessTable:
    """The processes of one fleet home directory, persisted in `state.json`."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.logs = self.home / "logs"
        self.state_file = self.home / "state.json"
        self.fleet_id_file = self.home / "fleet-id"
        # One FileLock per table; filelock locks are per thread by default, and fcntl locks taken
        # through separate opens exclude each other, so threads and processes are both covered.
        self._lock = FileLock(self.home / "state.lock")

    # -- state -------------------------------------------------------------------------------
    def read_state(self) -> dict[str, object]:
        """The last state written. Writes replace the file atomically, so no lock is needed to read."""
        if not self.state_file.exists():
            return {}
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # a torn or foreign file: treat as no state; stop_all still finds processes
        return data if isinstance(data, dict) else {}

    def write_state(self, state: dict[str, object]) -> None:
        """Replace the state file. Use `update_state` to change it: this alone is not a safe update."""
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)  # atomic: a crash never leaves half a state file

    @contextlib.contextmanager
    def update_state(self) -> Iterator[dict[str, object]]:
        """Read the state, let the caller change it, write it back, all under the home's lock.

        Nothing is written when the caller's block raises.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock:
            state = self.read_state()
            yield state
            self.write_state(state)

    def tracked(self) -> dict[str, TrackedProcess]:
        return _parse_processes(self.read_state())

    def record(self, proc: TrackedProcess) -> None:
        """Record `proc` under its name, replacing any earlier record of that name."""
        with self.update_state() as state:
            procs = _parse_processes(state)
            procs[proc.name] = proc
            state["processes"] = _dump_processes(procs)

    def _forget(self, procs: Iterable[TrackedProcess]) -> None:
        """Drop these records, unless their name was meanwhile taken by another process."""
        gone = {(p.name, p.pid, p.create_time) for p in procs}
        with self.update_state() as state:
            current = _parse_processes(state)
            kept = {n: p for n, p in current.items() if (n, p.pid, p.create_time) not in gone}
            state["processes"] = _dump_processes(kept)

    # -- ownership ---------------------------------------------------------------------------
    def fleet_id(self) -> str:
        """This home's private token, made on first use and never changed (see the module doc).

        A file of its own rather than a key in state.json: state.json is rewritten on every start
        and stop, and losing the token would leave every orphan unreachable.
        """
        existing = self._read_fleet_id()
        if existing:
            return existing
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock:
            existing = self._read_fleet_id()
            if existing:
                return existing
            token = secrets.token_hex(16)
            tmp = self.fleet_id_file.with_suffix(".tmp")
            tmp.write_text(token + "\n")
            tmp.chmod(0o600)
            tmp.replace(self.fleet_id_file)
            return token

    def _read_fleet_id(self) -> str | None:
        try:
            token = self.fleet_id_file.read_text().strip()
        except OSError:
            return None
        return token if _FLEET_ID.fullmatch(token) else None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, spec: ProcessSpec) -> TrackedProcess:
        """Start `spec` in its own session with this home's fleet id, and record it.

        An OS error (missing binary, no permission) is a FleetRuntimeError naming the process and
        its program; nothing is recorded then.
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{spec.name}.log"
        env = {**os.environ, **spec.env, FLEET_ID_VAR: self.fleet_id()}
        with open(log_path, "ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(spec.argv)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    spec.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.home,
                    start_new_session=True,  # own process group: stop() ends its children too
                )
            except OSError as exc:
                raise FleetRuntimeError(
                    f"{spec.name}: cannot start {spec.argv[0]}: {exc.strerror or exc}; "
                    "check that it is installed and executable (make setup)"
                ) from exc
        proc = TrackedProcess(
            name=spec.name,
            pid=popen.pid,
            create_time=psutil.Process(popen.pid).create_time(),
            argv=spec.argv,
            log=str(log_path),
            role=spec.role,
            cluster=spec.cluster,
            fingerprint=spec.fingerprint,
        )
        self.record(proc)
        return proc

    def stop(self, names: Iterable[str], timeout: float = 10.0) -> list[str]:
        """Stop the named processes (and their process groups). Returns the names that were running."""
        procs = self.tracked()
        victims = [procs[n] for n in names if n in procs]
        running = [p for p in victims if process_alive(p)]
        _terminate([psutil.Process(p.pid) for p in running], timeout)
        self._forget(victims)
        return [p.name for p in running]

    def stop_all(self, timeout: float = 10.0) -> list[str]:
        """Stop every process started from this home: tracked ones and any orphan carrying its fleet id."""
        tracked = self.tracked()
        running = {p.pid: p.name for p in tracked.values() if process_alive(p)}
        victims = [psutil.Process(pid) for pid in running]
        for orphan in self.orphans():
            if orphan.pid not in running:
                victims.append(orphan)
        _terminate(victims, timeout)
        self._forget(tracked.values())
        return sorted(running.values())

    def orphans(self) -> list[psutil.Process]:
        """Processes carrying this home's fleet id (our processes' children, and any that outlived
        their parent). Only the private token counts, never a variable a user sets."""
        token = self._read_fleet_id()
        if token is None:
            return []  # no id yet: this home never started anything
        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(FLEET_ID_VAR) == token:
                    found.append(proc)
            except psutil.Error:
                continue
        return found


def _parse_processes(state: dict[str, object]) -> dict[str, TrackedProcess]:
    raw = state.get("processes", {})
    if not isinstance(raw, dict):
        return {}
    out: dict[str, TrackedProcess] = {}
    for name, rec in raw.items():
        try:
            out[name] = TrackedProcess(**rec)
        except TypeError:
            continue
    return out


def _dump_processes(procs: dict[str, TrackedProcess]) -> dict[str, object]:
    return {name: asdict(p) for name, p in sorted(procs.items())}


def _terminate(procs: list[psutil.Process], timeout: float) -> None:
    """SIGTERM each process group, wait, then SIGKILL whatever is left (children included)."""
    everything: list[psutil.Process] = []
    for p in procs:
        try:
            everything.extend([p, *p.children(recursive=True)])
        except psutil.Error:
            continue
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(psutil.Error):
                p.terminate()
    _, alive = psutil.wait_procs(everything, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)

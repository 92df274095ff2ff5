"""Start, track and stop the local fleet's processes.

Every process gets GPUFLEET_HOME in its environment. Children inherit it (Triton's python backend
stubs, moto's workers), so `stop_all` can find and end everything an `up` started even when the
state file is stale or a parent crashed and left orphans behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

HOME_MARKER = "GPUFLEET_HOME"


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


class ProcessTable:
    """The processes of one fleet home directory, persisted in `state.json`."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.logs = self.home / "logs"
        self.state_file = self.home / "state.json"

    # -- state -------------------------------------------------------------------------------
    def read_state(self) -> dict[str, object]:
        if not self.state_file.exists():
            return {}
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # a torn or foreign file: treat as no state; stop_all still finds processes
        return data if isinstance(data, dict) else {}

    def write_state(self, state: dict[str, object]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)  # atomic: a crash never leaves half a state file

    def tracked(self) -> dict[str, TrackedProcess]:
        raw = self.read_state().get("processes", {})
        if not isinstance(raw, dict):
            return {}
        out: dict[str, TrackedProcess] = {}
        for name, rec in raw.items():
            try:
                out[name] = TrackedProcess(**rec)
            except TypeError:
                continue
        return out

    def _save_tracked(self, procs: dict[str, TrackedProcess]) -> None:
        state = self.read_state()
        state["processes"] = {name: asdict(p) for name, p in sorted(procs.items())}
        self.write_state(state)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, spec: ProcessSpec) -> TrackedProcess:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{spec.name}.log"
        env = {**os.environ, **spec.env, HOME_MARKER: str(self.home)}
        with open(log_path, "ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(spec.argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                spec.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.home,
                start_new_session=True,  # own process group: stop() ends its children too
            )
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
        procs = self.tracked()
        procs[spec.name] = proc
        self._save_tracked(procs)
        return proc

    def stop(self, names: Iterable[str], timeout: float = 10.0) -> list[str]:
        """Stop the named processes (and their process groups). Returns the names that were running."""
        procs = self.tracked()
        victims = [procs[n] for n in names if n in procs]
        stopped = [p.name for p in victims if process_alive(p)]
        _terminate([psutil.Process(p.pid) for p in victims if process_alive(p)], timeout)
        for p in victims:
            procs.pop(p.name, None)
        self._save_tracked(procs)
        return stopped

    def stop_all(self, timeout: float = 10.0) -> list[str]:
        """Stop every process started from this home: tracked ones and any orphan carrying the marker."""
        tracked = self.tracked()
        running = {p.pid: p.name for p in tracked.values() if process_alive(p)}
        victims = [psutil.Process(pid) for pid in running]
        known = set(running)
        for orphan in self.orphans():
            if orphan.pid not in known:
                victims.append(orphan)
        _terminate(victims, timeout)
        self._save_tracked({})
        return sorted(running.values())

    def orphans(self) -> list[psutil.Process]:
        """Processes whose environment says they belong to this home (any that outlived their parent)."""
        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(HOME_MARKER) == str(self.home):
                    found.append(proc)
            except psutil.Error:
                continue
        return found


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

"""Run playbooks/site.yml with ansible-runner and follow it from its events.

The run lives in a private data dir under the fleet home (inventory, extra vars, artifacts of the last
few runs), so what ran can be read afterwards. `RunProgress` is fed every runner event: the task
running now, per-host ok/changed/failed/skipped/unreachable counts, and every failure with its host,
task and message. The counts at the end are ansible's own (the playbook_on_stats event).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gpufleet.errors import UserError

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
PLAYBOOKS: Final = REPO_ROOT / "playbooks"
SITE_PLAYBOOK: Final = PLAYBOOKS / "site.yml"
KEEP_ARTIFACTS: Final = 5  # runs kept in <private data dir>/artifacts
COUNTS: Final = ("ok", "changed", "failed", "skipped", "unreachable")
# playbook_on_stats keys -> our column names.
STATS_KEYS: Final = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "skipped": "skipped",
    "dark": "unreachable",
}
MESSAGE_LIMIT: Final = 300


def _one_line(text: object, limit: int) -> str:
    """A message on one line, cut to `limit` characters (gpufleet.errors.one_line takes exceptions)."""
    return " ".join(str(text).split())[:limit]


@dataclass
class HostCounts:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0

    def as_row(self) -> tuple[int, ...]:
        return tuple(getattr(self, c) for c in COUNTS)


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str
    unreachable: bool = False

    def line(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"{self.host}: task {self.task!r} {what}: {self.message}"


@dataclass(frozen=True)
class TaskNote:
    """A message a task printed on purpose (ansible.builtin.debug): why a role skips, what it found."""

    host: str
    task: str
    message: str


def _result_message(res: Mapping[str, Any]) -> str:
    for key in ("msg", "stderr", "module_stderr", "module_stdout", "stdout", "reason"):
        value = res.get(key)
        if value:
            return _one_line(value if isinstance(value, str) else str(value), MESSAGE_LIMIT)
    results = res.get("results")  # a loop: the first failing item's message
    if isinstance(results, list):
        for item in results:
            if isinstance(item, Mapping) and item.get("failed"):
                return _result_message(item)
    return "no message"


@dataclass
class RunProgress:
    """Live state of a run, updated from ansible-runner's events."""

    task: str = ""
    play: str = ""
    hosts: dict[str, HostCounts] = field(default_factory=dict)
    failures: list[TaskFailure] = field(default_factory=list)
    notes: list[TaskNote] = field(default_factory=list)
    stats_seen: bool = False

    def counts(self, host: str) -> HostCounts:
        return self.hosts.setdefault(host, HostCounts())

    def handle(self, event: Mapping[str, Any]) -> TaskNote | TaskFailure | None:
        """Take one event; return what it says worth showing at once (a note or a failure)."""
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        host = str(data.get("host") or "")
        task = str(data.get("task") or "")
        res: Mapping[str, Any] = data.get("res") or {}
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play") or data.get("name") or "")
        elif kind == "playbook_on_task_start":
            self.task = task
        elif kind == "runner_on_ok":
            counts = self.counts(host)
            counts.ok += 1
            counts.changed += bool(res.get("changed"))
            if data.get("task_action") in ("debug", "ansible.builtin.debug") and res.get("msg"):
                note = TaskNote(host, task, _one_line(str(res["msg"]), 1000))
                self.notes.append(note)
                return note
        elif kind == "runner_on_skipped":
            self.counts(host).skipped += 1
        elif kind == "runner_on_failed":
            if data.get("ignore_errors"):
                self.counts(host).ok += 1
                return None
            self.counts(host).failed += 1
            failure = TaskFailure(host, task, _result_message(res))
            self.failures.append(failure)
            return failure
        elif kind == "runner_on_unreachable":
            self.counts(host).unreachable += 1
            failure = TaskFailure(host, task, _result_message(res), unreachable=True)
            self.failures.append(failure)
            return failure
        elif kind == "playbook_on_stats":
            self._take_stats(data)
        return None

    def _take_stats(self, data: Mapping[str, Any]) -> None:
        """Ansible's own final counts replace the ones counted from events (loops, handlers)."""
        self.stats_seen = True
        final: dict[str, HostCounts] = {}
        for key, column in STATS_KEYS.items():
            for host, n in (data.get(key) or {}).items():
                setattr(final.setdefault(host, HostCounts()), column, int(n))
        for host in data.get("processed") or {}:
            final.setdefault(host, HostCounts())
        self.hosts = final


@dataclass(frozen=True)
class RunResult:
    status: str  # ansible-runner's: successful, failed, timeout, canceled
    rc: int
    progress: RunProgress
    artifacts: Path
    stdout_tail: str

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0 and not self.progress.failures

    def failure_line(self) -> str:
        """One line: the first failure (host, task, message), or ansible's own error."""
        failures = self.progress.failures
        if failures:
            more = (
                f" (and {len(failures) - 1} more failures; see {self.artifacts})" if len(failures) > 1 else ""
            )
            return failures[0].line() + more
        return f"ansible-playbook ended {self.status} (rc {self.rc}): {self.stdout_tail or 'no output'}"


def ansible_environment(private_dir: Path) -> dict[str, str]:
    """ansible-playbook's environment: this venv's ansible first on PATH, the repo's ansible.cfg and roles."""
    bindir = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")]),
        "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(private_dir / "tmp"),
    }


def require_ansible() -> None:
    try:
        import ansible_runner  # noqa: F401
    except ImportError:
        raise UserError(
            "ansible-runner is not installed; run `make setup-all` or pip install -e '.[cloud]'"
        ) from None
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        import shutil

        if shutil.which("ansible-playbook") is None:
            raise UserError("ansible-playbook not found; run `make setup-all` or pip install -e '.[cloud]'")


def _stdout_tail(artifacts: Path) -> str:
    try:
        lines = (artifacts / "stdout").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln.strip() for ln in lines if "ERROR" in ln]
    return _one_line(" ".join(errors[-2:] or [ln.strip() for ln in lines[-3:] if ln.strip()]), MESSAGE_LIMIT)


def run_playbook(
    private_dir: Path,
    inventory: Mapping[str, Any],
    extra_vars: Mapping[str, Any],
    *,
    check: bool = False,
    playbook: Path = SITE_PLAYBOOK,
    on_event: Callable[[RunProgress, TaskNote | TaskFailure | None], None] | None = None,
) -> RunResult:
    """Run `playbook` once with ansible-runner; `on_event` is called after every event."""
    require_ansible()
    import ansible_runner

    if not playbook.is_file():
        raise UserError(f"{playbook} not found; run gpufleet configure from the repository checkout")
    private_dir.mkdir(parents=True, exist_ok=True)
    (private_dir / "tmp").mkdir(exist_ok=True)
    progress = RunProgress()

    def handle(event: dict[str, Any]) -> bool:
        shown = progress.handle(event)
        if on_event is not None:
            on_event(progress, shown)
        return True  # keep the event in the artifacts

    runner = ansible_runner.run(
        private_data_dir=str(private_dir),
        playbook=str(playbook),
        inventory=dict(inventory),
        extravars=dict(extra_vars),
        cmdline="--check" if check else None,
        envvars=ansible_environment(private_dir),
        event_handler=handle,
        quiet=True,
        rotate_artifacts=KEEP_ARTIFACTS,
    )
    artifacts = Path(runner.config.artifact_dir)
    return RunResult(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else -1),
        progress=progress,
        artifacts=artifacts,
        stdout_tail="" if runner.status == "successful" else _stdout_tail(artifacts),
    )

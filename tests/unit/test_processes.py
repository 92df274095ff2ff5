from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil

from gpufleet.local.processes import ProcessSpec, ProcessTable, process_alive

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]
# A parent that starts a child, then waits: killing the parent orphans the child.
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
    "'import time; time.sleep(300)']); time.sleep(300)",
]


def spec(name: str, argv: list[str]) -> ProcessSpec:
    return ProcessSpec(name=name, argv=argv, health_url="", role="test")


def test_start_records_and_stop_ends_process(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    proc = table.start(spec("sleeper", SLEEPER))
    assert process_alive(proc)
    assert table.tracked()["sleeper"].pid == proc.pid
    assert Path(proc.log).exists()
    assert table.stop(["sleeper"]) == ["sleeper"]
    assert not process_alive(proc)
    assert table.tracked() == {}


def test_stop_all_ends_orphans_of_a_crashed_parent(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    parent = table.start(spec("parent", PARENT))
    deadline = time.monotonic() + 10
    while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = psutil.Process(parent.pid).children()[0]
    os.kill(parent.pid, signal.SIGKILL)
    psutil.Process(parent.pid).wait(5)
    assert child.is_running()
    assert [p.pid for p in table.orphans()] == [child.pid]
    assert table.stop_all() == []  # the tracked parent was already dead
    assert not child.is_running()
    assert table.orphans() == []


def test_stale_pid_is_not_alive(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    proc = table.start(spec("sleeper", SLEEPER))
    table.stop(["sleeper"])
    # Same pid, different start time: must not be taken for ours (pid reuse).
    from dataclasses import replace

    assert not process_alive(replace(proc, create_time=proc.create_time - 100))
    assert not process_alive(proc)


def test_torn_state_file_is_ignored(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    tmp_path.joinpath("state.json").write_text("{not json")
    assert table.tracked() == {}
    assert table.stop_all() == []

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from gpufleet.errors import FleetRuntimeError
from gpufleet.local.processes import ProcessSpec, ProcessTable, TrackedProcess, process_alive

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


def test_stop_all_spares_a_process_that_only_carries_the_users_home_variable(tmp_path: Path) -> None:
    # What a user's shell child looks like after `export GPUFLEET_HOME=<home>`: make, tmux, an
    # editor. It was never started by the fleet, so `down` must leave it alone.
    table = ProcessTable(tmp_path)
    ours = table.start(spec("sleeper", SLEEPER))
    foreign = subprocess.Popen(SLEEPER, env={**os.environ, "GPUFLEET_HOME": str(tmp_path)})
    try:
        assert [p.pid for p in table.orphans()] == [ours.pid]
        assert table.stop_all() == ["sleeper"]
        assert not process_alive(ours)
        assert foreign.poll() is None, "a process the fleet never started was killed"
    finally:
        foreign.kill()
        foreign.wait()


def test_another_homes_processes_are_not_orphans_of_this_one(tmp_path: Path) -> None:
    mine, other = ProcessTable(tmp_path / "mine"), ProcessTable(tmp_path / "other")
    theirs = other.start(spec("sleeper", SLEEPER))
    try:
        mine.start(spec("sleeper", SLEEPER))
        assert mine.fleet_id() != other.fleet_id()
        assert mine.stop_all() == ["sleeper"]
        assert process_alive(theirs)
    finally:
        other.stop_all()


def test_a_record_whose_pid_now_belongs_to_another_process_is_not_ours(tmp_path: Path) -> None:
    # A live process that the fleet did not start holds the pid a stale record names, as after pid
    # reuse: only the start time tells them apart, and it must keep the process from being killed.
    foreign = subprocess.Popen(SLEEPER)
    try:
        started_at = psutil.Process(foreign.pid).create_time()
        stale = TrackedProcess(
            name="sleeper", pid=foreign.pid, create_time=started_at - 100, argv=SLEEPER, log="", role="test"
        )
        assert process_alive(replace(stale, create_time=started_at))  # same pid, right start time
        assert not process_alive(stale)
        table = ProcessTable(tmp_path)
        table.record(stale)
        assert table.stop(["sleeper"]) == []
        assert foreign.poll() is None, "stop killed a process that only reused a recorded pid"
        assert table.tracked() == {}
    finally:
        foreign.kill()
        foreign.wait()


def test_torn_state_file_is_ignored(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    tmp_path.joinpath("state.json").write_text("{not json")
    assert table.tracked() == {}
    assert table.stop_all() == []


def test_concurrent_starts_from_two_tables_keep_every_record(tmp_path: Path) -> None:
    # Two `up`s (two tables on one home) starting processes at the same time: each start is a
    # read-modify-write of state.json, and none may overwrite the other's records.
    sleep = ["sleep", "60"]
    names = {side: [f"{side}-{i}" for i in range(25)] for side in ("a", "b")}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def start_all(side: str) -> None:
        table = ProcessTable(tmp_path)
        barrier.wait()
        try:
            for name in names[side]:
                table.start(spec(name, sleep))
        except BaseException as exc:  # surfaced below: a thread's exception would vanish
            errors.append(exc)

    threads = [threading.Thread(target=start_all, args=(side,)) for side in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = ProcessTable(tmp_path)
    try:
        assert errors == []
        assert sorted(table.tracked()) == sorted(names["a"] + names["b"])
    finally:
        table.stop_all()
    assert table.orphans() == []


def test_an_os_error_at_start_names_the_process_and_its_program(tmp_path: Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o644)
    table = ProcessTable(tmp_path)
    with pytest.raises(FleetRuntimeError, match=rf"^store: cannot start {program}: Permission denied"):
        table.start(spec("store", [str(program)]))
    assert table.tracked() == {}

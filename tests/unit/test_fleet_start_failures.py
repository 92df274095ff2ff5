"""When a process of the local fleet fails to start or restart: the error names it and its log, and
nothing is leaked (left running) or lost (gone from the records)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from gpufleet.errors import FleetRuntimeError
from gpufleet.local.fleet import LocalFleet
from gpufleet.local.ports import free_port
from gpufleet.local.processes import ProcessSpec, process_alive
from gpufleet.spec import load_fleet


def test_process_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    crasher = ProcessSpec(
        name="triton-x-0",
        argv=[sys.executable, "-c", "import sys; print('cannot open model repository'); sys.exit(3)"],
        health_url=f"http://127.0.0.1:{free_port()}/v2/health/ready",
        role="triton",
    )
    with pytest.raises(FleetRuntimeError) as err:
        fleet._converge([crasher], timeout_s=10)
    message = str(err.value)
    assert "triton-x-0 exited during start" in message
    assert "cannot open model repository" in message
    assert str(tmp_path / "logs" / "triton-x-0.log") in message


def test_process_that_never_gets_healthy_times_out_and_is_named(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    silent = ProcessSpec(
        name="proxy-x",
        argv=[sys.executable, "-c", "import time; print('listening nowhere', flush=True); time.sleep(60)"],
        health_url=f"http://127.0.0.1:{free_port()}/healthz",
        role="proxy",
    )
    with pytest.raises(
        FleetRuntimeError, match=r"proxy-x not ready after 2s .*listening nowhere.*proxy-x\.log"
    ):
        fleet._converge([silent], timeout_s=2)
    # The failed start cleaned up after itself: no `down` needed.
    assert fleet.table.orphans() == []
    assert fleet.table.tracked() == {}


# -- a failed start or restart neither leaks nor loses processes ------------------------------


def web_server(name: str, port: int, version: str, **changes: object) -> ProcessSpec:
    """A process that answers its health check (python's http.server on loopback)."""
    spec = ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        health_url=f"http://127.0.0.1:{port}/",
        role="test",
        fingerprint=version,
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def test_second_start_failing_stops_the_first_and_names_the_program(tmp_path: Path) -> None:
    # Executable, so it passes the pre-start check, but the kernel refuses to run it (ENOEXEC).
    program = tmp_path / "broken-binary"
    program.write_text("this is not a program\n")
    program.chmod(0o755)
    fleet = LocalFleet(tmp_path / "home")
    good = web_server("store", free_port(), "1")
    broken = ProcessSpec(name="prometheus", argv=[str(program)], health_url="", role="prometheus")
    with pytest.raises(FleetRuntimeError, match=rf"^prometheus: cannot start {program}: Exec format error"):
        fleet._converge([good, broken], timeout_s=10)
    assert fleet.table.tracked() == {}
    assert fleet.table.orphans() == []  # the store started first is not left running


def test_replacement_with_a_missing_program_keeps_the_old_process_running(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    port = free_port()
    [name] = fleet._converge([web_server("proxy-a", port, "1")], timeout_s=20)
    old = fleet.table.tracked()[name]
    missing = web_server("proxy-a", port, "2", argv=["/nonexistent/haproxy", "-f", "x.cfg"])
    with pytest.raises(
        FleetRuntimeError,
        match=r"^proxy-a: cannot run /nonexistent/haproxy: not found.*running proxy-a is kept",
    ):
        fleet._converge([missing], timeout_s=20)
    assert process_alive(old)
    assert fleet.table.tracked()[name] == old
    fleet.table.stop_all()


def test_replacement_whose_config_is_rejected_keeps_the_old_process_running(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    port = free_port()
    fleet._converge([web_server("proxy-a", port, "1")], timeout_s=20)
    old = fleet.table.tracked()["proxy-a"]
    rejecting = [sys.executable, "-c", "import sys; sys.exit('[ALERT] haproxy.cfg:3: unknown keyword')"]
    changed = web_server("proxy-a", port, "2", check_argv=rejecting)
    with pytest.raises(
        FleetRuntimeError, match=r"config is rejected .*unknown keyword; the running proxy-a is kept"
    ):
        fleet._converge([changed], timeout_s=20)
    assert process_alive(old)
    assert fleet.table.tracked()["proxy-a"] == old
    fleet.table.stop_all()


def test_failed_restart_leaves_the_process_shown_down_not_vanished(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    port = free_port()
    fleet._converge([web_server("triton-a-0", port, "1")], timeout_s=20)
    old = fleet.table.tracked()["triton-a-0"]
    crashing = web_server(
        "triton-a-0",
        port,
        "2",
        argv=[sys.executable, "-c", "import sys; print('bad model repo'); sys.exit(3)"],
    )
    with pytest.raises(FleetRuntimeError) as err:
        fleet._converge([crashing], timeout_s=20)
    message = str(err.value)
    assert "triton-a-0 exited during start" in message and "bad model repo" in message
    assert message.endswith("; stopped for the restart, down until `gpufleet up` succeeds: triton-a-0")
    # Still listed, as down: `status` shows it with its log, and the next `up` restarts it.
    assert fleet.table.tracked()["triton-a-0"] == old
    [row] = fleet.status()
    assert (row.name, row.alive, row.log) == ("triton-a-0", False, str(tmp_path / "logs" / "triton-a-0.log"))
    assert fleet.table.orphans() == []
    # A later converge with a good spec brings it back.
    fleet._converge([web_server("triton-a-0", port, "3")], timeout_s=20)
    assert process_alive(fleet.table.tracked()["triton-a-0"])
    fleet.table.stop_all()


# -- one `up` or `down` at a time per home ----------------------------------------------------

HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire()
print("held", flush=True); time.sleep(300)
"""


def test_up_and_down_refuse_while_another_holds_the_home_and_work_after_it_dies(tmp_path: Path) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "name: t\nclusters: [{name: local-a, cloud: local}]\nmodel_store: {bucket: t-models}\nmodels: []\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(home / "fleet.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        fleet = LocalFleet(home)
        with pytest.raises(
            FleetRuntimeError, match=r"another `gpufleet up` or `gpufleet down` is running on"
        ):
            fleet.up(load_fleet(fleet_file), fleet_file)
        with pytest.raises(FleetRuntimeError, match=r"run `gpufleet down` again"):
            fleet.down()
        assert not (home / "state.json").exists()  # the refused `up` wrote nothing
    finally:
        holder.kill()  # a crashed holder: the kernel drops its lock with it
        holder.wait()
    assert LocalFleet(home).down() == []

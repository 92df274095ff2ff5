"""When a process of the local fleet fails to start, the error names it and its log file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpufleet.errors import FleetRuntimeError
from gpufleet.local.fleet import LocalFleet
from gpufleet.local.ports import free_port
from gpufleet.local.processes import ProcessSpec


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

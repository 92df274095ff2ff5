"""CLI habits on a running local fleet: JSON for scripts, whole URLs, logs by process name."""

from __future__ import annotations

import json

import pytest

from gpufleet.local.fleet import LocalFleet
from tests.conftest import RunningFleet, run_cli

pytestmark = pytest.mark.integration


def test_status_json_lists_every_process_ready(local_fleet: RunningFleet) -> None:
    shown = local_fleet.cli("status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    tracked = LocalFleet(local_fleet.home).table.tracked()
    assert {p["name"] for p in data["processes"]} == set(tracked)
    assert data["ready"] and all(p["ready"] for p in data["processes"])
    assert {c["name"] for c in data["endpoints"]["clusters"]} == {"local-a", "local-b"}


def test_status_never_cuts_a_url_or_process_name_in_a_narrow_terminal(local_fleet: RunningFleet) -> None:
    env = {"GPUFLEET_HOME": str(local_fleet.home), "COLUMNS": "80"}
    shown = run_cli("status", env=env)
    assert shown.returncode == 0, shown.stderr
    endpoints = LocalFleet(local_fleet.home).endpoints()
    assert endpoints is not None
    urls = [r.http_url for c in endpoints.clusters for r in c.replicas] + [endpoints.prometheus_url]
    for url in urls:
        assert url in shown.stdout, (url, shown.stdout)
    for name in LocalFleet(local_fleet.home).table.tracked():  # what `gpufleet logs` takes, whole
        assert f" {name} " in shown.stdout, (name, shown.stdout)


def test_logs_shows_a_replicas_log(local_fleet: RunningFleet) -> None:
    shown = local_fleet.cli("logs", "triton-local-a-0", "-n", "400")
    assert shown.returncode == 0, shown.stderr
    assert "--- start" in shown.stdout  # the header every start writes into the log

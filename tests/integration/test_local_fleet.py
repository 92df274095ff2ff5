"""The real local fleet: moto S3, tritonserver replicas, HAProxy, Prometheus, all on 127.0.0.1.

Tests run in file order on one fleet started once per session; the last ones crash and stop it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import psutil
import pytest
import requests
from prometheus_api_client import PrometheusConnect

from gpufleet.builtin_models import build_mlp
from gpufleet.loadgen import infer_once
from gpufleet.local.fleet import LocalFleet
from gpufleet.local.processes import process_alive
from gpufleet.spec import load_fleet
from tests.conftest import REPO, RunningFleet

pytestmark = pytest.mark.integration


def metric_total(metrics_url: str, name: str, model: str) -> float:
    total = 0.0
    for line in requests.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_replica_ready_with_model_loaded(local_fleet: RunningFleet) -> None:
    rows = LocalFleet(local_fleet.home).status()
    tritons = [r for r in rows if r.role == "triton"]
    assert sorted(r.name for r in tritons) == [
        "triton-local-a-0",
        "triton-local-a-1",
        "triton-local-b-0",
        "triton-local-b-1",
    ]
    assert all(r.ready for r in rows), [(r.name, r.alive, r.ready) for r in rows]
    assert all(r.models == ["mlp:1"] for r in tritons)
    assert {r.role for r in rows} == {"store", "triton", "proxy", "prometheus"}
    shown = local_fleet.cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "triton-local-b-1" in shown.stdout and "mlp:1" in shown.stdout


def test_infer_through_each_proxy_matches_onnxruntime(local_fleet: RunningFleet) -> None:
    fleet = load_fleet(local_fleet.file)
    spec = fleet.model("mlp")
    session = ort.InferenceSession(build_mlp(spec), providers=["CPUExecutionProvider"])
    endpoints = LocalFleet(local_fleet.home).endpoints()
    assert endpoints is not None
    for cluster in endpoints.clusters:
        got = infer_once(cluster.proxy_url, spec, seed=3)["OUTPUT"]
        x = np.random.default_rng(3).standard_normal((1, 16)).astype(np.float32)
        want = session.run(["OUTPUT"], {"INPUT": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    shown = local_fleet.cli("infer", "local-b", "mlp")
    assert shown.returncode == 0, shown.stderr
    assert "local-b/mlp OUTPUT [1, 4]" in shown.stdout


def test_proxy_spreads_requests_over_every_replica(local_fleet: RunningFleet) -> None:
    endpoints = LocalFleet(local_fleet.home).endpoints()
    assert endpoints is not None
    spec = load_fleet(local_fleet.file).model("mlp")
    cluster = endpoints.cluster("local-a")
    before = [metric_total(r.metrics_url, "nv_inference_request_success", "mlp") for r in cluster.replicas]
    for i in range(40):
        infer_once(cluster.proxy_url, spec, seed=i)
    after = [metric_total(r.metrics_url, "nv_inference_request_success", "mlp") for r in cluster.replicas]
    gained = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(gained) == 40
    assert all(g >= 10 for g in gained), gained  # round robin: each of 2 replicas gets about half


def test_load_command_prints_latency_per_cluster(local_fleet: RunningFleet) -> None:
    shown = local_fleet.cli("load", "mlp", "--requests", "200", "--concurrency", "2")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for cluster in ("local-a", "local-b"):
        row = next(
            line for line in shown.stdout.splitlines() if cluster in line and "│" in line and "200" in line
        )
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert cells[0] == cluster and cells[1] == "200" and cells[2] == "0"
        p50, p99 = float(cells[3]), float(cells[4])
        assert 0 < p50 <= p99
    report = (
        REPO / next(line for line in shown.stdout.splitlines() if line.startswith("report: "))[8:].strip()
    )
    assert report.parent == local_fleet.home / "reports"  # under the home, not wherever the user stands
    page = report.read_text()
    assert "local-a" in page and "local-b" in page and page.count("<svg") == 2
    report.unlink()


def test_prometheus_scrapes_triton_and_proxies_of_both_clusters(local_fleet: RunningFleet) -> None:
    endpoints = LocalFleet(local_fleet.home).endpoints()
    assert endpoints is not None
    prom = PrometheusConnect(url=endpoints.prometheus_url, disable_ssl=True)

    def clusters_with(query: str, value_ok: Callable[[float], bool]) -> set[str]:
        return {s["metric"]["cluster"] for s in prom.custom_query(query) if value_ok(float(s["value"][1]))}

    # Each target's first scrape lands anywhere in the 2 s interval: poll until every series is in.
    deadline = time.monotonic() + 60
    while True:
        served = clusters_with('nv_inference_request_success{model="mlp"}', lambda v: v > 0)
        proxies = clusters_with('up{job="proxy"}', lambda v: v == 1)
        if served == proxies == {"local-a", "local-b"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert served == {"local-a", "local-b"}
    assert proxies == {"local-a", "local-b"}
    versions = {s["metric"]["version"] for s in prom.custom_query("nv_inference_request_success")}
    assert versions == {"1"}


def test_up_again_keeps_running_processes(local_fleet: RunningFleet) -> None:
    before = {n: p.pid for n, p in LocalFleet(local_fleet.home).table.tracked().items()}
    result = local_fleet.cli("up")
    assert result.returncode == 0, result.stderr
    after = {n: p.pid for n, p in LocalFleet(local_fleet.home).table.tracked().items()}
    assert after == before


def test_up_restarts_a_crashed_replica_only(local_fleet: RunningFleet) -> None:
    fleet = LocalFleet(local_fleet.home)
    before = {n: p.pid for n, p in fleet.table.tracked().items()}
    victim = fleet.table.tracked()["triton-local-b-0"]
    os.kill(victim.pid, signal.SIGKILL)
    psutil.Process(victim.pid).wait(10) if psutil.pid_exists(victim.pid) else None
    shown = local_fleet.cli("status")
    assert shown.returncode == 1 and "down" in shown.stdout
    result = local_fleet.cli("up")
    assert result.returncode == 0, result.stderr
    after = {n: p.pid for n, p in fleet.table.tracked().items()}
    assert after["triton-local-b-0"] != before["triton-local-b-0"]
    assert {n: p for n, p in after.items() if n != "triton-local-b-0"} == {
        n: p for n, p in before.items() if n != "triton-local-b-0"
    }
    assert all(r.ready for r in fleet.status())
    assert [r.models for r in fleet.status() if r.name == "triton-local-b-0"] == [["mlp:1"]]


def test_down_after_a_crash_leaves_no_process(local_fleet: RunningFleet) -> None:
    fleet = LocalFleet(local_fleet.home)
    tracked = fleet.table.tracked()
    children = [c for p in tracked.values() for c in psutil.Process(p.pid).children(recursive=True)]
    assert children, "tritonserver should have python backend stub children"
    # Crash a parent: its children become orphans that only the home marker still ties to us.
    os.kill(tracked["triton-local-a-1"].pid, signal.SIGKILL)
    result = local_fleet.cli("down")
    assert result.returncode == 0, result.stderr
    assert not [p for p in tracked.values() if process_alive(p)]
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert fleet.table.orphans() == []
    assert fleet.table.tracked() == {}
    assert local_fleet.cli("status").stdout.startswith("no local fleet")

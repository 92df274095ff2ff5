"""The HAProxy router on a real local fleet: versions 1 and 2 of mlp loaded on the same Triton
replicas, clients calling the unversioned URL through the cluster's proxy.

Which version served a request is read from Triton's own response (`model_version`), and the
proxy's per-backend response counters from its prometheus-exporter; expected mixes come from the
binomial distribution, not from the router. The fleet is this module's own (its own home), so
loading a second version of mlp cannot disturb the session fleet other modules check.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest
import requests
from scipy.stats import binom

from gpufleet.local.fleet import ClusterEndpoints, LocalFleet
from pipelines.rollout.router.haproxy import HAProxyRouter
from tests.conftest import RunningFleet, mlp_fleet, own_fleet

pytestmark = pytest.mark.integration

CLUSTER = "local-r"
MODEL = "mlp"
FLEET = mlp_fleet("rtest", [(CLUSTER, 1, 2)])
INFER_BODY = {"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32", "data": [0.25] * 16}]}
# Two-sided: a correct router fails one mix check about once in 10,000 runs.
MIX_CONFIDENCE = 0.9999


@dataclass(frozen=True)
class Cluster:
    fleet: RunningFleet
    endpoints: ClusterEndpoints

    def router(self) -> HAProxyRouter:
        return HAProxyRouter.for_local_cluster(self.fleet.home, CLUSTER)


@dataclass
class Outcome:
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.versions.values()) + len(self.failures)


def send(url: str, requests_total: int, workers: int = 4, max_s: float = 45.0) -> Outcome:
    """`requests_total` unversioned infers over `workers` keep-alive connections, within `max_s`."""
    outcome = Outcome()
    lock = threading.Lock()
    tickets = iter(range(requests_total))
    deadline = time.monotonic() + max_s

    def worker() -> None:
        with requests.Session() as s:
            while time.monotonic() < deadline:
                with lock:
                    if next(tickets, None) is None:
                        return
                try:
                    reply = s.post(f"{url}/v2/models/{MODEL}/infer", json=INFER_BODY, timeout=10)
                    result = (
                        reply.json()["model_version"]
                        if reply.status_code == 200
                        else f"HTTP {reply.status_code}"
                    )
                except (requests.RequestException, ValueError, KeyError) as exc:
                    result = f"{type(exc).__name__}: {exc}"
                with lock:
                    if result.isdigit():
                        outcome.versions[result] += 1
                    else:
                        outcome.failures.append(result)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def backend_responses(cluster: Cluster) -> dict[str, float]:
    """2xx responses per proxy backend, from HAProxy's prometheus-exporter."""
    text = requests.get(cluster.endpoints.proxy_metrics_url, timeout=5).text
    pattern = re.compile(r'^haproxy_backend_http_responses_total\{proxy="([^"]+)",code="2xx"\} (\S+)$', re.M)
    return {proxy: float(value) for proxy, value in pattern.findall(text)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with own_fleet(tmp_path_factory, "router", FLEET) as fleet:
        root = fleet.file.parent
        for step in (
            ("engine", "build", MODEL, "--out", str(root / "pkg2")),
            ("engine", "push", MODEL, "--from", str(root / "pkg2")),
            ("engine", "load", CLUSTER, MODEL, "2"),
        ):
            result = fleet.cli(*step, timeout=600)
            assert result.returncode == 0, (
                f"gpufleet {' '.join(step)} failed:\n{result.stdout}\n{result.stderr}"
            )
        endpoints = LocalFleet(fleet.home).endpoints()
        assert endpoints is not None
        yield Cluster(fleet, endpoints.cluster(CLUSTER))


def test_nothing_set_is_served_as_without_a_router(cluster: Cluster) -> None:
    """No rewrite: Triton picks the version itself, its highest loaded one (why the driver sets
    stable-only weights before it loads a canary, router/base.py)."""
    router = cluster.router()
    router.clear(MODEL)
    before = backend_responses(cluster)
    outcome = send(cluster.endpoints.proxy_url, 100)
    after = backend_responses(cluster)
    assert outcome.failures == [] and outcome.versions == {"2": 100}
    assert after[f"{CLUSTER}-replicas"] - before[f"{CLUSTER}-replicas"] == 100
    assert after[f"{CLUSTER}-canary"] == before[f"{CLUSTER}-canary"]
    assert after[f"{CLUSTER}-stable"] == before[f"{CLUSTER}-stable"]


@pytest.mark.parametrize("canary_percent", [0, 10, 50, 100])
def test_weights_give_the_version_mix_they_ask_for(cluster: Cluster, canary_percent: int) -> None:
    router = cluster.router()
    router.set_weights(MODEL, {1: 100 - canary_percent, 2: canary_percent})
    n = 400
    before = backend_responses(cluster)
    outcome = send(cluster.endpoints.proxy_url, n)
    after = backend_responses(cluster)

    assert outcome.failures == []
    assert set(outcome.versions) <= {"1", "2"}
    low, high = binom.interval(MIX_CONFIDENCE, n, canary_percent / 100)
    canary = outcome.versions["2"]
    print(f"weights 1:{100 - canary_percent} 2:{canary_percent}: version 2 served {canary}/{n}")
    assert low <= canary <= high, f"version 2 served {canary} of {n}; expected {low:.0f}..{high:.0f}"
    # The proxy's own per-backend counters tell the same story.
    assert after[f"{CLUSTER}-canary"] - before[f"{CLUSTER}-canary"] == canary
    assert after[f"{CLUSTER}-stable"] - before[f"{CLUSTER}-stable"] == n - canary
    assert after[f"{CLUSTER}-replicas"] == before[f"{CLUSTER}-replicas"]


def test_weights_change_under_load_without_dropping_a_request(cluster: Cluster) -> None:
    router = cluster.router()
    router.set_weights(MODEL, {1: 100, 2: 0})
    total, changes_wanted = 2000, 60
    settings = [{1: 100 - p, 2: p} for p in (0, 10, 25, 50, 75, 90, 100, 50)]
    set_ms: list[float] = []
    result: list[Outcome] = []
    load = threading.Thread(target=lambda: result.append(send(cluster.endpoints.proxy_url, total)))
    start = time.monotonic()
    load.start()
    while load.is_alive() and len(set_ms) < changes_wanted:
        t0 = time.perf_counter()
        router.set_weights(MODEL, settings[len(set_ms) % len(settings)])
        set_ms.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    changed_during_load = load.is_alive()
    load.join()
    wall_s = time.monotonic() - start
    [outcome] = result
    print(
        f"{outcome.done} requests in {wall_s:.1f} s across {len(set_ms)} weight changes: "
        f"{len(outcome.failures)} failed, versions {dict(outcome.versions)}; set_weights "
        f"median {statistics.median(set_ms):.2f} ms, max {max(set_ms):.2f} ms"
    )
    assert outcome.failures == [], outcome.failures[:5]
    assert outcome.done == total
    assert changed_during_load, "the load ended before all weight changes were made; send more requests"
    assert len(set_ms) >= 50
    assert set(outcome.versions) == {"1", "2"}


def test_weights_read_back_from_the_proxy_and_a_restarted_proxy_has_none(cluster: Cluster) -> None:
    router = cluster.router()
    for weights in ({1: 90, 2: 10}, {2: 100}, {2: 30, 1: 70}, {1: 100, 2: 0}):
        router.set_weights(MODEL, weights)
        assert cluster.router().weights(MODEL) == weights  # a fresh reader: what the proxy holds
        assert router.weights(MODEL) == weights

    proxy = LocalFleet(cluster.fleet.home).table.tracked()[f"proxy-{CLUSTER}"]
    os.kill(proxy.pid, signal.SIGTERM)
    psutil.Process(proxy.pid).wait(10)
    restarted = cluster.fleet.cli("up", timeout=300)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert router.weights(MODEL) == {}  # the routes went with the process; none invented or cached
    outcome = send(cluster.endpoints.proxy_url, 50)
    assert outcome.failures == [] and outcome.versions == {"2": 50}  # unversioned again

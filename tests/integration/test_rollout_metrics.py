"""The Prometheus metrics source on a real local fleet: real tritonserver replicas, real Prometheus.

The fleet is this module's own (its own home): it loads a second version of mlp, stops Prometheus
and a replica, which the session fleet's other users must not see. Version 2 is mlp with a fault
added to its model.py (an input whose first value is FAIL_MARK raises in execute), so that it fails
requests the way a broken canary does. Every expected count is what the test itself sent and saw
answered; that Prometheus has scraped past a moment is read from Prometheus directly.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from prometheus_api_client import PrometheusConnect

from gpufleet.local.fleet import ClusterEndpoints, LocalFleet
from gpufleet.local.ports import LOOPBACK
from gpufleet.local.processes import ProcessTable
from pipelines.rollout.evidence import NoData, VersionWindow
from pipelines.rollout.metrics.prometheus import PrometheusMetrics
from tests.conftest import RunningFleet, mlp_fleet, own_fleet

pytestmark = pytest.mark.integration

CLUSTER = "local-m"
MODEL = "mlp"
FLEET = mlp_fleet("mtest", [(CLUSTER, 1, 2)])
FAIL_MARK = 999.0
# Appended to the built package's model.py: the served model with a fault, as a broken build would be.
FAULT = f"""

_Served = TritonPythonModel


class TritonPythonModel(_Served):  # test fault: FAIL_MARK as the first input value fails the batch
    def execute(self, requests):
        for request in requests:
            first = pb_utils.get_input_tensor_by_name(request, self.input_names[0]).as_numpy()
            if first.size and float(first.flat[0]) == {FAIL_MARK}:
                raise RuntimeError("injected failure")
        return _Served.execute(self, requests)
"""
GOOD = {"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32", "data": [0.25] * 16}]}
FAILING = {"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32", "data": [FAIL_MARK] * 16}]}
MALFORMED = {"inputs": [{"name": "INPUT", "shape": [1, 3], "datatype": "FP32", "data": [0.0, 1.0, 2.0]}]}


@dataclass(frozen=True)
class Fleet:
    fleet: RunningFleet
    cluster: ClusterEndpoints
    prometheus_url: str

    def metrics(self) -> PrometheusMetrics:
        return PrometheusMetrics(self.prometheus_url)

    def replica(self, index: int) -> str:
        return self.cluster.replicas[index].http_url


@dataclass
class Sent:
    """What one client saw: HTTP status counts and each answered request's latency."""

    codes: Counter[int]
    latencies_ms: list[float]


def send(url: str, version: int, count: int, body: dict[str, object] = GOOD) -> Sent:
    """`count` requests one after another (never batched together: a failing one fails only itself)."""
    sent = Sent(Counter(), [])
    with requests.Session() as s:
        for _ in range(count):
            began = time.perf_counter()
            reply = s.post(f"{url}/v2/models/{MODEL}/versions/{version}/infer", json=body, timeout=10)
            sent.latencies_ms.append((time.perf_counter() - began) * 1000)
            sent.codes[reply.status_code] += 1
    return sent


def triton_stats(fleet: Fleet, version: int) -> dict[str, float]:
    """Triton's own statistics API (not its metrics), summed over the replicas: count and ns."""
    totals: Counter[str] = Counter()
    for replica in fleet.cluster.replicas:
        url = f"{replica.http_url}/v2/models/{MODEL}/versions/{version}/stats"
        stats = requests.get(url, timeout=10).json()["model_stats"][0]["inference_stats"]
        for kind in ("success", "fail", "queue"):
            totals[f"{kind}_count"] += stats[kind]["count"]
            totals[f"{kind}_ns"] += stats[kind]["ns"]
    return dict(totals)


def wait_for_scrape_after(fleet: Fleet, moment: float, timeout_s: float = 15.0) -> float:
    """Until every replica's latest scrape is later than `moment`; returns the time it was seen."""
    prom = PrometheusConnect(fleet.prometheus_url)
    query = f'min(timestamp(up{{job="triton",cluster="{CLUSTER}"}}))'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            latest = prom.custom_query(query)
        except requests.RequestException:
            latest = []
        if latest and float(latest[0]["value"][1]) > moment:
            return time.time()
        time.sleep(0.25)
    raise AssertionError(f"prometheus did not scrape {CLUSTER} after {moment} within {timeout_s} s")


def window_of(fleet: Fleet, version: int, start: float, end: float) -> VersionWindow:
    found = fleet.metrics().window(CLUSTER, MODEL, version, start, end)
    assert isinstance(found, VersionWindow), found
    return found


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with own_fleet(tmp_path_factory, "metrics", FLEET) as running:
        package = running.file.parent / "pkg2"

        def step(*args: str) -> None:
            result = running.cli(*args, timeout=600)
            assert result.returncode == 0, (
                f"gpufleet {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )

        step("engine", "build", MODEL, "--out", str(package))
        with (package / "model.py").open("a") as model_py:
            model_py.write(FAULT)
        step("engine", "push", MODEL, "--from", str(package))
        step("engine", "load", CLUSTER, MODEL, "2")
        endpoints = LocalFleet(running.home).endpoints()
        assert endpoints is not None
        yield Fleet(running, endpoints.cluster(CLUSTER), endpoints.prometheus_url)


def test_each_version_counts_exactly_what_it_served_summed_over_replicas(fleet: Fleet) -> None:
    # Served before the window, and scraped before it opens: in the counters, not in the window.
    for replica in (0, 1):
        assert send(fleet.replica(replica), 1, 5).codes == Counter({200: 5})
        assert send(fleet.replica(replica), 2, 5).codes == Counter({200: 5})
        assert send(fleet.replica(replica), 2, 1, FAILING).codes == Counter({500: 1})
    wait_for_scrape_after(fleet, time.time() + 0.2)
    stats_before = {v: triton_stats(fleet, v) for v in (1, 2)}
    start = time.time()
    v1 = [send(fleet.replica(0), 1, 20), send(fleet.replica(1), 1, 10)]
    v2 = [send(fleet.replica(0), 2, 15), send(fleet.replica(1), 2, 5)]
    v2_failing = [send(fleet.replica(0), 2, 4, FAILING), send(fleet.replica(1), 2, 2, FAILING)]
    # Refused by Triton's input validation before any model sees it: no counter counts these.
    malformed = send(fleet.replica(0), 1, 3, MALFORMED)
    assert [s.codes for s in v1 + v2] == [Counter({200: n}) for n in (20, 10, 15, 5)]
    assert [s.codes for s in v2_failing] == [Counter({500: 4}), Counter({500: 2})]
    assert malformed.codes == Counter({400: 3})
    stats_after = {v: triton_stats(fleet, v) for v in (1, 2)}
    end = wait_for_scrape_after(fleet, time.time() + 0.2)

    asked = time.perf_counter()
    windows = fleet.metrics().windows(CLUSTER, MODEL, [1, 2], start, end)
    took_s = time.perf_counter() - asked
    first, second = windows[1], windows[2]
    assert isinstance(first, VersionWindow) and isinstance(second, VersionWindow), windows
    assert (first.requests, first.errors) == (30, 0)
    assert (second.requests, second.errors) == (26, 6)
    assert took_s < 1.0, f"{took_s:.3f} s for one window"

    for window, sent in ((first, v1), (second, v2)):
        # The mean latency and queue time of successful requests, as Triton's statistics API has them.
        stats = {k: stats_after[window.version][k] - stats_before[window.version][k] for k in stats_after[1]}
        assert stats["fail_count"] == window.errors
        assert window.latency_mean_ms == pytest.approx(
            stats["success_ns"] / stats["success_count"] / 1e6, abs=0.002
        )
        assert window.queue_mean_ms == pytest.approx(
            stats["queue_ns"] / stats["queue_count"] / 1e6, abs=0.002
        )
        client_ms = [ms for s in sent for ms in s.latencies_ms]
        # Triton's time is part of what the client waited: its mean cannot exceed the client's.
        assert window.latency_mean_ms is not None
        assert 0 < window.latency_mean_ms <= sum(client_ms) / len(client_ms)
        assert window.queue_mean_ms is not None and 0 <= window.queue_mean_ms <= window.latency_mean_ms
        assert set(window.latency_quantiles_ms) == {0.5, 0.9, 0.95, 0.99, 0.999}
        quantiles = [window.latency_quantiles_ms[q] for q in sorted(window.latency_quantiles_ms)]
        assert quantiles == sorted(quantiles) and 0 < quantiles[-1] <= max(client_ms)
        assert window.gpu_utilization is None  # the local replicas run with --allow-gpu-metrics=false


def test_consecutive_windows_split_a_steady_load_without_losing_or_doubling_a_request(fleet: Fleet) -> None:
    stop = threading.Event()
    answered = Counter[int]()

    def load() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                reply = s.post(
                    f"{fleet.replica(1)}/v2/models/{MODEL}/versions/1/infer", json=GOOD, timeout=10
                )
                answered[reply.status_code] += 1

    start = time.time()
    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(3.0)
    middle = time.time()  # mid-load: requests are in flight on both sides of it
    time.sleep(3.0)
    stop.set()
    worker.join(timeout=15)
    assert set(answered) == {200} and answered[200] > 100, answered
    end = wait_for_scrape_after(fleet, time.time() + 0.2)

    before, after = window_of(fleet, 1, start, middle), window_of(fleet, 1, middle, end)
    assert before.requests > 0 and after.requests > 0, (before, after)
    assert before.requests + after.requests == answered[200]
    # A window shorter than a scrape interval may hold no scrape: it then counts nothing, never a guess.
    short = window_of(fleet, 1, middle, middle + 0.01)
    assert short.requests == 0 or short.requests == int(short.requests)


def test_a_version_with_series_that_served_nothing_has_zero_requests_and_no_latency(fleet: Fleet) -> None:
    wait_for_scrape_after(fleet, time.time())  # earlier tests' requests are all scraped
    start = time.time()
    end = wait_for_scrape_after(fleet, time.time() + 2.0)
    idle = window_of(fleet, 2, start, end)
    assert (idle.requests, idle.errors, idle.error_rate) == (0, 0, None)
    assert idle.latency_mean_ms is None and idle.latency_quantiles_ms == {} and idle.queue_mean_ms is None


def test_no_series_for_the_version_or_no_target_for_the_cluster_is_no_data(fleet: Fleet) -> None:
    now = time.time()
    missing = fleet.metrics().window(CLUSTER, MODEL, 7, now - 10, now)
    assert isinstance(missing, NoData), missing
    assert "no nv_inference_request_success series" in missing.reason and "version 7" in missing.reason
    elsewhere = fleet.metrics().window("local-z", MODEL, 1, now - 10, now)
    assert isinstance(elsewhere, NoData) and "no Triton scrape target" in elsewhere.reason, elsewhere


def test_a_closed_port_or_a_silent_server_is_no_data_within_the_timeout() -> None:
    with socket.socket() as closed:
        closed.bind((LOOPBACK, 0))
        url = f"http://{LOOPBACK}:{closed.getsockname()[1]}"  # bound, not listening: refused
        began = time.monotonic()
        refused = PrometheusMetrics(url, timeout_s=1).window(CLUSTER, MODEL, 1, time.time() - 10, time.time())
        assert isinstance(refused, NoData) and url in refused.reason and "unreachable" in refused.reason
        assert time.monotonic() - began < 1.0
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever answers
        url = f"http://{LOOPBACK}:{silent.getsockname()[1]}"
        began = time.monotonic()
        hung = PrometheusMetrics(url, timeout_s=1).window(CLUSTER, MODEL, 1, time.time() - 10, time.time())
        took = time.monotonic() - began
        assert isinstance(hung, NoData) and url in hung.reason and "Timeout" in hung.reason, hung
        assert 0.9 < took < 2.0, took


def test_a_stopped_prometheus_is_no_data_and_the_counts_span_its_restart(fleet: Fleet) -> None:
    start = time.time()
    assert send(fleet.replica(0), 1, 10).codes == Counter({200: 10})
    wait_for_scrape_after(fleet, time.time() + 0.2)
    assert ProcessTable(fleet.fleet.home).stop(["prometheus"]) == ["prometheus"]
    down = fleet.metrics().window(CLUSTER, MODEL, 1, start, time.time())
    assert isinstance(down, NoData) and fleet.prometheus_url in down.reason, down

    # Served while nothing scraped: Triton's counters keep them, the next scrape brings them in.
    assert send(fleet.replica(1), 1, 7).codes == Counter({200: 7})
    restarted = fleet.fleet.cli("up", timeout=300)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    again = LocalFleet(fleet.fleet.home).endpoints()
    assert again is not None and again.prometheus_url == fleet.prometheus_url  # same port, same data
    end = wait_for_scrape_after(fleet, time.time())
    assert window_of(fleet, 1, start, end).requests == 17


def test_a_replica_that_went_down_in_the_window_is_no_data_naming_it(fleet: Fleet) -> None:
    start = time.time()
    victim = fleet.cluster.replicas[1].name
    process = f"triton-{victim}"  # the fleet's process name for the replica (gpufleet/local/fleet.py)
    assert ProcessTable(fleet.fleet.home).stop([process]) == [process]
    end = wait_for_scrape_after_failure(fleet, victim)
    window = fleet.metrics().window(CLUSTER, MODEL, 1, start, end)
    assert isinstance(window, NoData) and f"replica {victim}" in window.reason, window
    assert fleet.fleet.cli("up", timeout=300).returncode == 0  # back for whatever runs after


def wait_for_scrape_after_failure(fleet: Fleet, replica: str, timeout_s: float = 15.0) -> float:
    prom = PrometheusConnect(fleet.prometheus_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prom.custom_query(f'up{{job="triton",replica="{replica}"}} == 0'):
            return time.time()
        time.sleep(0.25)
    raise AssertionError(f"prometheus did not see {replica} down within {timeout_s} s")

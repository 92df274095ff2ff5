"""A version built with `engine build --inject-*` on a real local fleet, as Triton itself counts it.

The fleet is this module's own (its own home). Version 2 of mlp is built with an injected fault
(errors, latency on a share of calls, after a clean start) and loaded beside version 1 on the one
replica. Requests go one after another to the replica's version URL, so each is its own execute()
call (a batch of one). What is checked is read from the replica's own /metrics: successes and
BACKEND failures per version, and request durations; the expected values come from the options
asked for (binomial intervals from scipy) and from what the client itself saw.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from scipy import stats

from gpufleet.local.fleet import LocalFleet
from tests.conftest import mlp_fleet, own_fleet

pytestmark = pytest.mark.integration

CLUSTER = "local-f"
MODEL = "mlp"
FLEET = mlp_fleet("ftest", [(CLUSTER, 1, 1)])
ERROR_RATE, LATENCY_MS, SLOW_SHARE, AFTER = 0.2, 150.0, 0.2, 25
FAULTY_CALLS = 200  # after the clean ones: about 40 fail, about 40 sleep (6 s)
GOOD = {"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32", "data": [0.25] * 16}]}
SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Replica:
    url: str
    metrics_url: str


@dataclass
class Sent:
    codes: Counter[int]
    ok_latencies_ms: list[float]  # of the answered (200) requests, as the client waited


@dataclass(frozen=True)
class Counts:
    """One version's counters on the replica, read from its /metrics."""

    success: float
    failure: dict[str, float]  # by reason
    duration_us: float  # nv_inference_request_duration_us: successful requests only

    def minus(self, earlier: Counts) -> Counts:
        reasons = set(self.failure) | set(earlier.failure)
        return Counts(
            self.success - earlier.success,
            {r: self.failure.get(r, 0) - earlier.failure.get(r, 0) for r in reasons},
            self.duration_us - earlier.duration_us,
        )

    @property
    def failed(self) -> float:
        return sum(self.failure.values())


def samples(metrics_url: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for line in requests.get(metrics_url, timeout=5).text.splitlines():
        match = SAMPLE.match(line)
        if match:
            found.append((match[1], dict(LABEL.findall(match[2])), float(match[3])))
    return found


def counts(replica: Replica, version: int) -> Counts:
    success, duration, failure = 0.0, 0.0, Counter[str]()
    for name, labels, value in samples(replica.metrics_url):
        if labels.get("model") != MODEL or labels.get("version") != str(version):
            continue
        if name == "nv_inference_request_success":
            success += value
        elif name == "nv_inference_request_duration_us":
            duration += value
        elif name == "nv_inference_request_failure":
            failure[labels.get("reason", "?")] += value
    return Counts(success, dict(failure), duration)


def summary_quantile(replica: Replica, version: int, quantile: str) -> float:
    """Triton's own latency summary (its last 60 s of successes), in ms."""
    for name, labels, value in samples(replica.metrics_url):
        if (
            name == "nv_inference_request_summary_us"
            and labels.get("model") == MODEL
            and labels.get("version") == str(version)
            and labels.get("quantile") == quantile
        ):
            return value / 1000
    raise AssertionError(f"no nv_inference_request_summary_us quantile {quantile} for version {version}")


def send(replica: Replica, version: int, count: int) -> Sent:
    """`count` requests one after another: each is an execute() call of its own."""
    sent = Sent(Counter(), [])
    with requests.Session() as s:
        for _ in range(count):
            began = time.perf_counter()
            reply = s.post(f"{replica.url}/v2/models/{MODEL}/versions/{version}/infer", json=GOOD, timeout=10)
            sent.codes[reply.status_code] += 1
            if reply.status_code == 200:
                sent.ok_latencies_ms.append((time.perf_counter() - began) * 1000)
    return sent


def counted_since(replica: Replica, version: int, before: Counts, requests_sent: int) -> Counts:
    """The counters' increase once every sent request is counted (they are bumped as requests end)."""
    deadline = time.monotonic() + 5
    while True:
        gained = counts(replica, version).minus(before)
        if gained.success + gained.failed >= requests_sent or time.monotonic() > deadline:
            return gained
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    with own_fleet(tmp_path_factory, "fault", FLEET) as running:
        package = running.file.parent / "pkg2"

        def step(*args: str) -> str:
            result = running.cli(*args, timeout=600)
            assert result.returncode == 0, (
                f"gpufleet {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
            return result.stdout

        built = step(
            "engine", "build", MODEL, "--out", str(package),
            "--inject-error-rate", str(ERROR_RATE),
            "--inject-latency-ms", str(LATENCY_MS),
            "--inject-slow-share", str(SLOW_SHARE),
            "--inject-after", str(AFTER),
        )  # fmt: skip
        assert "warning: injected fault" in built
        step("engine", "push", MODEL, "--from", str(package))
        step("engine", "load", CLUSTER, MODEL, "2")
        endpoints = LocalFleet(running.home).endpoints()
        assert endpoints is not None
        (only,) = endpoints.cluster(CLUSTER).replicas
        yield Replica(only.http_url, only.metrics_url)


def test_a_faulty_version_serves_n_clean_calls_then_fails_about_r_and_slows_the_slow_share(
    replica: Replica,
) -> None:
    # The first AFTER calls of version 2: all answered, none counted failed, none slept.
    before = counts(replica, 2)
    assert before.success == 0 and before.failed == 0  # loading it called nothing
    clean = send(replica, 2, AFTER)
    assert clean.codes == Counter({200: AFTER})
    first = counted_since(replica, 2, before, AFTER)
    assert (first.success, first.failed) == (AFTER, 0)
    # A single call that slept would alone make the total reach LATENCY_MS.
    assert first.duration_us / 1000 < LATENCY_MS, first

    # Then the fault: the replica's counters against what the client saw and what was asked for.
    v1_before, v2_before = counts(replica, 1), counts(replica, 2)
    faulty = send(replica, 2, FAULTY_CALLS)
    baseline = send(replica, 1, 100)
    v2 = counted_since(replica, 2, v2_before, FAULTY_CALLS)
    v1 = counted_since(replica, 1, v1_before, 100)
    assert set(faulty.codes) <= {200, 500}, faulty.codes
    assert v2.success == faulty.codes[200]
    assert v2.failure.get("BACKEND") == v2.failed == faulty.codes[500]  # raised in execute(): BACKEND
    low, high = stats.binom.interval(0.9999, FAULTY_CALLS, ERROR_RATE)
    assert low <= v2.failed <= high, (v2.failed, low, high)
    assert baseline.codes == Counter({200: 100}) and (v1.success, v1.failed) == (100, 0)

    # Slow calls: about SLOW_SHARE of them, and by LATENCY_MS, as Triton timed them.
    slow = sum(ms >= LATENCY_MS for ms in faulty.ok_latencies_ms)
    low, high = stats.binom.interval(0.9999, len(faulty.ok_latencies_ms), SLOW_SHARE)
    assert low <= slow <= high, (slow, low, high)
    mean_v1_ms = v1.duration_us / v1.success / 1000
    mean_v2_ms = v2.duration_us / v2.success / 1000
    extra_ms = LATENCY_MS * slow / v2.success  # what the slow ones add to the mean
    assert mean_v1_ms < LATENCY_MS / 10
    assert mean_v2_ms - mean_v1_ms == pytest.approx(extra_ms, rel=0.1, abs=1.0), (mean_v1_ms, mean_v2_ms)
    # A tail regression: Triton's own summary puts p50 among the fast calls and p90 among the slow.
    assert summary_quantile(replica, 2, "0.5") < LATENCY_MS / 2
    assert summary_quantile(replica, 2, "0.9") >= LATENCY_MS
    assert summary_quantile(replica, 1, "0.9") < LATENCY_MS / 2

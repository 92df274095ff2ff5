"""Canary rollouts end to end on a real local fleet (issue 11, point 10).

Two clusters in two waves (one Triton replica each, HAProxy in front, the fleet's Prometheus), real
traffic through each proxy from gpufleet's own BackgroundLoad, versions built and pushed the way a
user does it (regressed versions with `engine build --inject-*`). What the tests check comes from the
serving layer itself, not from the driver's word: which versions each Triton serves (its repository
index), what the proxy's runtime map holds, how many requests a version failed (Triton's counters),
and the rollout state and journal as stored in the model store.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gpufleet.local.processes import ProcessTable
from gpufleet.objectstore import ObjectStore
from pipelines.engines.reference import REFERENCE_FILE, Reference
from pipelines.rollout.journal import WindowJournal
from pipelines.rollout.router.haproxy import HAProxyRouter
from pipelines.rollout.state import RolloutState
from tests.conftest import GPUFLEET
from tests.rollout_fleet import LOAD_RPS, MODEL, ROLLOUT_LIMIT_S, STEPS, WAVES, WINDOW_S, Harness

pytestmark = pytest.mark.integration


@pytest.fixture
def harness(rollout_fleet: Harness) -> Harness:
    return rollout_fleet


def weights_in_history(state: RolloutState) -> list[tuple[str, int]]:
    return [
        (cluster, int(t.detail["weight"]))
        for t in state.history
        if t.event == "weight"
        for cluster in t.detail["clusters"]
    ]


def test_a_healthy_version_is_promoted_wave_by_wave_and_the_old_one_unloaded(harness: Harness) -> None:
    stable = harness.stable()
    candidate = harness.push()

    final = harness.roll_out(candidate)

    assert final.phase == "promoted", final.reason
    # Each wave went through exactly the declared steps, wave 1 before wave 2.
    assert weights_in_history(final) == [(c, w) for wave in WAVES for c in wave for w in STEPS]
    assert harness.served() == {c: {candidate} for wave in WAVES for c in wave}
    assert harness.router_weights() == {c: {} for wave in WAVES for c in wave}  # split removed
    promoted = harness.rollouts.promoted(MODEL)
    assert promoted is not None and (promoted.version, promoted.previous) == (candidate, stable)
    assert harness.rollouts.active(MODEL) is None
    windows = WindowJournal(harness.store, MODEL, final.rollout_id).records()
    for wave in WAVES:
        mine = [r for r in windows if r.cluster == wave[0]]
        assert mine and {r.weight for r in mine} <= set(STEPS)
        assert sum(r.verdict["canary_requests_total"] > 0 for r in mine[-1:]) == 1
    first_w2 = min(r.start_s for r in windows if r.cluster == WAVES[1][0])
    assert max(r.end_s for r in windows if r.cluster == WAVES[0][0]) <= first_w2 + 1e-6


def test_an_error_regression_is_rolled_back_before_the_second_wave(harness: Harness) -> None:
    stable = harness.stable()
    candidate = harness.push("--inject-error-rate", "0.3", "--inject-after", "60")

    final = harness.roll_out(candidate)

    assert final.phase == "rolled_back"
    assert final.reason and final.reason.startswith(f"{WAVES[0][0]}: ") and "error" in final.reason, (
        final.reason
    )
    assert harness.served() == {c: {stable} for wave in WAVES for c in wave}
    assert harness.router_weights() == {c: {} for wave in WAVES for c in wave}
    assert final.clusters[WAVES[1][0]].status == "waiting"  # the second wave was never touched
    assert {c for c, _ in weights_in_history(final)} == {WAVES[0][0]}
    assert {w for _, w in weights_in_history(final)} <= set(STEPS)
    windows = WindowJournal(harness.store, MODEL, final.rollout_id).records()
    assert windows and windows[-1].verdict["canary_errors_total"] > 0


def test_a_latency_regression_is_rolled_back(harness: Harness) -> None:
    stable = harness.stable()
    candidate = harness.push("--inject-latency-ms", "25", "--inject-after", "60")

    final = harness.roll_out(candidate)

    assert final.phase == "rolled_back"
    assert final.reason and "latency" in final.reason or "p9" in (final.reason or ""), final.reason
    windows = WindowJournal(harness.store, MODEL, final.rollout_id).records()
    assert windows[-1].verdict["canary_errors_total"] == 0  # latency alone rolled it back
    assert harness.served() == {c: {stable} for wave in WAVES for c in wave}


def test_no_promotion_while_prometheus_is_stopped(harness: Harness) -> None:
    stable = harness.stable()
    candidate = harness.push()
    stopper = threading.Thread(target=_stop_prometheus_when_canary, args=(harness,), daemon=True)
    stopper.start()
    try:
        final = harness.roll_out(candidate)
    finally:
        stopper.join(timeout=60)
        restarted = harness.cli("up", timeout=300)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr

    assert final.phase == "rolled_back"
    assert final.reason and "no data" in final.reason, final.reason
    assert all(w < 100 for _, w in weights_in_history(final))
    windows = WindowJournal(harness.store, MODEL, final.rollout_id).records()
    assert any(r.verdict["decision"] == "no_data" for r in windows)
    assert harness.served() == {c: {stable} for wave in WAVES for c in wave}


def _stop_prometheus_when_canary(harness: Harness) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        active = harness.rollouts.active(MODEL)
        if active and active.state.phase == "canary":
            ProcessTable(harness.running.home).stop(["prometheus"])
            return
        time.sleep(0.2)


def test_a_failure_in_the_second_wave_returns_the_first_to_the_stable_version(harness: Harness) -> None:
    stable = harness.stable()
    candidate = harness.push()
    # Once wave 1 is promoted, a stored file of the candidate stops matching its manifest: loading it
    # on the second wave's replicas is refused, and the whole rollout must roll back.
    spoiler = threading.Thread(target=_spoil_reference_after_wave_one, args=(harness, candidate), daemon=True)
    spoiler.start()

    final = harness.roll_out(candidate)
    spoiler.join(timeout=60)

    assert final.phase == "rolled_back"
    assert final.reason and final.reason.startswith(f"{WAVES[1][0]}: ") and "refused to load" in final.reason
    assert (WAVES[0][0], 100) in weights_in_history(final)  # wave 1 had been promoted
    assert final.clusters[WAVES[0][0]].status == "restored"
    assert harness.served() == {c: {stable} for wave in WAVES for c in wave}
    assert harness.router_weights() == {c: {} for wave in WAVES for c in wave}


def _spoil_reference_after_wave_one(harness: Harness, candidate: int) -> None:
    deadline = time.monotonic() + ROLLOUT_LIMIT_S
    while time.monotonic() < deadline:
        active = harness.rollouts.active(MODEL)
        if active and active.state.clusters[WAVES[0][0]].status == "promoted":
            _shift_reference(harness.store, candidate)
            return
        time.sleep(0.1)


def _shift_reference(store: ObjectStore, version: int) -> None:
    key = f"{MODEL}/{version}/{REFERENCE_FILE}"
    stored = Reference.from_bytes(store.get_bytes(key) or b"")
    shifted = Reference(
        stored.inputs, {k: np.add(v, 1.0).astype(v.dtype) for k, v in stored.outputs.items()}
    ).to_bytes()
    store.put_file(key, shifted, sha256=hashlib.sha256(shifted).hexdigest())


# Appended to a built package's model.py: a candidate that computes something else than its reference.
WRONG_OUTPUTS = """

_Served = TritonPythonModel


class TritonPythonModel(_Served):  # test fault: every output is off by one
    def execute(self, requests):
        responses = _Served.execute(self, requests)
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, pb_utils.get_output_tensor_by_name(r, name).as_numpy() + 1)
                    for name in self.output_names
                ]
            )
            for r in responses
        ]
"""


def test_a_failed_gate_moves_no_traffic(harness: Harness) -> None:
    stable = harness.stable()
    package = harness.root / "wrong-outputs"
    built = harness.cli("engine", "build", MODEL, "--out", str(package))
    assert built.returncode == 0, built.stdout + built.stderr
    with (package / "model.py").open("a") as model_py:
        model_py.write(WRONG_OUTPUTS)
    pushed = harness.cli("engine", "push", MODEL, "--from", str(package))
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    candidate = harness.newest()
    canary_before = _canary_responses(harness)

    final = harness.roll_out(candidate)

    assert final.phase == "rolled_back"
    assert final.reason and final.reason.startswith("gate failed: ") and "wrong outputs" in final.reason
    assert weights_in_history(final) == []
    assert WindowJournal(harness.store, MODEL, final.rollout_id).records() == []
    assert _canary_responses(harness) == canary_before  # the proxy sent no request to the candidate
    assert harness.served() == {c: {stable} for wave in WAVES for c in wave}


def _canary_responses(harness: Harness) -> dict[str, int]:
    """Responses each proxy's canary backend has returned, from HAProxy's own statistics."""
    found = {}
    for wave in WAVES:
        cluster = wave[0]
        router = HAProxyRouter(cluster, Path(harness.endpoints.cluster(cluster).admin_socket))
        stats = router._command("show stat")  # noqa: SLF001 - the proxy's own CSV statistics
        rows = [line.split(",") for line in stats.splitlines() if line and not line.startswith("#")]
        found[cluster] = sum(int(r[7] or 0) for r in rows if "canary" in r[0] and r[1] == "BACKEND")
    return found


def test_kill_9_then_resume_reconciles_and_finishes(harness: Harness) -> None:
    harness.stable()
    candidate = harness.push()
    env = {k: v for k, v in os.environ.items() if k not in ("GPUFLEET_HOME", "GPUFLEET_FILE")}
    env |= {"GPUFLEET_HOME": str(harness.running.home), "GPUFLEET_FILE": str(harness.running.file)}
    args = ["--window-seconds", str(WINDOW_S), "--load-rps", str(LOAD_RPS)]
    driver = subprocess.Popen(
        [*GPUFLEET, "rollout", "start", MODEL, str(candidate), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        killed_at = _wait_for(harness, lambda s: s.phase == "canary" and s.step_index == 1)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
    stored = harness.rollouts.active(MODEL)
    assert stored is not None and stored.state.rollout_id == killed_at.rollout_id
    # The proxy keeps what the dead driver set, and it is a declared step that the store records.
    weight = stored.state.clusters[WAVES[0][0]].weight
    assert weight in STEPS
    routed = harness.router_weights()[WAVES[0][0]]
    assert routed.get(candidate, 0) == weight, routed
    windows_before = WindowJournal(harness.store, MODEL, killed_at.rollout_id).records()
    # And the proxy then loses its split, as a restart would: resume must set it again at once.
    HAProxyRouter(WAVES[0][0], Path(harness.endpoints.cluster(WAVES[0][0]).admin_socket)).clear(MODEL)

    resumed = harness.cli("rollout", "resume", MODEL, *args[2:], timeout=300)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = harness.rollouts.find(MODEL, killed_at.rollout_id)
    assert final is not None and final.phase == "promoted"
    assert any(t.event == "driver took over" for t in final.history)
    assert harness.served() == {c: {candidate} for wave in WAVES for c in wave}
    windows = WindowJournal(harness.store, MODEL, killed_at.rollout_id).records()
    first = [r.index for r in windows if r.cluster == WAVES[0][0]]
    assert first == list(range(len(first))) and len(first) > len(
        [r for r in windows_before if r.cluster == WAVES[0][0]]
    )
    assert weights_in_history(final) == [(c, w) for wave in WAVES for c in wave for w in STEPS]
    # Reconciled before the first window after the resume: no window found the split missing.
    assert not [r for r in windows if "did not apply the stored split" in str(r.evidence)]


def test_a_second_rollout_of_the_model_is_refused_and_abort_restores_stable(harness: Harness) -> None:
    stable = harness.stable()
    first = harness.push()
    second = harness.push()
    env = {k: v for k, v in os.environ.items() if k not in ("GPUFLEET_HOME", "GPUFLEET_FILE")}
    env |= {"GPUFLEET_HOME": str(harness.running.home), "GPUFLEET_FILE": str(harness.running.file)}
    # No traffic: the rollout sits at its first step waiting for data.
    driver = subprocess.Popen(
        [*GPUFLEET, "rollout", "start", MODEL, str(first), "--window-seconds", str(WINDOW_S)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        running = _wait_for(harness, lambda s: s.phase == "canary")
        refused = harness.cli("rollout", "start", MODEL, str(second))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"rollout {running.rollout_id}" in refused.stderr and "is in progress" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1

        aborted = harness.cli("rollout", "abort", MODEL, timeout=120)
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        assert driver.wait(timeout=60) == 1  # the driver rolled back itself and exited "not promoted"
    finally:
        if driver.poll() is None:
            driver.kill()
    final = harness.rollouts.find(MODEL, running.rollout_id)
    assert final is not None and final.phase == "aborted"
    assert harness.rollouts.active(MODEL) is None
    assert harness.served() == {c: {stable} for wave in WAVES for c in wave}
    assert harness.router_weights() == {c: {} for wave in WAVES for c in wave}


def _wait_for(harness: Harness, condition: object, timeout_s: float = ROLLOUT_LIMIT_S) -> RolloutState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        active = harness.rollouts.active(MODEL)
        if active and condition(active.state):  # type: ignore[operator]
            return active.state
        time.sleep(0.2)
    raise AssertionError(f"the rollout did not get there within {timeout_s} s")

"""Waves on simulated windows: a wave moves as one, any cluster rolls it back, replay = live.

The windows are the simulator's real WindowPairs (pipelines/rollout/simulate.py: seeded Poisson
traffic, binomial errors, log-normal latency summaries), judged by the real CanaryJudge and policy.
Expected counts are summed from the windows fed in, not read back from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpufleet.spec import parse_fleet
from pipelines.rollout.driver import settings_from_spec
from pipelines.rollout.evidence import NoData, WindowPair
from pipelines.rollout.judge import Decision, JudgeSettings
from pipelines.rollout.policy import ActionKind, PolicySettings
from pipelines.rollout.simulate import HEALTHY, Scenario, TrafficSimulator, VersionBehaviour
from pipelines.rollout.state import RolloutSettings
from pipelines.rollout.waves import StepStart, WaveJudges, judge_settings, plan_waves

STEPS = (10, 50, 100)
JUDGE = JudgeSettings(false_rollback_rate=0.05, min_samples=20, max_error_rate=0.05, p99_latency_ms=500.0)
POLICY = PolicySettings(
    steps=STEPS, min_bake_seconds=10.0, min_samples=20, no_data_deadline_seconds=60.0, max_bake_seconds=300.0
)
WINDOW_S = 10.0
# Half the canary's requests fail: one window at 10 % (~100 canary requests) is overwhelming evidence.
BROKEN = Scenario("errors 0.1% -> 50%", VersionBehaviour(), VersionBehaviour(error_rate=0.5))


def wave(clusters: list[str], policy: PolicySettings = POLICY) -> WaveJudges:
    return WaveJudges(JUDGE, policy, clusters, 0, {c: StepStart(0.0, 0) for c in clusters}, 0.0)


def simulator(seed: int, total_rps: float = 100.0, scenario: Scenario = HEALTHY) -> TrafficSimulator:
    return TrafficSimulator(scenario, np.random.default_rng(seed), total_rps=total_rps)


def test_a_wave_waits_for_its_slowest_cluster_then_both_move_to_the_next_step_together() -> None:
    judges = wave(["busy", "quiet"])
    busy, quiet = simulator(1), simulator(2, total_rps=5.0)  # quiet: ~5 canary requests a window at 10 %

    first = {"busy": busy.window(0, WINDOW_S, 10), "quiet": quiet.window(0, WINDOW_S, 10)}
    assert first["quiet"].canary.requests < JUDGE.min_samples <= first["busy"].canary.requests
    judged, move = judges.judge(first, WINDOW_S)

    assert judged["busy"].verdict.decision is Decision.HEALTHY
    assert judged["busy"].action.kind is ActionKind.SET_WEIGHT  # ready on its own ...
    assert judged["quiet"].verdict.decision is Decision.CONTINUE
    assert judged["quiet"].verdict.reason.startswith("collecting")
    assert judged["quiet"].action.kind is ActionKind.STAY
    assert (move.kind, move.weight, move.reason) == (ActionKind.STAY, 10, judged["quiet"].action.reason)
    # ... but the wave stays, and so does the ready cluster's step.
    assert judges.step_start("busy") == judges.step_start("quiet") == StepStart(0.0, 0)

    second = {
        "busy": busy.window(WINDOW_S, 2 * WINDOW_S, 10),
        "quiet": simulator(3).window(WINDOW_S, 2 * WINDOW_S, 10),
    }
    judged, move = judges.judge(second, 2 * WINDOW_S)

    assert all(j.action.kind is ActionKind.SET_WEIGHT for j in judged.values()), judged
    assert (move.kind, move.weight) == (ActionKind.SET_WEIGHT, 50)
    assert move.cluster is None
    for name in ("busy", "quiet"):
        served = int(first[name].canary.requests + second[name].canary.requests)
        assert judges.step_start(name) == StepStart(2 * WINDOW_S, served)
    assert {judges.steps[c].step_index for c in judges.steps} == {1}
    assert all(s.finished is None for s in judges.steps.values())


def test_one_clusters_rollback_rolls_the_whole_wave_back_and_names_that_cluster() -> None:
    judges = wave(["healthy", "broken"])
    windows = {
        "healthy": simulator(4).window(0, WINDOW_S, 10),
        "broken": simulator(5, scenario=BROKEN).window(0, WINDOW_S, 10),
    }
    assert windows["broken"].canary.errors > 10 * max(windows["broken"].baseline.errors, 1)

    judged, move = judges.judge(windows, WINDOW_S)

    assert judged["healthy"].action.kind is not ActionKind.ROLLBACK
    assert judged["broken"].verdict.decision is Decision.ROLLBACK
    assert (move.kind, move.weight, move.cluster) == (ActionKind.ROLLBACK, 0, "broken")
    assert move.reason == judged["broken"].action.reason
    assert f"canary errors {int(windows['broken'].canary.errors)}/" in move.reason


def _windows(seed: int, scenario: Scenario, count: int) -> list[WindowPair | NoData]:
    traffic = simulator(seed, total_rps=30.0, scenario=scenario)
    found: list[WindowPair | NoData] = [
        traffic.window(i * WINDOW_S, (i + 1) * WINDOW_S, 10) for i in range(count)
    ]
    found[2] = NoData("prometheus unreachable")  # the time without data must come back too
    return found


# 10x the errors at 3 canary requests a second: evidence that takes several windows to build up.
SLOW_REGRESSION = Scenario("errors 0.1% -> 1%", VersionBehaviour(), VersionBehaviour(error_rate=0.01))


@pytest.mark.parametrize("scenario", [HEALTHY, SLOW_REGRESSION], ids=["healthy", "error regression"])
def test_replaying_the_journal_then_judging_gives_the_live_verdict(scenario: Scenario) -> None:
    clusters = ["w-a", "w-b"]
    count = 12
    evidence = {c: _windows(10 + i, scenario, count) for i, c in enumerate(clusters)}
    # A long bake keeps the wave at its first step throughout: every window is judged at 10 %.
    slow = PolicySettings(steps=STEPS, min_bake_seconds=1000.0, min_samples=20, max_bake_seconds=1000.0)
    live = wave(clusters, slow)
    moves = [live.judge({c: evidence[c][i] for c in clusters}, (i + 1) * WINDOW_S) for i in range(count)]

    for upto in range(count):  # a restart after window upto - 1: the journal holds windows 0 .. upto - 1
        resumed = wave(clusters, slow)
        for c in clusters:
            for i in range(upto):
                resumed.replay(c, evidence[c][i], (i + 1) * WINDOW_S)
        again = resumed.judge({c: evidence[c][upto] for c in clusters}, (upto + 1) * WINDOW_S)
        assert again == moves[upto], f"resumed after {upto} windows"
    kinds = [move.kind for _, move in moves]
    no_data = moves[2][0]["w-a"].verdict
    assert no_data.decision is Decision.NO_DATA and no_data.seconds_without_data == WINDOW_S
    if scenario is HEALTHY:
        assert set(kinds) == {ActionKind.STAY}
        assert any(j.verdict.decision is Decision.HEALTHY for judged, _ in moves for j in judged.values())
    else:  # the rollback came mid-way: the replays before, at and after it are all checked
        first = kinds.index(ActionKind.ROLLBACK)
        assert 3 < first < count - 1 and set(kinds[first:]) == {ActionKind.ROLLBACK}


def test_the_false_rollback_budget_is_split_over_the_clusters() -> None:
    settings = RolloutSettings(
        false_rollback_rate=0.06, min_samples=77, max_error_rate=0.02, p99_latency_ms=321.0
    )
    for clusters, share in ((1, 0.06), (2, 0.03), (3, 0.02)):
        split = judge_settings(settings, clusters)
        assert split.false_rollback_rate == pytest.approx(share)
        assert (split.min_samples, split.max_error_rate, split.p99_latency_ms) == (77, 0.02, 321.0)
    assert judge_settings(settings, 0).false_rollback_rate == pytest.approx(0.06)


FLEET = """
name: waves
clusters:
  - {name: second-x, cloud: local, wave: 2}
  - {name: first-y, cloud: local, wave: 1}
  - {name: third, cloud: local, wave: 3}
  - {name: first-x, cloud: local, wave: 1}
  - {name: second-y, cloud: local, wave: 2}
model_store: {bucket: waves-models}
rollout: {min_bake_seconds: 30, min_samples: 50, no_data_deadline_seconds: 90, false_rollback_rate: 0.02,
          slo: {max_error_rate: 0.03, p99_latency_ms: 250}}
"""


def test_plan_waves_keeps_the_wave_order_and_reports_unreachable_clusters() -> None:
    fleet = parse_fleet(FLEET)

    waves, left_out = plan_waves(fleet, {"second-x", "first-y", "first-x", "second-y"})
    assert waves == [["first-y", "first-x"], ["second-x", "second-y"]]  # by wave, file order inside
    assert left_out == ["third"]

    waves, left_out = plan_waves(fleet, ["third", "second-y"])
    assert waves == [["second-y"], ["third"]]  # an empty wave is dropped, not kept as []
    assert left_out == ["second-x", "first-y", "first-x"]

    assert plan_waves(fleet, set()) == ([], ["second-x", "first-y", "third", "first-x", "second-y"])


def test_settings_from_spec_applies_overrides_and_defaults_the_max_bake() -> None:
    rollout = parse_fleet(FLEET).rollout

    plain = settings_from_spec(rollout)
    assert (plain.min_bake_seconds, plain.min_samples, plain.no_data_deadline_seconds) == (30, 50, 90)
    assert (plain.false_rollback_rate, plain.max_error_rate, plain.p99_latency_ms) == (0.02, 0.03, 250)
    assert plain.max_bake_seconds == 600  # 10 x 30 s is below the 10-minute floor

    longer = settings_from_spec(rollout, min_bake_seconds=90, window_seconds=3, min_samples=None)
    assert (longer.min_bake_seconds, longer.window_seconds, longer.min_samples) == (90, 3, 50)
    assert longer.max_bake_seconds == 900  # 10 x the overridden minimum bake

    given = settings_from_spec(rollout, min_bake_seconds=90, max_bake_seconds=120)
    assert given.max_bake_seconds == 120

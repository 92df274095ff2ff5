"""The step policy on hand-made verdicts: order of steps, bake, samples, deadlines, weights."""

from __future__ import annotations

import numpy as np
import pytest

from gpufleet.spec import parse_fleet
from pipelines.rollout import policy
from pipelines.rollout.judge import Decision, Verdict
from pipelines.rollout.policy import ActionKind, PolicySettings, StepState
from tests.conftest import REPO

SETTINGS = PolicySettings(
    steps=(1, 10, 50, 100),
    min_bake_seconds=60,
    min_samples=200,
    no_data_deadline_seconds=300,
    max_bake_seconds=600,
)


def verdict(
    decision: Decision,
    at_s: float,
    canary_requests: int,
    without_data_s: float = 0.0,
    favours_no_regression: bool = True,
) -> Verdict:
    return Verdict(
        decision=decision,
        reason=f"{decision.value} at {at_s:g}",
        at_s=at_s,
        seconds_without_data=without_data_s,
        min_samples=200,
        canary_requests_total=canary_requests,
        baseline_requests_total=100 * canary_requests,
        canary_errors_total=0,
        baseline_errors_total=0,
        favours_no_regression=favours_no_regression and decision is Decision.HEALTHY,
    )


def test_first_action_is_the_first_step() -> None:
    action, state = policy.start(SETTINGS, 0.0)
    assert (action.kind, action.weight) == (ActionKind.SET_WEIGHT, 1)
    assert state.weight(SETTINGS) == 1


def test_steps_in_order_each_after_its_bake_and_samples() -> None:
    action, state = policy.start(SETTINGS, 0.0)
    weights, requests, now, step_started = [action.weight], 0, 0.0, 0.0
    while action.kind is not ActionKind.PROMOTE:
        now += 5.0
        requests += 50  # plenty: the bake is what holds each step
        action, state = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, now, requests), now)
        if action.kind is not ActionKind.STAY:
            weights.append(action.weight)
            assert now - step_started == 60  # moved at the first verdict after the bake
            step_started = now
    assert weights == [1, 10, 50, 100]
    assert action.weight == 100 and state.finished == action


def test_healthy_before_the_bake_stays() -> None:
    _, state = policy.start(SETTINGS, 0.0)
    action, state = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, 59.0, 10_000), 59.0)
    assert (action.kind, action.weight) == (ActionKind.STAY, 1)
    action, _ = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, 60.0, 10_000), 60.0)
    assert (action.kind, action.weight) == (ActionKind.SET_WEIGHT, 10)


def test_min_samples_are_counted_at_this_step() -> None:
    _, state = policy.start(SETTINGS, 0.0)
    action, state = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, 100.0, 250), 100.0)
    assert action.weight == 10  # 250 canary requests at step 1
    # 150 more at 10 %: healthy and baked, but not 200 at this step yet.
    action, state = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, 200.0, 400), 200.0)
    assert (action.kind, action.weight) == (ActionKind.STAY, 10)
    assert "150 of 200" in action.reason
    action, _ = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, 205.0, 450), 205.0)
    assert (action.kind, action.weight) == (ActionKind.SET_WEIGHT, 50)


def test_judge_rollback_is_applied_at_once() -> None:
    _, state = policy.start(SETTINGS, 0.0)
    action, state = policy.decide(SETTINGS, state, verdict(Decision.ROLLBACK, 15.0, 12), 15.0)
    assert (action.kind, action.weight) == (ActionKind.ROLLBACK, 0)
    assert action.reason == "rollback at 15"
    # Finished: the same action again, whatever comes next (a restarted driver reconciles to it).
    again, _ = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, 500.0, 10_000), 500.0)
    assert again == action


def test_no_data_deadline_rolls_back() -> None:
    _, state = policy.start(SETTINGS, 0.0)
    action, state = policy.decide(
        SETTINGS, state, verdict(Decision.NO_DATA, 299.0, 0, without_data_s=299.0), 299.0
    )
    assert (action.kind, action.weight) == (ActionKind.STAY, 1)
    action, _ = policy.decide(
        SETTINGS, state, verdict(Decision.NO_DATA, 300.0, 0, without_data_s=300.0), 300.0
    )
    assert (action.kind, action.weight) == (ActionKind.ROLLBACK, 0)
    assert "no data for 300 s" in action.reason


def test_inconclusive_until_the_max_bake_rolls_back() -> None:
    _, state = policy.start(SETTINGS, 0.0)
    action, state = policy.decide(SETTINGS, state, verdict(Decision.CONTINUE, 595.0, 600), 595.0)
    assert action.kind is ActionKind.STAY
    action, _ = policy.decide(SETTINGS, state, verdict(Decision.CONTINUE, 600.0, 600), 600.0)
    assert (action.kind, action.weight) == (ActionKind.ROLLBACK, 0)
    assert action.reason.startswith("not shown healthy at 1 % after 600 s")


def test_promotion_needs_evidence_that_favours_the_canary() -> None:
    state = StepState(step_index=2, step_started_s=0.0, canary_requests_at_step_start=0)
    leaning = verdict(Decision.HEALTHY, 100.0, 5000, favours_no_regression=False)
    action, state = policy.decide(SETTINGS, state, leaning, 100.0)
    assert (action.kind, action.weight) == (ActionKind.STAY, 50)
    action, _ = policy.decide(SETTINGS, state, verdict(Decision.HEALTHY, 105.0, 5100), 105.0)
    assert (action.kind, action.weight) == (ActionKind.PROMOTE, 100)


def test_weights_are_only_declared_steps_or_zero() -> None:
    rng = np.random.default_rng(3)
    decisions = list(Decision)
    settings = PolicySettings(steps=(5, 25, 100), min_bake_seconds=10, min_samples=20, max_bake_seconds=120)
    seen: set[int] = set()
    for _ in range(300):
        action, state = policy.start(settings, 0.0)
        now, requests = 0.0, 0
        for _ in range(60):
            now += float(rng.uniform(1, 30))
            requests += int(rng.integers(0, 40))
            pick = decisions[int(rng.choice(len(decisions), p=[0.02, 0.3, 0.6, 0.08]))]
            without = float(rng.uniform(0, 400)) if pick is Decision.NO_DATA else 0.0
            given = verdict(pick, now, requests, without, favours_no_regression=bool(rng.random() < 0.7))
            action, state = policy.decide(settings, state, given, now)
            seen.add(action.weight)
            assert action.weight in (0, *settings.steps), action
            assert (action.weight == 0) == (action.kind is ActionKind.ROLLBACK)
    assert seen == {0, 5, 25, 100}


def test_settings_from_the_example_fleet() -> None:
    rollout = parse_fleet((REPO / "fleet.yaml").read_text()).rollout
    settings = PolicySettings.from_spec(rollout)
    assert settings.steps == tuple(rollout.steps)
    assert settings.min_bake_seconds == rollout.min_bake_seconds
    assert settings.no_data_deadline_seconds == rollout.no_data_deadline_seconds
    assert settings.max_bake_seconds >= 10 * rollout.min_bake_seconds
    with pytest.raises(ValueError, match="rise strictly to 100"):
        PolicySettings(steps=(1, 50))

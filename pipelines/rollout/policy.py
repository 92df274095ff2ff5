"""Canary step policy: from the judge's verdict and the time (passed in) to the next router action.

Pure logic, no I/O and no clock: the driver calls `start` once and `decide` after every verdict,
persists the returned `StepState` before applying the `Action`, and applies it.

Rules, in order, at every verdict:
1. The judge says ROLLBACK: roll back (weight 0) with the judge's reason.
2. No data for `no_data_deadline_seconds` (the judge counts the time since data from both
   versions): roll back. A rollout that cannot be observed is not allowed to sit at its step forever.
3. The step has baked `max_bake_seconds` without being judged healthy: roll back. "Not enough
   evidence" is not success: the canary had its chance to show it is as good as the stable version
   at this traffic; the inconclusive verdict names the test that kept it back. (Advancing instead
   would expose more traffic to a version the evidence leans against; staying forever would block
   the next rollout.)
4. The judge says HEALTHY, the step has baked `min_bake_seconds`, and the canary served
   `min_samples` requests during this step: move to the next declared step; the move onto the last
   step (100 %) is the promotion, which also needs the verdict to favour "no regression"
   (`Verdict.favours_no_regression`); until then the canary stays at its last step (and rule 3
   applies). There is no bake at 100 %: no baseline traffic is left to compare.
5. Otherwise stay.

Router weights are only ever a declared step, or 0 for a rollback.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from gpufleet.spec import Rollout
from pipelines.rollout.judge import Decision, Verdict

ROLLED_BACK_WEIGHT = 0


class ActionKind(StrEnum):
    STAY = "stay"
    SET_WEIGHT = "set_weight"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    weight: int  # the canary's router weight (percent) after the action
    reason: str


def default_max_bake_seconds(min_bake_seconds: float) -> float:
    """fleet.yaml has no max bake yet: 10 minimum bakes, at least 10 minutes."""
    return max(10.0 * min_bake_seconds, 600.0)


@dataclass(frozen=True)
class PolicySettings:
    steps: tuple[int, ...] = (1, 10, 50, 100)
    min_bake_seconds: float = 60.0
    min_samples: int = 200
    no_data_deadline_seconds: float = 300.0
    max_bake_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100 or list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"steps must rise strictly to 100, got {list(self.steps)}")
        if self.max_bake_seconds < self.min_bake_seconds:
            raise ValueError("max_bake_seconds must be at least min_bake_seconds")

    @classmethod
    def from_spec(cls, rollout: Rollout, max_bake_seconds: float | None = None) -> PolicySettings:
        default_max = default_max_bake_seconds(rollout.min_bake_seconds)
        return cls(
            steps=tuple(rollout.steps),
            min_bake_seconds=float(rollout.min_bake_seconds),
            min_samples=rollout.min_samples,
            no_data_deadline_seconds=float(rollout.no_data_deadline_seconds),
            max_bake_seconds=default_max if max_bake_seconds is None else max_bake_seconds,
        )


@dataclass(frozen=True)
class StepState:
    step_index: int
    step_started_s: float
    canary_requests_at_step_start: int
    finished: Action | None = None  # the promotion or rollback, once there is one

    def weight(self, settings: PolicySettings) -> int:
        if self.finished is not None:
            return self.finished.weight
        return settings.steps[self.step_index]


def start(settings: PolicySettings, now_s: float) -> tuple[Action, StepState]:
    """The first action of a rollout: the first step's weight (a promotion if it is already 100)."""
    state = StepState(step_index=0, step_started_s=now_s, canary_requests_at_step_start=0)
    if settings.steps[0] == 100:
        action = Action(ActionKind.PROMOTE, 100, "the only step is 100 %")
        return action, replace(state, finished=action)
    return Action(ActionKind.SET_WEIGHT, settings.steps[0], "first step"), state


def decide(
    settings: PolicySettings, state: StepState, verdict: Verdict, now_s: float
) -> tuple[Action, StepState]:
    """The next action and the state to persist before applying it. Once finished, the final action
    is repeated (a restarted driver reconciles to it)."""
    if state.finished is not None:
        return state.finished, state
    weight = settings.steps[state.step_index]
    baked = now_s - state.step_started_s
    if verdict.decision is Decision.ROLLBACK:
        return _finish(state, Action(ActionKind.ROLLBACK, ROLLED_BACK_WEIGHT, verdict.reason))
    if (
        verdict.decision is Decision.NO_DATA
        and verdict.seconds_without_data >= settings.no_data_deadline_seconds
    ):
        deadline = settings.no_data_deadline_seconds
        reason = f"no data for {verdict.seconds_without_data:.0f} s (deadline {deadline:g} s)"
        return _finish(state, Action(ActionKind.ROLLBACK, ROLLED_BACK_WEIGHT, reason))
    step_samples = verdict.canary_requests_total - state.canary_requests_at_step_start
    ready = (
        verdict.decision is Decision.HEALTHY
        and baked >= settings.min_bake_seconds
        and step_samples >= settings.min_samples
    )
    if not ready and baked >= settings.max_bake_seconds:
        reason = (
            f"not shown healthy at {weight} % after {baked:.0f} s "
            f"(max bake {settings.max_bake_seconds:g} s): {verdict.reason}"
        )
        return _finish(state, Action(ActionKind.ROLLBACK, ROLLED_BACK_WEIGHT, reason))
    if not ready:
        return Action(ActionKind.STAY, weight, _waiting_for(settings, verdict, baked, step_samples)), state
    next_index = state.step_index + 1
    next_weight = settings.steps[next_index]
    if next_weight == 100 and not verdict.favours_no_regression:
        # Nothing is compared after the promotion: ask for evidence that leans healthy, not only for
        # the absence of a strong case against the canary.
        if baked >= settings.max_bake_seconds:
            reason = f"evidence did not favour the canary at {weight} % after {baked:.0f} s: {verdict.reason}"
            return _finish(state, Action(ActionKind.ROLLBACK, ROLLED_BACK_WEIGHT, reason))
        waiting = f"before promoting, waiting for the evidence to favour the canary: {verdict.reason}"
        return Action(ActionKind.STAY, weight, waiting), state
    moved = StepState(next_index, now_s, verdict.canary_requests_total)
    if next_weight == 100:
        return _finish(moved, Action(ActionKind.PROMOTE, 100, f"healthy at {weight} %: {verdict.reason}"))
    return Action(ActionKind.SET_WEIGHT, next_weight, f"healthy at {weight} %: {verdict.reason}"), moved


def _finish(state: StepState, action: Action) -> tuple[Action, StepState]:
    return action, replace(state, finished=action)


def _waiting_for(settings: PolicySettings, verdict: Verdict, baked: float, step_samples: int) -> str:
    if verdict.decision is not Decision.HEALTHY:
        return verdict.reason
    if baked < settings.min_bake_seconds:
        return f"baking: {baked:.0f} of {settings.min_bake_seconds:g} s"
    return f"collecting at this step: {step_samples} of {settings.min_samples} canary requests"

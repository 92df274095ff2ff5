"""Waves: which clusters roll out together, and how one wave's clusters move through the steps.

Clusters roll out in the fleet file's wave order (`clusters[].wave`). Inside a wave every cluster has
its own judge (a regression seen on one cluster's hardware is not diluted by the others' traffic) and
its own policy state, and the wave moves as one:
- any cluster's policy says roll back: the whole rollout rolls back (every touched cluster returns to
  the stable version);
- every cluster's policy says the step is done: the wave moves to the next step together (or is
  promoted, at 100 %);
- otherwise the wave stays (a cluster that is ready waits for the others; its policy is asked again,
  unchanged, at the next window — the policy is a pure function, so asking again costs nothing).
The rollout's false-rollback budget is split evenly over the clusters' judges (a union bound: each
cluster is one more chance to roll a healthy version back).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from gpufleet.spec import Fleet
from pipelines.rollout.evidence import NoData, WindowPair
from pipelines.rollout.judge import CanaryJudge, JudgeSettings, Verdict
from pipelines.rollout.policy import Action, ActionKind, PolicySettings, StepState, decide
from pipelines.rollout.state import RolloutSettings


def plan_waves(fleet: Fleet, reachable: Collection[str]) -> tuple[list[list[str]], list[str]]:
    """The waves of the clusters the rollout can reach, in the fleet's order, and the clusters left
    out (declared, but not reachable from here: e.g. cloud clusters while the local fleet runs)."""
    waves = [[c.name for c in wave if c.name in reachable] for wave in fleet.clusters_by_wave()]
    left_out = [c.name for c in fleet.clusters if c.name not in reachable]
    return [w for w in waves if w], left_out


def judge_settings(settings: RolloutSettings, clusters: int) -> JudgeSettings:
    return JudgeSettings(
        false_rollback_rate=settings.false_rollback_rate / max(clusters, 1),
        min_samples=settings.min_samples,
        max_error_rate=settings.max_error_rate,
        p99_latency_ms=settings.p99_latency_ms,
    )


def policy_settings(settings: RolloutSettings, steps: Sequence[int]) -> PolicySettings:
    return PolicySettings(
        steps=tuple(steps),
        min_bake_seconds=settings.min_bake_seconds,
        min_samples=settings.min_samples,
        no_data_deadline_seconds=settings.no_data_deadline_seconds,
        max_bake_seconds=settings.max_bake_seconds,
    )


@dataclass(frozen=True)
class WaveMove:
    """What the wave does after a window: stay, go to the next step, promote, or roll back."""

    kind: ActionKind
    weight: int  # the canary's percent after the move
    reason: str
    cluster: str | None = None  # the cluster whose verdict decided a rollback


@dataclass(frozen=True)
class ClusterJudgement:
    verdict: Verdict
    action: Action  # what this cluster's policy alone would do


@dataclass(frozen=True)
class StepStart:
    at_s: float
    canary_requests: int


class WaveJudges:
    """The judges and step states of one wave's clusters."""

    def __init__(
        self,
        judge: JudgeSettings,
        policy: PolicySettings,
        clusters: Sequence[str],
        step_index: int,
        step_starts: Mapping[str, StepStart],
        started_s: float,
    ) -> None:
        self.policy = policy
        self.judges = {c: CanaryJudge(judge, started_s) for c in clusters}
        self.steps = {
            c: StepState(step_index, step_starts[c].at_s, step_starts[c].canary_requests) for c in clusters
        }

    def replay(self, cluster: str, evidence: WindowPair | NoData, at_s: float) -> None:
        """Feed a window judged before a restart: the judge gets back the evidence it had."""
        self.judges[cluster].observe(evidence, at_s)

    def judge(
        self, evidence: Mapping[str, WindowPair | NoData], now_s: float
    ) -> tuple[dict[str, ClusterJudgement], WaveMove]:
        judged: dict[str, ClusterJudgement] = {}
        moved: dict[str, StepState] = {}
        for cluster, judge in self.judges.items():
            verdict = judge.observe(evidence[cluster], now_s)
            action, state = decide(self.policy, self.steps[cluster], verdict, now_s)
            judged[cluster] = ClusterJudgement(verdict, action)
            moved[cluster] = state
        rollbacks = [c for c, j in judged.items() if j.action.kind is ActionKind.ROLLBACK]
        if rollbacks:
            culprit = rollbacks[0]
            return judged, WaveMove(ActionKind.ROLLBACK, 0, judged[culprit].action.reason, culprit)
        advancing = {ActionKind.SET_WEIGHT, ActionKind.PROMOTE}
        if all(j.action.kind in advancing for j in judged.values()):
            self.steps = {c: replace(s, finished=None) for c, s in moved.items()}
            first = next(iter(judged.values())).action
            return judged, WaveMove(first.kind, first.weight, first.reason)
        staying = next(j for j in judged.values() if j.action.kind not in advancing)
        current = self.policy.steps[next(iter(self.steps.values())).step_index]
        return judged, WaveMove(ActionKind.STAY, current, staying.action.reason)

    def step_start(self, cluster: str) -> StepStart:
        state = self.steps[cluster]
        return StepStart(state.step_started_s, state.canary_requests_at_step_start)

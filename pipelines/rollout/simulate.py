"""Synthetic traffic for canary rollouts on a simulated clock: no waiting, one seeded numpy Generator.

`TrafficSimulator.window` draws one window of traffic split by the canary's router weight and
returns the `WindowPair` a metrics source would build from Triton for it: per-version request and
error increments, the exact mean latency and the summary quantiles (0.5 ... 0.999) of that window's
own requests, each an observed value at rank ceil(l n) as a summary reports it. `replay_rollout`
drives the judge and the policy against it, window after window, as the driver will against a
fleet.

Latency model: log-normal (the usual shape of a service's latency) given by its median and p99; a
"tail-only" change multiplies the p99 while leaving everything up to `tail_from_level` (the p90 by
default) exactly as it was, by steepening the log-normal above that level.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt
from scipy import stats

from pipelines.rollout import policy
from pipelines.rollout.evidence import NoData, VersionWindow, WindowPair
from pipelines.rollout.judge import CanaryJudge, JudgeSettings, Verdict
from pipelines.rollout.policy import Action, ActionKind, PolicySettings, StepState

REPORTED_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
_Z99 = float(stats.norm.ppf(0.99))
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LatencyModel:
    median_ms: float = 20.0
    p99_ms: float = 100.0
    tail_p99_factor: float = 1.0  # 1.5: the p99 is 50 % higher, nothing up to tail_from_level moves
    tail_from_level: float = 0.9

    @cached_property
    def _mu(self) -> float:
        return math.log(self.median_ms)

    @cached_property
    def _sigma(self) -> float:
        return math.log(self.p99_ms / self.median_ms) / _Z99

    @cached_property
    def _knee_z(self) -> float:
        return float(stats.norm.ppf(self.tail_from_level))

    @cached_property
    def _tail_sigma(self) -> float:
        knee = self._mu + self._sigma * self._knee_z
        return (math.log(self.p99_ms * self.tail_p99_factor) - knee) / (_Z99 - self._knee_z)

    def from_standard_normal(self, z: FloatArray) -> FloatArray:
        """Latency (ms) whose standard-normal score is z: the model's quantile function."""
        knee_z = self._knee_z
        log_ms = np.where(
            z <= knee_z,
            self._mu + self._sigma * z,
            self._mu + self._sigma * knee_z + self._tail_sigma * (z - knee_z),
        )
        exp: FloatArray = np.exp(log_ms)
        return exp

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        return self.from_standard_normal(rng.standard_normal(n))

    def quantile(self, level: float) -> float:
        return float(self.from_standard_normal(np.array([stats.norm.ppf(level)]))[0])

    def survival(self, latency_ms: float) -> float:
        log_ms = math.log(latency_ms)
        knee = self._mu + self._sigma * self._knee_z
        if log_ms <= knee:
            return float(stats.norm.sf((log_ms - self._mu) / self._sigma))
        return float(stats.norm.sf(self._knee_z + (log_ms - knee) / self._tail_sigma))

    def logpdf(self, latency_ms: FloatArray) -> FloatArray:
        """Log density of the latency (per ms), for an oracle that knows the model."""
        log_ms = np.log(latency_ms)
        knee = self._mu + self._sigma * self._knee_z
        below = stats.norm.logpdf((log_ms - self._mu) / self._sigma) - math.log(self._sigma)
        above = stats.norm.logpdf(self._knee_z + (log_ms - knee) / self._tail_sigma) - math.log(
            self._tail_sigma
        )
        density: FloatArray = np.where(log_ms <= knee, below, above) - log_ms
        return density


@dataclass(frozen=True)
class VersionBehaviour:
    error_rate: float = 0.001
    latency: LatencyModel = field(default_factory=LatencyModel)


@dataclass(frozen=True)
class Scenario:
    name: str
    baseline: VersionBehaviour
    canary: VersionBehaviour

    @property
    def is_regression(self) -> bool:
        return self.baseline != self.canary


HEALTHY = Scenario("healthy", VersionBehaviour(), VersionBehaviour())
ERROR_REGRESSION = Scenario("errors 0.1% -> 5%", VersionBehaviour(), VersionBehaviour(error_rate=0.05))
TAIL_REGRESSION = Scenario(
    "p99 +50% (tail only)", VersionBehaviour(), VersionBehaviour(latency=LatencyModel(tail_p99_factor=1.5))
)


class TrafficSimulator:
    """Poisson arrivals at `total_rps`, each request to the canary with probability weight/100."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator, total_rps: float = 100.0) -> None:
        self.scenario = scenario
        self.rng = rng
        self.total_rps = total_rps

    def window(self, start_s: float, end_s: float, canary_weight: int) -> WindowPair:
        total = int(self.rng.poisson(self.total_rps * (end_s - start_s)))
        canary_requests = int(self.rng.binomial(total, canary_weight / 100.0))
        return WindowPair(
            baseline=self._version(1, self.scenario.baseline, start_s, end_s, total - canary_requests),
            canary=self._version(2, self.scenario.canary, start_s, end_s, canary_requests),
        )

    def _version(
        self, version: int, behaviour: VersionBehaviour, start_s: float, end_s: float, requests: int
    ) -> VersionWindow:
        errors = int(self.rng.binomial(requests, behaviour.error_rate))
        if requests == 0:
            return VersionWindow(version, start_s, end_s, 0, 0, None, {})
        latencies = behaviour.latency.sample(self.rng, requests)
        values = np.quantile(latencies, REPORTED_QUANTILES, method="inverted_cdf")
        return VersionWindow(
            version=version,
            start_s=start_s,
            end_s=end_s,
            requests=requests,
            errors=errors,
            latency_mean_ms=float(latencies.mean()),
            latency_quantiles_ms={lvl: float(v) for lvl, v in zip(REPORTED_QUANTILES, values, strict=True)},
        )


@dataclass(frozen=True)
class ReplayStep:
    at_s: float
    weight: int
    verdict: Verdict
    action: Action


@dataclass(frozen=True)
class ReplayOutcome:
    outcome: str  # "rolled_back", "promoted" or "unfinished"
    at_s: float
    reason: str
    max_weight: int  # the largest canary weight the rollout reached (100: promoted)
    steps: tuple[ReplayStep, ...] = ()


def replay_rollout(
    simulator: TrafficSimulator,
    judge_settings: JudgeSettings,
    policy_settings: PolicySettings,
    window_s: float = 5.0,
    horizon_s: float = 7200.0,
    keep_steps: bool = False,
    no_data: Iterator[bool] | None = None,
) -> ReplayOutcome:
    """One rollout from t=0: window after window, judge, decide, apply the weight. `no_data`, if given,
    says per window whether the metrics source failed (the judge then gets NoData)."""
    action, state = policy.start(policy_settings, 0.0)
    judge = CanaryJudge(judge_settings, started_s=0.0)
    history: list[ReplayStep] = []
    max_weight = action.weight
    now = 0.0
    while action.kind not in (ActionKind.PROMOTE, ActionKind.ROLLBACK) and now < horizon_s:
        weight = state.weight(policy_settings)
        pair = simulator.window(now, now + window_s, weight)
        now += window_s
        evidence: WindowPair | NoData = pair
        if no_data is not None and next(no_data):
            evidence = NoData("simulated metrics outage")
        verdict = judge.observe(evidence, now)
        action, state = policy.decide(policy_settings, state, verdict, now)
        max_weight = max(max_weight, action.weight)
        if keep_steps:
            history.append(ReplayStep(now, action.weight, verdict, action))
    return _outcome(action, state, now, max_weight, tuple(history))


def _outcome(
    action: Action, state: StepState, now: float, max_weight: int, history: tuple[ReplayStep, ...]
) -> ReplayOutcome:
    if action.kind is ActionKind.ROLLBACK:
        return ReplayOutcome("rolled_back", now, action.reason, max_weight, history)
    if action.kind is ActionKind.PROMOTE:
        return ReplayOutcome("promoted", now, action.reason, 100, history)
    return ReplayOutcome("unfinished", now, action.reason, max_weight, history)

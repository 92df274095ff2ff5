"""Canary judging side by side on replayed synthetic rollouts: ours vs Flagger-style vs Argo-style.

Traffic: 100 req/s (Poisson), the canary gets the current step's share (1 % = 1 req/s at step 1);
baseline latency log-normal, p50 20 ms, p99 100 ms; baseline errors 0.1 %. Scenarios, from t=0 at the
canary: errors 0.1 % -> 5 %; p99 +50 % with everything up to the p90 unchanged; healthy (identical).
All on a simulated clock from one seed (pipelines/rollout/simulate.py); nothing waits.

- ours: pipelines/rollout/judge.py + policy.py with the example fleet.yaml's rollout settings
  (steps 1/10/50/100, bake 60 s, min_samples 200, no-data deadline 300 s, SLO 1 % / 200 ms), 5 s
  evaluation windows, false-rollback budget --alpha (default 0.01: the issue's 1 % target as a
  guarantee, not only as a measurement; fleet.yaml's example says 0.05).
- flagger-style: a check every 1 min over the last minute (canary error rate > 1 % or canary p99 >
  200 ms fails it); a passing check moves to the next step weight (1, 10, 50, 100, then promotes); failed
  checks add up; as Flagger's scheduler does, the count is compared with threshold 5 at the start of a
  tick, so 5 failed checks roll back at the next tick (6 min when every check fails).
- argo-style: a measurement every 5 min over the last 5 min with the same limits; passing moves a step;
  the run fails when failed measurements exceed failureLimit 3 (the 4th failure, 20 min).
- oracle: Wald's SPRT that knows both versions' true error rates and latency distributions, on the
  canary's requests at 1 req/s, thresholds log(1/alpha): the earliest a decision at that budget could
  come on step-1 traffic.
- conditional (error regressions): the judge's errors test told the true rate ratio and given the
  whole budget, on step-1 traffic in the same windows as ours: the limit for a test that must hold
  whatever the baseline's error rate (it cannot know it; each baseline error counts against the
  canary's case), which ours approaches by mixing over ratios with 0.8 of the budget.

Prints per regression the median and p90 time to rollback (a replay that never rolls back counts as
infinitely late) and the miss rate (rollouts that reached 100 %), the false-rollback rate over the
healthy replays, and writes reports/canary-benchmark.html (self-contained) and .png.

    .venv/bin/python benchmarks/canary.py [--replays 200] [--healthy-replays 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gpufleet.spec import parse_fleet  # noqa: E402
from pipelines.rollout.judge import JudgeSettings  # noqa: E402
from pipelines.rollout.policy import PolicySettings  # noqa: E402
from pipelines.rollout.simulate import (  # noqa: E402
    ERROR_REGRESSION,
    HEALTHY,
    TAIL_REGRESSION,
    ReplayOutcome,
    Scenario,
    TrafficSimulator,
    replay_rollout,
)

TOTAL_RPS = 100.0
WINDOW_S = 5.0
HORIZON_S = 7200.0
REGRESSIONS = (ERROR_REGRESSION, TAIL_REGRESSION)
OURS, FLAGGER, ARGO = "ours", "flagger-style", "argo-style"


@dataclass(frozen=True)
class ThresholdPolicy:
    """A fixed-limit, fixed-interval canary analysis (the Flagger and Argo Rollouts shape)."""

    name: str
    interval_s: float
    failure_limit: int
    # Flagger: rollback once failed >= limit, checked at the start of the next tick.
    # Argo: rollback as soon as failed > limit, right after the measurement.
    flagger_counting: bool
    steps: tuple[int, ...] = (1, 10, 50, 100)
    max_error_rate: float = 0.01
    p99_latency_ms: float = 200.0


def replay_threshold_policy(
    policy: ThresholdPolicy, simulator: TrafficSimulator, horizon_s: float
) -> ReplayOutcome:
    step, failed, now = 0, 0, 0.0
    max_weight = policy.steps[0]
    while now < horizon_s:
        weight = policy.steps[step]
        window = simulator.window(now, now + policy.interval_s, weight).canary
        now += policy.interval_s
        if policy.flagger_counting and failed >= policy.failure_limit:
            return ReplayOutcome("rolled_back", now, f"{failed} failed checks", max_weight)
        p99 = window.latency_quantiles_ms.get(0.99)
        passed = (
            window.requests > 0
            and window.errors / window.requests <= policy.max_error_rate
            and p99 is not None
            and p99 <= policy.p99_latency_ms
        )
        if not passed:
            failed += 1
            if not policy.flagger_counting and failed > policy.failure_limit:
                return ReplayOutcome("rolled_back", now, f"{failed} failed measurements", max_weight)
            continue
        if weight == 100:
            return ReplayOutcome("promoted", now, "passed at 100 %", 100)
        step += 1
        max_weight = max(max_weight, policy.steps[step])
    return ReplayOutcome("unfinished", now, "horizon", max_weight)


FLAGGER_STYLE = ThresholdPolicy(FLAGGER, interval_s=60.0, failure_limit=5, flagger_counting=True)
ARGO_STYLE = ThresholdPolicy(ARGO, interval_s=300.0, failure_limit=3, flagger_counting=False)


def oracle_decision_times(
    scenario: Scenario, rng: np.random.Generator, alpha: float, replays: int, canary_rps: float = 1.0
) -> np.ndarray:
    """Seconds until Wald's SPRT, knowing both versions exactly, reaches log(1/alpha) on the canary's
    requests (Poisson at canary_rps); inf where it does not within the simulated requests."""
    requests = 4000
    arrivals = np.cumsum(rng.exponential(1.0 / canary_rps, (replays, requests)), axis=1)
    canary, baseline = scenario.canary, scenario.baseline
    llr = np.zeros((replays, requests))
    if canary.error_rate != baseline.error_rate:
        errors = rng.random((replays, requests)) < canary.error_rate
        llr += np.where(
            errors,
            math.log(canary.error_rate / baseline.error_rate),
            math.log((1 - canary.error_rate) / (1 - baseline.error_rate)),
        )
    if canary.latency != baseline.latency:
        latencies = canary.latency.sample(rng, replays * requests).reshape(replays, requests)
        llr += canary.latency.logpdf(latencies) - baseline.latency.logpdf(latencies)
    crossed = np.cumsum(llr, axis=1) >= math.log(1.0 / alpha)
    first = np.argmax(crossed, axis=1)
    return np.where(crossed.any(axis=1), arrivals[np.arange(replays), first], np.inf)


def conditional_oracle_times(
    scenario: Scenario, rng: np.random.Generator, alpha: float, replays: int, window_s: float
) -> np.ndarray:
    """Seconds until the product over windows of Binomial(e_c; e, p) / Binomial(e_c; e, q) at the true
    error-rate ratio reaches 1/alpha, on 1 % of TOTAL_RPS in window_s windows (window ends); inf where
    it does not within 600 s."""
    windows = int(600.0 / window_s)
    total = rng.poisson(TOTAL_RPS * window_s, (replays, windows))
    canary = rng.binomial(total, 0.01)
    canary_errors = rng.binomial(canary, scenario.canary.error_rate)
    errors = canary_errors + rng.binomial(total - canary, scenario.baseline.error_rate)
    ratio = scenario.canary.error_rate / scenario.baseline.error_rate
    q = canary / np.maximum(total, 1)
    p = ratio * q / (ratio * q + 1.0 - q)
    llr = stats.binom.logpmf(canary_errors, errors, p) - stats.binom.logpmf(canary_errors, errors, q)
    llr = np.where(canary > 0, np.nan_to_num(llr), 0.0)  # a window the canary did not serve is no data
    crossed = np.cumsum(llr, axis=1) >= math.log(1.0 / alpha)
    first = np.argmax(crossed, axis=1)
    return np.where(crossed.any(axis=1), (first + 1) * window_s, np.inf)


@dataclass(frozen=True)
class Summary:
    policy: str
    scenario: str
    replays: int
    rolled_back: int
    reached_100: int
    median_s: float  # inf: at least half never rolled back
    p90_s: float
    times_s: tuple[float, ...] = field(repr=False)  # time to rollback per replay (inf: none)
    reasons: dict[str, int] = field(default_factory=dict)
    promoted_median_s: float | None = None

    @property
    def miss_rate(self) -> float:
        return self.reached_100 / self.replays

    @property
    def rollback_rate(self) -> float:
        return self.rolled_back / self.replays


def summarise(policy: str, scenario: Scenario, outcomes: Sequence[ReplayOutcome]) -> Summary:
    times = np.array([o.at_s if o.outcome == "rolled_back" else np.inf for o in outcomes])
    promoted = [o.at_s for o in outcomes if o.outcome == "promoted"]
    return Summary(
        policy=policy,
        scenario=scenario.name,
        replays=len(outcomes),
        rolled_back=int(np.isfinite(times).sum()),
        reached_100=sum(o.max_weight == 100 for o in outcomes),
        median_s=float(np.quantile(times, 0.5, method="inverted_cdf")),
        p90_s=float(np.quantile(times, 0.9, method="inverted_cdf")),
        times_s=tuple(float(t) for t in times),
        reasons=dict(Counter(_reason_kind(o) for o in outcomes if o.outcome == "rolled_back")),
        promoted_median_s=float(np.median(promoted)) if promoted else None,
    )


def _reason_kind(outcome: ReplayOutcome) -> str:
    if outcome.reason.startswith("not shown healthy"):
        return "max bake, inconclusive"
    if outcome.reason.startswith("no data"):
        return "no-data deadline"
    if "failed" in outcome.reason:
        return "failed checks"
    return "judge test"


@dataclass(frozen=True)
class BenchmarkResult:
    alpha: float
    seed: int
    summaries: tuple[Summary, ...]
    oracle: dict[str, tuple[float, float]]  # scenario -> (median, p90) seconds
    conditional_oracle: dict[str, tuple[float, float]]  # error regressions only
    flagger_at_fifth_failure_median_s: float
    runtime_s: float

    def summary(self, policy: str, scenario: str) -> Summary:
        return next(s for s in self.summaries if s.policy == policy and s.scenario == scenario)

    @property
    def speed_up_vs_flagger(self) -> float:
        return (
            self.summary(FLAGGER, ERROR_REGRESSION.name).median_s
            / self.summary(OURS, ERROR_REGRESSION.name).median_s
        )

    @property
    def false_rollback_rate(self) -> float:
        return self.summary(OURS, HEALTHY.name).rollback_rate


def example_rollout_settings(alpha: float) -> tuple[JudgeSettings, PolicySettings]:
    rollout = parse_fleet((REPO / "fleet.yaml").read_text()).rollout
    return JudgeSettings.from_spec(rollout, false_rollback_rate=alpha), PolicySettings.from_spec(rollout)


def run_benchmark(regression_replays: int, healthy_replays: int, seed: int, alpha: float) -> BenchmarkResult:
    began = time.perf_counter()
    judge_settings, policy_settings = example_rollout_settings(alpha)
    summaries: list[Summary] = []
    oracle: dict[str, tuple[float, float]] = {}
    conditional: dict[str, tuple[float, float]] = {}
    flagger_fifth = math.inf
    for index, scenario in enumerate((*REGRESSIONS, HEALTHY)):
        replays = healthy_replays if scenario is HEALTHY else regression_replays
        # One child seed per (scenario, policy, replay): every replay is reproducible on its own.
        scenario_seed = np.random.SeedSequence([seed, index])
        ours_seeds, flagger_seeds, argo_seeds, oracle_seed = scenario_seed.spawn(4)
        (conditional_seed,) = np.random.SeedSequence([seed, index, 1]).spawn(1)

        def simulators(seeds: np.random.SeedSequence, scenario: Scenario = scenario, replays: int = replays):
            return (
                TrafficSimulator(scenario, np.random.default_rng(s), TOTAL_RPS) for s in seeds.spawn(replays)
            )

        ours = [
            replay_rollout(sim, judge_settings, policy_settings, window_s=WINDOW_S, horizon_s=HORIZON_S)
            for sim in simulators(ours_seeds)
        ]
        flagger = [
            replay_threshold_policy(FLAGGER_STYLE, sim, HORIZON_S) for sim in simulators(flagger_seeds)
        ]
        argo = [replay_threshold_policy(ARGO_STYLE, sim, HORIZON_S) for sim in simulators(argo_seeds)]
        summaries += [
            summarise(OURS, scenario, ours),
            summarise(FLAGGER, scenario, flagger),
            summarise(ARGO, scenario, argo),
        ]
        if scenario is ERROR_REGRESSION:
            fifth = [
                o.at_s - FLAGGER_STYLE.interval_s if o.outcome == "rolled_back" else math.inf for o in flagger
            ]
            flagger_fifth = float(np.quantile(fifth, 0.5, method="inverted_cdf"))
        if scenario.is_regression:
            times = oracle_decision_times(
                scenario, np.random.default_rng(oracle_seed), alpha, regression_replays
            )
            oracle[scenario.name] = _median_p90(times)
        if scenario.canary.error_rate != scenario.baseline.error_rate:
            times = conditional_oracle_times(
                scenario, np.random.default_rng(conditional_seed), alpha, regression_replays, WINDOW_S
            )
            conditional[scenario.name] = _median_p90(times)
    return BenchmarkResult(
        alpha, seed, tuple(summaries), oracle, conditional, flagger_fifth, time.perf_counter() - began
    )


def _median_p90(times: np.ndarray) -> tuple[float, float]:
    return (
        float(np.quantile(times, 0.5, method="inverted_cdf")),
        float(np.quantile(times, 0.9, method="inverted_cdf")),
    )


def _seconds(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.0f}"


def report_lines(result: BenchmarkResult) -> list[str]:
    lines = [
        f"canary benchmark: {TOTAL_RPS:.0f} req/s, canary at the step's share (1 % = 1 req/s), "
        f"{WINDOW_S:g} s evaluation windows for ours, seed {result.seed}",
        f"ours: fleet.yaml rollout settings, false_rollback_rate {result.alpha:g} (fleet.yaml example: 0.05)",
        f"{'regression':24s} {'policy':14s} {'median s':>9s} {'p90 s':>7s} {'miss %':>7s} "
        f"{'rolled back':>12s}",
    ]
    for scenario in REGRESSIONS:
        for policy in (OURS, FLAGGER, ARGO):
            s = result.summary(policy, scenario.name)
            lines.append(
                f"{scenario.name:24s} {policy:14s} {_seconds(s.median_s):>9s} {_seconds(s.p90_s):>7s} "
                f"{100 * s.miss_rate:>7.1f} {s.rolled_back:>6d}/{s.replays:<5d}"
            )
        median, p90 = result.oracle[scenario.name]
        lines.append(
            f"{scenario.name:24s} {'oracle SPRT':14s} {_seconds(median):>9s} {_seconds(p90):>7s}"
            f"   (knows the true rates, 1 req/s, thresholds log(1/{result.alpha:g}))"
        )
        if scenario.name in result.conditional_oracle:
            median, p90 = result.conditional_oracle[scenario.name]
            lines.append(
                f"{scenario.name:24s} {'conditional':14s} {_seconds(median):>9s} {_seconds(p90):>7s}"
                f"   (our errors test told the true ratio, whole budget; baseline rate unknown)"
            )
    lines.append(
        f"flagger-style if it rolled back at the 5th failed check instead of the next tick: median "
        f"{_seconds(result.flagger_at_fifth_failure_median_s)} s"
    )
    for policy in (OURS, FLAGGER, ARGO):
        s = result.summary(policy, HEALTHY.name)
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items())) or "none"
        promoted = "-" if s.promoted_median_s is None else f"{s.promoted_median_s:.0f}"
        lines.append(
            f"healthy {policy:14s} false rollbacks {s.rolled_back}/{s.replays} = "
            f"{100 * s.rollback_rate:.2f} % "
            f"({reasons}); median time to promotion {promoted} s"
        )
    return lines


def write_report(result: BenchmarkResult, directory: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    png = directory / "canary-benchmark.png"
    page = directory / "canary-benchmark.html"
    figure, axes = plt.subplots(1, len(REGRESSIONS), figsize=(12, 4.5))
    for axis, scenario in zip(axes, REGRESSIONS, strict=True):
        for policy in (OURS, FLAGGER, ARGO):
            times = np.sort(np.array(result.summary(policy, scenario.name).times_s))
            shown = np.minimum(times, HORIZON_S)
            fraction = np.arange(1, len(times) + 1) / len(times)
            finite = np.isfinite(times)
            axis.step(shown[finite], fraction[finite], where="post", label=policy)
        median, _ = result.oracle[scenario.name]
        if math.isfinite(median):
            axis.axvline(median, color="grey", linestyle=":", label="oracle SPRT median")
        axis.set_xscale("log")
        axis.set_xlim(5, HORIZON_S)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("seconds from canary start to rollback")
        axis.set_ylabel("share of replays rolled back")
        axis.set_title(scenario.name)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"time to rollback (ECDF; curves below 1 never roll back), alpha {result.alpha:g}")
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    rows = "".join(
        f"<tr><td>{html.escape(s.scenario)}</td><td>{s.policy}</td><td>{_seconds(s.median_s)}</td>"
        f"<td>{_seconds(s.p90_s)}</td><td>{100 * s.miss_rate:.1f}</td>"
        f"<td>{s.rolled_back}/{s.replays}</td></tr>"
        for s in result.summaries
    )
    text = html.escape("\n".join(report_lines(result) + summary_lines(result)))
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>gpufleet canary benchmark</title>"
        "<style>body{font-family:sans-serif}td,th{padding:3px 10px;text-align:right}</style>"
        "<h1>Canary judging: time to rollback</h1>"
        f"<p>{html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))}, seed {result.seed}, alpha {result.alpha:g}, "
        f"runtime {result.runtime_s:.0f} s</p>"
        "<table><tr><th>scenario</th><th>policy</th><th>median s</th><th>p90 s</th><th>miss %</th>"
        f"<th>rolled back</th></tr>{rows}</table>"
        f'<p><img alt="time to rollback per policy" src="data:image/png;base64,{image}"></p>'
        f"<pre>{text}</pre>"
    )
    return page, png


def summary_lines(result: BenchmarkResult) -> list[str]:
    return [
        f"speed-up vs flagger-style: {result.speed_up_vs_flagger:.1f}",
        f"false rollback rate: {100 * result.false_rollback_rate:.2f} %",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--replays", type=int, default=200, help="replays per regression and policy")
    parser.add_argument(
        "--healthy-replays", type=int, default=1000, help="healthy replays per policy (>= 200)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=0.01, help="ours: false-rollback budget")
    parser.add_argument("--reports", type=Path, default=REPO / "reports")
    args = parser.parse_args(argv)
    result = run_benchmark(args.replays, args.healthy_replays, args.seed, args.alpha)
    page, png = write_report(result, args.reports)
    for line in report_lines(result):
        print(line)
    print(f"report: {page}")
    print(f"png: {png}")
    print(f"runtime: {result.runtime_s:.0f} s")
    for line in summary_lines(result):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

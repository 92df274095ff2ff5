"""Sequential canary judge: stable (baseline) vs canary over the same windows, always valid.

Every test is a nonnegative (super)martingale under its null hypothesis (an "e-process"), so rolling
back when it reaches 1/alpha_i keeps the chance of ever rolling back a healthy canary below alpha_i
however often the judge looks (Ville's inequality). The tests share the rollout's false-rollback
budget by a union bound (ALPHA_SHARES).

Errors vs baseline. Within a window the canary served n_c requests and the baseline n_b. If errors
arrive at rates proportional to requests (Poisson), then given e = e_c + e_b errors each one is the
canary's with probability q = n_c / (n_c + n_b) when both versions are equally good, and with
p = theta q / (theta q + 1 - q) when the canary's rate is theta times the baseline's. The product
over windows of Binomial(e_c; e, p) / Binomial(e_c; e, q) is a martingale under theta = 1 and a
supermartingale for a better canary (theta < 1). Conditioning on the traffic makes the test immune to
load and to incidents that hit both versions alike. With per-request Bernoulli errors instead of
Poisson, e_c given e is hypergeometric, which is below the binomial in convex order (Hoeffding 1963,
Thm. 4), so the ratio stays a supermartingale.

Latency vs baseline. Triton exports per-version summary quantiles (0.5 ... 0.999) per window and the
exact mean, no per-request histogram. Each latency test turns the window into counts: the baseline
requests at or above the baseline's own level-l quantile T (n_b - ceil(l n_b) + 1 by definition of
the reported quantile) and the canary requests above T, estimated conservatively from the canary's
quantiles (`requests_above`). Under "same distribution" the pooled requests are
exchangeable, the canary count before the baseline's k-th largest is negative-hypergeometric, and the
same conditional likelihood ratio is again a (super)martingale. Two reference levels: the baseline's
p99 (the tail: a tail-only regression is seen even when the centre does not move) and its p90 (the
body). The p50 is not used as the reference: Triton reports no quantile below the median, so a canary
whose median is higher can only be shown to have >= 50 % of its requests above the baseline median,
exactly what the baseline has: such a test could never reject.

SLO limits. The canary's error rate above `max_error_rate`, and more than 1 % of canary requests
above `p99_latency_ms` (its p99 over the limit), are one-sample tests of a binomial rate: the product
of Binomial(k; n, p1) / Binomial(k; n, p0) over windows, mixed over p1 > p0. A canary that is as bad
as a baseline that breaks the SLO is rolled back too (the spec promotes only while the SLO is met).

Mixtures (the prior over the effect). Each test mixes a fixed grid, uniform in log(effect), over
the effects worth catching, chosen from what matters to an operator, not from the benchmark:
  errors vs baseline     theta = canary/baseline error rate, 1.5x ... 300x (50 % more errors up to a
                         canary failing 30 % of requests while the baseline fails 0.1 %; a worse
                         canary makes nearly all the errors and each is worth ~log(1/q) nats to
                         the top points, 4.3 at 1 %, whatever its exact ratio: points above 300x
                         would only thin the prior where a 1 % canary is decided on two or three
                         errors),
  tail vs baseline       share of canary requests above the baseline p99: 1.5 % ... 100 %,
  body vs baseline       share of canary requests above the baseline p90: 12.5 % ... 100 %,
  SLO error rate         canary error rate 1.5x the limit ... 99 %,
  SLO p99 latency        share of canary requests above the limit: 1.5 % ... 99 %.
A mixture of martingales with fixed weights is a martingale, so the guarantee holds for any grid; the
grid only decides which regressions are found fastest. Compared with an SPRT that knows the true
effect, a mixture pays about log(1 / prior mass near the true effect) nats; a log-uniform grid pays
the same for every order of magnitude (about 1 nat here). The grid is not tilted towards large
effects: that buys little speed on broken canaries with much time on small regressions, which
gather evidence slowly and pay the most seconds per nat (in simulation, weights proportional to
log theta decided 1.6 % more 50x regressions at 1 % within 40 s, and delayed a 2x one at 50 % from
a median of ~750 s to ~920 s).

Alpha split (ALPHA_SHARES, a union bound: the chance that any test rejects a healthy canary is at
most the sum of the tests' alphas, the rollout's budget). 0.8 to errors vs baseline, the signal that
must be caught at 1 % of the traffic, where every nat counts: at one canary request per second a
0.1 % -> 5 % regression is decided on the canary's second error (median 34 s after the start) if the
baseline has made at most about three by then, else on the third (median 53 s), and the share moves
that boundary (at 0.6, two baseline errors). 0.15 to the tail: it decides at 10 %, where a nat
costs ~10 s for a +50 % p99. 0.03 to the body (p90 events are ten times as frequent), 0.01
to each SLO test: they add to the baseline tests only when the baseline itself is out of SLO, and at
larger steps, where data are plentiful, a smaller alpha costs seconds (x10 = 2.3 nats, ~10 s at 50 %
for a canary at twice the error limit).

The limit. Deciding on a couple of errors is what any valid test can do at 1 req/s; the questions
are how many baseline errors it tolerates and how soon after the error it looks. Tests valid for
every baseline error rate pay for the baseline's errors (each costs log(1 + theta q / (1 - q)) nats,
0.4 at theta 50, q 1 %; the growth-optimal e-value for this composite null, Turner, Ly and Grunwald
2024, grows about as fast as this conditional one, ~0.14 nats/s here); an SPRT that knows both
rates does not (0.15 nats/s). On the benchmark's traffic (5 s windows, alpha 0.01, 8 seeds x 200
rollouts) this test rolls back within 40 s in 49 % of the rollouts (a median of 40 s for 3 seeds,
45 s for 5); the same conditional test told theta = 50 and given the whole budget, in 57 % (35-40 s);
the SPRT that knows both rates has a median of 31 s. The benchmark's 9x (40 s against the
Flagger-style 360 s) sits on that limit.

Minimum sample. ROLLBACK does not wait for one: the e-processes are valid from the first request, so
a minimum adds no protection against false rollbacks and only delays catching a broken canary.
HEALTHY (enough to advance) needs `min_samples` canary requests in total (the policy also counts
them per step), data in the latest window, a usable window for every test, and every test's log
e-value at most half its log threshold (the evidence has not gone half way to a rollback; with
e-value <= 1 instead, healthy canaries at 1 % with one unlucky error sat inconclusive for their whole
bake, ~1 % of them). In between the verdict is CONTINUE: the canary stays at its small step until
the evidence grows either way (the policy rolls back when that takes too long). Because nothing is
compared after the promotion, a verdict also says whether it `favours_no_regression`: every test
with at least PROMOTION_MIN_EVENTS events fits "no effect" at least as well as any effect in its
grid; the policy promotes only then (rare events such as 0.1 % errors cannot show health in any
reasonable bake, so they are held only to the half-way rule). NoData, or a window in which a version
served nothing, is never healthy; the verdict says how long the judge has been without data and
the policy applies the deadline.

Assumptions a metrics source must meet: counts are per-window increments; errors of different
requests are independent given the version (correlated bursts on the canary alone count as
evidence against it); a reported quantile v at level l over n requests means n - ceil(l n) + 1
requests took v or longer (exact for a summary that reports an observed value at rank ceil(l n));
the canary's log-survival is concave in log-latency between reported quantiles (log-normal, gamma,
Weibull tails; Pareto is the boundary), which makes the interpolation conservative.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import stats

from gpufleet.spec import Rollout
from pipelines.rollout.evidence import NoData, VersionWindow, WindowPair

ERRORS_VS_BASELINE = "errors_vs_baseline"
TAIL_VS_BASELINE = "p99_vs_baseline"
BODY_VS_BASELINE = "p90_vs_baseline"
ERRORS_VS_SLO = "error_rate_vs_slo"
P99_VS_SLO = "p99_vs_slo"

ALPHA_SHARES: Mapping[str, float] = {
    ERRORS_VS_BASELINE: 0.8,
    TAIL_VS_BASELINE: 0.15,
    BODY_VS_BASELINE: 0.03,
    ERRORS_VS_SLO: 0.01,
    P99_VS_SLO: 0.01,
}
TAIL_LEVEL = 0.99
BODY_LEVEL = 0.9
GRID_POINTS = 16
# Canary/baseline error-rate ratios the errors test mixes over (uniform in log ratio).
ERROR_RATIOS = np.geomspace(1.5, 300.0, GRID_POINTS)
# Events (errors, or requests past a latency) a test needs before its best fit may block a promotion.
PROMOTION_MIN_EVENTS = 100
# Rounding guard: n * l computed in floating point may land a hair above an integer (100 * 0.99).
_EPS = 1e-9
FloatArray = npt.NDArray[np.float64]


class Decision(StrEnum):
    ROLLBACK = "rollback"
    CONTINUE = "continue"
    HEALTHY = "healthy"  # healthy enough to advance to the next step
    NO_DATA = "no_data"


@dataclass(frozen=True)
class JudgeSettings:
    false_rollback_rate: float = 0.05
    min_samples: int = 200
    max_error_rate: float = 0.01
    p99_latency_ms: float = 200.0
    # A step may advance while every test's log e-value is at most this fraction of its log
    # threshold (0.5: the evidence has not gone half way, in log, to a rollback).
    advance_below_log_fraction: float = 0.5

    @classmethod
    def from_spec(cls, rollout: Rollout, false_rollback_rate: float | None = None) -> JudgeSettings:
        return cls(
            false_rollback_rate=rollout.false_rollback_rate
            if false_rollback_rate is None
            else false_rollback_rate,
            min_samples=rollout.min_samples,
            max_error_rate=rollout.slo.max_error_rate,
            p99_latency_ms=rollout.slo.p99_latency_ms,
        )


@dataclass(frozen=True)
class TestNumbers:
    """One sequential test after the latest window: what it has counted and how far it has got."""

    name: str
    null_hypothesis: str
    alpha: float
    threshold: float  # roll back when e_value >= threshold = 1 / alpha
    e_value: float
    log_e_value: float
    best_effect: float | None  # the grid effect the data fit best (rate ratio, or rate)
    best_log_likelihood_ratio: float  # of that effect against "no effect" (the null's boundary)
    canary_events: int  # totals over every usable window
    canary_requests: int
    baseline_events: int | None
    baseline_requests: int | None
    windows_used: int
    rejected: bool
    window_reference_ms: float | None = None  # latency the latest window's counts are taken against
    window_canary_events: int | None = None
    window_baseline_events: int | None = None


@dataclass(frozen=True)
class VersionNumbers:
    requests: int
    errors: int
    error_rate: float | None
    latency_mean_ms: float | None
    latency_quantiles_ms: dict[float, float]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    at_s: float
    seconds_without_data: float  # since the last window with data from both versions (0 now)
    min_samples: int
    canary_requests_total: int
    baseline_requests_total: int
    canary_errors_total: int
    baseline_errors_total: int
    tests: tuple[TestNumbers, ...] = ()
    window_start_s: float | None = None
    window_end_s: float | None = None
    canary_window: VersionNumbers | None = None
    baseline_window: VersionNumbers | None = None
    no_data_reason: str | None = None
    # HEALTHY, and every test with at least PROMOTION_MIN_EVENTS events fits "no effect" at least as
    # well as any effect in its grid (largest likelihood ratio <= 1). The policy asks for this before
    # the promotion: after it no baseline traffic is left to compare with.
    favours_no_regression: bool = False

    @property
    def canary_error_rate(self) -> float | None:
        return self.canary_errors_total / self.canary_requests_total if self.canary_requests_total else None

    @property
    def baseline_error_rate(self) -> float | None:
        if not self.baseline_requests_total:
            return None
        return self.baseline_errors_total / self.baseline_requests_total

    def test(self, name: str) -> TestNumbers:
        return next(t for t in self.tests if t.name == name)

    def to_dict(self) -> dict[str, object]:
        numbers = asdict(self)
        numbers["canary_error_rate"] = self.canary_error_rate
        numbers["baseline_error_rate"] = self.baseline_error_rate
        return numbers

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)


def requests_above(window: VersionWindow, latency_ms: float) -> int | None:
    """How many of the window's requests took longer than latency_ms, estimated from its quantiles
    without overcounting: the larger of the order-statistic bound (a quantile v > latency_ms at level
    l means n - ceil(l n) + 1 requests took v or longer) and the count read off the survival function
    interpolated linearly in (log latency, log survival) between the reported quantiles on either
    side (a chord below a concave curve). Strictly above: a quantile rounded to the same value as
    latency_ms counts for nothing. Above the largest reported quantile only the bound is claimed.
    None where the window has no requests or no quantiles."""
    requests = int(round(window.requests))
    if requests <= 0 or not window.latency_quantiles_ms:
        return None
    levels = np.array(sorted(window.latency_quantiles_ms), dtype=float)
    # A summary's quantiles may be non-monotone by a rounding hair; make them a distribution.
    values = np.maximum.accumulate(
        np.array([window.latency_quantiles_ms[lvl] for lvl in levels], dtype=float)
    )
    above = values > latency_ms
    if not above.any():
        return 0
    first = int(np.argmax(above))  # the smallest reported level whose value exceeds latency_ms
    lower_bound = requests - math.ceil(levels[first] * requests - _EPS) + 1
    survival = 0.0
    if first > 0 and latency_ms > values[first - 1] > 0:
        below_value, below_survival = values[first - 1], 1.0 - levels[first - 1]
        fraction = (math.log(latency_ms) - math.log(below_value)) / (
            math.log(values[first]) - math.log(below_value)
        )
        survival = math.exp(
            math.log(below_survival) + fraction * (math.log(1.0 - levels[first]) - math.log(below_survival))
        )
    return int(max(lower_bound, math.floor(requests * survival + _EPS)))


def requests_at_or_above_own_quantile(window: VersionWindow, level: float) -> int:
    """Requests at or above the version's own reported level quantile: n - ceil(l n) + 1."""
    requests = int(round(window.requests))
    return requests - math.ceil(level * requests - _EPS) + 1


@dataclass
class _MixtureTest:
    """A mixture over `effects` (uniform weights) of products of binomial likelihood ratios."""

    name: str
    null_hypothesis: str
    alpha: float
    effects: FloatArray
    relative: bool  # effects are rate ratios (vs baseline) or absolute rates (vs an SLO limit)
    log_lr: FloatArray = field(init=False)
    canary_events: int = 0
    canary_requests: int = 0
    baseline_events: int = 0
    baseline_requests: int = 0
    windows_used: int = 0
    window_reference_ms: float | None = None
    window_canary_events: int | None = None
    window_baseline_events: int | None = None

    def __post_init__(self) -> None:
        self.log_lr = np.zeros(len(self.effects))

    @property
    def log_e_value(self) -> float:
        # log of the mean of exp(log_lr): a log-sum-exp, written out (scipy's costs ~0.1 ms a call).
        top = float(self.log_lr.max())
        return top + math.log(float(np.exp(self.log_lr - top).mean()))

    @property
    def threshold(self) -> float:
        return 1.0 / self.alpha

    @property
    def rejected(self) -> bool:
        return self.log_e_value >= math.log(self.threshold)

    def numbers(self) -> TestNumbers:
        log_e = self.log_e_value
        return TestNumbers(
            name=self.name,
            null_hypothesis=self.null_hypothesis,
            alpha=self.alpha,
            threshold=self.threshold,
            e_value=math.exp(min(log_e, 700.0)),
            log_e_value=log_e,
            best_effect=float(self.effects[int(np.argmax(self.log_lr))]) if self.windows_used else None,
            best_log_likelihood_ratio=float(self.log_lr.max()),
            canary_events=self.canary_events,
            canary_requests=self.canary_requests,
            baseline_events=self.baseline_events if self.relative else None,
            baseline_requests=self.baseline_requests if self.relative else None,
            windows_used=self.windows_used,
            rejected=self.rejected,
            window_reference_ms=self.window_reference_ms,
            window_canary_events=self.window_canary_events,
            window_baseline_events=self.window_baseline_events if self.relative else None,
        )


@dataclass(frozen=True)
class _Trial:
    """One window's binomial observation for one test: events out of trials, the alternative event
    probabilities (one per grid effect) and the null probability."""

    test: _MixtureTest
    events: int
    trials: int
    alternative: FloatArray
    null: float


class CanaryJudge:
    """Feed it every window (or NoData) in time order; each call returns a Verdict. A ROLLBACK is
    final: later calls repeat it."""

    def __init__(self, settings: JudgeSettings, started_s: float) -> None:
        self.settings = settings
        alpha = settings.false_rollback_rate
        tail_share = 1.0 - TAIL_LEVEL
        self._tests = {
            ERRORS_VS_BASELINE: _MixtureTest(
                ERRORS_VS_BASELINE,
                "canary error rate <= baseline error rate",
                alpha * ALPHA_SHARES[ERRORS_VS_BASELINE],
                ERROR_RATIOS,
                relative=True,
            ),
            TAIL_VS_BASELINE: _MixtureTest(
                TAIL_VS_BASELINE,
                "share of canary requests above the baseline p99 <= 1 %",
                alpha * ALPHA_SHARES[TAIL_VS_BASELINE],
                np.geomspace(1.5, 1.0 / tail_share, GRID_POINTS),
                relative=True,
            ),
            BODY_VS_BASELINE: _MixtureTest(
                BODY_VS_BASELINE,
                "share of canary requests above the baseline p90 <= 10 %",
                alpha * ALPHA_SHARES[BODY_VS_BASELINE],
                np.geomspace(1.25, 1.0 / (1.0 - BODY_LEVEL), GRID_POINTS),
                relative=True,
            ),
            ERRORS_VS_SLO: _MixtureTest(
                ERRORS_VS_SLO,
                f"canary error rate <= {settings.max_error_rate:g} (SLO)",
                alpha * ALPHA_SHARES[ERRORS_VS_SLO],
                _rates_above(settings.max_error_rate),
                relative=False,
            ),
            P99_VS_SLO: _MixtureTest(
                P99_VS_SLO,
                f"canary p99 <= {settings.p99_latency_ms:g} ms (SLO)",
                alpha * ALPHA_SHARES[P99_VS_SLO],
                _rates_above(tail_share),
                relative=False,
            ),
        }
        self._last_data_s = started_s
        self._canary_requests = 0
        self._baseline_requests = 0
        self._canary_errors = 0
        self._baseline_errors = 0
        self._rollback: Verdict | None = None

    def observe(self, evidence: WindowPair | NoData, now_s: float) -> Verdict:
        if self._rollback is not None:
            return self._rollback
        if isinstance(evidence, NoData):
            return self._no_data(now_s, evidence.reason)
        canary, baseline = evidence.canary, evidence.baseline
        if canary.requests <= 0 or baseline.requests <= 0:
            empty = "canary" if canary.requests <= 0 else "baseline"
            return self._no_data(
                now_s, f"the {empty} served no requests in [{canary.start_s:g}, {canary.end_s:g})"
            )
        self._last_data_s = now_s
        self._count(canary, baseline)
        self._update(self._trials(canary, baseline))
        verdict = self._verdict(now_s, canary, baseline)
        if verdict.decision is Decision.ROLLBACK:
            self._rollback = verdict
        return verdict

    def _count(self, canary: VersionWindow, baseline: VersionWindow) -> None:
        self._canary_requests += int(round(canary.requests))
        self._baseline_requests += int(round(baseline.requests))
        self._canary_errors += int(round(canary.errors))
        self._baseline_errors += int(round(baseline.errors))

    def _trials(self, canary: VersionWindow, baseline: VersionWindow) -> list[_Trial]:
        n_c, n_b = int(round(canary.requests)), int(round(baseline.requests))
        q = n_c / (n_c + n_b)
        trials: list[_Trial] = []

        def relative(
            test: _MixtureTest, canary_events: int, baseline_events: int, reference: float | None
        ) -> None:
            p = test.effects * q / (test.effects * q + 1.0 - q)
            trials.append(_Trial(test, canary_events, canary_events + baseline_events, p, q))
            test.canary_events += canary_events
            test.baseline_events += baseline_events
            test.canary_requests += n_c
            test.baseline_requests += n_b
            test.windows_used += 1
            test.window_reference_ms = reference
            test.window_canary_events, test.window_baseline_events = canary_events, baseline_events

        def absolute(test: _MixtureTest, events: int, limit: float, reference: float | None) -> None:
            trials.append(_Trial(test, events, n_c, test.effects, limit))
            test.canary_events += events
            test.canary_requests += n_c
            test.windows_used += 1
            test.window_reference_ms = reference
            test.window_canary_events = events

        # Counts from rate() can be fractional: round the canary's down and the baseline's up (conservative).
        canary_errors = math.floor(canary.errors + _EPS)
        baseline_errors = math.ceil(baseline.errors - _EPS)
        relative(self._tests[ERRORS_VS_BASELINE], canary_errors, baseline_errors, None)
        absolute(self._tests[ERRORS_VS_SLO], canary_errors, self.settings.max_error_rate, None)
        for name, level in ((TAIL_VS_BASELINE, TAIL_LEVEL), (BODY_VS_BASELINE, BODY_LEVEL)):
            reference = baseline.latency_quantiles_ms.get(level)
            if reference is None:
                continue
            canary_above = requests_above(canary, reference)
            if canary_above is None:
                continue
            relative(
                self._tests[name], canary_above, requests_at_or_above_own_quantile(baseline, level), reference
            )
        limit = self.settings.p99_latency_ms
        over_limit = requests_above(canary, limit)
        if over_limit is not None:
            absolute(self._tests[P99_VS_SLO], over_limit, 1.0 - TAIL_LEVEL, limit)
        return trials

    @staticmethod
    def _update(trials: list[_Trial]) -> None:
        if not trials:
            return
        # One vectorised scipy call per window: the binomial coefficients cancel in each ratio.
        sizes = [len(t.alternative) + 1 for t in trials]
        events = np.repeat([t.events for t in trials], sizes)
        counts = np.repeat([t.trials for t in trials], sizes)
        probabilities = np.concatenate([np.append(t.alternative, t.null) for t in trials])
        log_pmf = stats.binom.logpmf(events, counts, probabilities)
        start = 0
        for trial, size in zip(trials, sizes, strict=True):
            block = log_pmf[start : start + size]
            trial.test.log_lr += block[:-1] - block[-1]
            start += size

    def _no_data(self, now_s: float, reason: str) -> Verdict:
        without = max(0.0, now_s - self._last_data_s)
        return Verdict(
            decision=Decision.NO_DATA,
            reason=f"no data for {without:.0f} s: {reason}",
            at_s=now_s,
            seconds_without_data=without,
            min_samples=self.settings.min_samples,
            tests=tuple(t.numbers() for t in self._tests.values()),
            no_data_reason=reason,
            canary_requests_total=self._canary_requests,
            baseline_requests_total=self._baseline_requests,
            canary_errors_total=self._canary_errors,
            baseline_errors_total=self._baseline_errors,
        )

    def _verdict(self, now_s: float, canary: VersionWindow, baseline: VersionWindow) -> Verdict:
        tests = tuple(t.numbers() for t in self._tests.values())
        rejected = [t for t in tests if t.rejected]
        if rejected:
            worst = max(rejected, key=lambda t: t.log_e_value + math.log(t.alpha))
            decision, reason = Decision.ROLLBACK, _rollback_reason(worst, self)
        elif self._canary_requests < self.settings.min_samples:
            decision = Decision.CONTINUE
            reason = f"collecting: {self._canary_requests} of {self.settings.min_samples} canary requests"
        elif unseen := [t.name for t in tests if t.windows_used == 0]:
            decision, reason = Decision.CONTINUE, f"no usable data yet for {', '.join(unseen)}"
        else:
            fraction = self.settings.advance_below_log_fraction
            leaning = [t for t in tests if t.log_e_value > fraction * math.log(t.threshold)]
            if leaning:
                top = max(leaning, key=lambda t: t.log_e_value + math.log(t.alpha))
                decision = Decision.CONTINUE
                reason = (
                    f"inconclusive: {top.name} e-value {top.e_value:.3g} "
                    f"(rollback at {top.threshold:.3g}, advance at <= {top.threshold**fraction:.3g})"
                )
            else:
                decision = Decision.HEALTHY
                largest = max(tests, key=lambda t: t.log_e_value)
                reason = (
                    f"{self._canary_requests} canary requests, no test half way to a rollback "
                    f"(largest e-value {largest.e_value:.3g}, {largest.name})"
                )
        return Verdict(
            decision=decision,
            reason=reason,
            at_s=now_s,
            seconds_without_data=0.0,
            favours_no_regression=decision is Decision.HEALTHY
            and all(
                t.best_log_likelihood_ratio <= 0.0
                for t in tests
                if t.canary_events + (t.baseline_events or 0) >= PROMOTION_MIN_EVENTS
            ),
            min_samples=self.settings.min_samples,
            tests=tests,
            window_start_s=canary.start_s,
            window_end_s=canary.end_s,
            canary_window=_version_numbers(canary),
            baseline_window=_version_numbers(baseline),
            canary_requests_total=self._canary_requests,
            baseline_requests_total=self._baseline_requests,
            canary_errors_total=self._canary_errors,
            baseline_errors_total=self._baseline_errors,
        )


def _rates_above(limit: float) -> FloatArray:
    """Alternative rates for a one-sample test of "rate <= limit": 1.5x the limit (or half way to 1)
    up to 99 % of the way to 1. Every one is above the limit, so each ratio is a supermartingale for
    any rate at or below it."""
    return np.geomspace(
        limit + min(0.5 * limit, 0.5 * (1.0 - limit)), limit + 0.99 * (1.0 - limit), GRID_POINTS
    )


def _rollback_reason(test: TestNumbers, judge: CanaryJudge) -> str:
    evidence = f"e-value {test.e_value:.3g} >= {test.threshold:.3g} (alpha {test.alpha:.3g})"
    if test.name == ERRORS_VS_BASELINE:
        return (
            f"canary errors {test.canary_events}/{test.canary_requests} vs baseline "
            f"{test.baseline_events}/{test.baseline_requests}: {evidence}"
        )
    if test.name == ERRORS_VS_SLO:
        return (
            f"canary error rate {test.canary_events}/{test.canary_requests} above the SLO "
            f"{judge.settings.max_error_rate:g}: {evidence}"
        )
    if test.name == P99_VS_SLO:
        return (
            f"{test.canary_events} of {test.canary_requests} canary requests at or above "
            f"{judge.settings.p99_latency_ms:g} ms (p99 SLO): {evidence}"
        )
    return (
        f"{test.canary_events} of {test.canary_requests} canary requests at or above the baseline's "
        f"{'p99' if test.name == TAIL_VS_BASELINE else 'p90'} vs {test.baseline_events} of "
        f"{test.baseline_requests} baseline requests: {evidence}"
    )


def _version_numbers(window: VersionWindow) -> VersionNumbers:
    return VersionNumbers(
        requests=int(round(window.requests)),
        errors=int(round(window.errors)),
        error_rate=window.error_rate,
        latency_mean_ms=window.latency_mean_ms,
        latency_quantiles_ms=dict(window.latency_quantiles_ms),
    )

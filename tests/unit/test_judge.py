"""The canary judge on seeded synthetic traffic and on hand-made windows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from pipelines.rollout.evidence import NoData, VersionWindow, WindowPair
from pipelines.rollout.judge import (
    ALPHA_SHARES,
    ERRORS_VS_BASELINE,
    TAIL_VS_BASELINE,
    CanaryJudge,
    Decision,
    JudgeSettings,
    requests_above,
)
from pipelines.rollout.simulate import (
    ERROR_REGRESSION,
    HEALTHY,
    REPORTED_QUANTILES,
    TAIL_REGRESSION,
    LatencyModel,
    Scenario,
    TrafficSimulator,
)

WINDOW_S = 5.0


def judge_at_fixed_weight(
    scenario: Scenario, seed: int, weight: int, windows: int, settings: JudgeSettings
) -> tuple[int | None, list[Decision], CanaryJudge]:
    """Feed `windows` windows at one weight; the index of the first ROLLBACK (None: none)."""
    simulator = TrafficSimulator(scenario, np.random.default_rng(seed))
    judge = CanaryJudge(settings, started_s=0.0)
    decisions = []
    for i in range(windows):
        verdict = judge.observe(
            simulator.window(i * WINDOW_S, (i + 1) * WINDOW_S, weight), (i + 1) * WINDOW_S
        )
        decisions.append(verdict.decision)
        if verdict.decision is Decision.ROLLBACK:
            return i, decisions, judge
    return None, decisions, judge


def window(version: int, requests: int, errors: int, quantiles: dict[float, float], end_s: float = 5.0):
    return VersionWindow(version, end_s - 5.0, end_s, requests, errors, 20.0, quantiles)


BASE_QUANTILES = {0.5: 20.0, 0.9: 49.0, 0.95: 62.0, 0.99: 100.0, 0.999: 160.0}
# A few canary requests, the slowest 95 ms: what a summary reports for them (p90 ... p999 near the max).
CANARY_QUANTILES = {0.5: 20.0, 0.9: 45.0, 0.95: 90.0, 0.99: 95.0, 0.999: 95.0}


def pair(canary_requests: int, canary_errors: int, baseline_requests: int = 990, baseline_errors: int = 1):
    return WindowPair(
        baseline=window(1, baseline_requests, baseline_errors, BASE_QUANTILES),
        canary=window(2, canary_requests, canary_errors, CANARY_QUANTILES),
    )


def test_clear_error_regression_rolled_back_within_bounded_windows() -> None:
    # 0.1 % -> 5 % at 1 % of 100 req/s: an SPRT that knows both rates needs ~32 s at alpha 0.01; in
    # 300 s the canary has made ~15 errors where the baseline's rate predicts 0.3.
    settings = JudgeSettings(false_rollback_rate=0.01)
    for seed in range(20):
        first, _, judge = judge_at_fixed_weight(
            ERROR_REGRESSION, seed, weight=1, windows=60, settings=settings
        )
        assert first is not None, f"seed {seed}: no rollback in 300 s"
        verdict = judge.observe(NoData("after"), 400.0)  # a rollback is final
        assert verdict.decision is Decision.ROLLBACK
        assert verdict.test(ERRORS_VS_BASELINE).rejected, verdict.reason


def test_one_percent_canary_is_rolled_back_on_its_second_error_against_three_baseline_errors() -> None:
    # 1 % of 100 req/s for 35 s: 2 canary errors in 35 requests, 3 in the baseline's 3465. If the versions
    # were alike, each of the 5 errors would be the canary's with probability 1 %: two or more of them
    # has probability 1e-3 (binomial tail). An always-valid test at alpha 0.01 can afford to decide
    # here, and the errors test's share and grid are set so that it does; a fourth baseline error
    # (p = 1.5e-3) is past that boundary and the judge waits for more.
    assert stats.binom.sf(1, 5, 0.01) == pytest.approx(9.8e-4, rel=0.01)
    settings = JudgeSettings(false_rollback_rate=0.01)
    decided = CanaryJudge(settings, 0.0).observe(pair(35, 2, 3465, 3), 35.0)
    assert decided.decision is Decision.ROLLBACK and decided.test(ERRORS_VS_BASELINE).rejected, decided.reason
    waiting = CanaryJudge(settings, 0.0).observe(pair(35, 2, 3465, 4), 35.0)
    assert waiting.decision is Decision.CONTINUE, waiting.reason


def test_tail_only_regression_rolled_back_by_the_tail_test() -> None:
    # p99 +50 % with p50 and p90 unchanged: 2.6 % of canary requests beyond the baseline's p99 instead of
    # 1 %. At 10 % of 100 req/s that is ~1.3 extra slow requests per 5 s window.
    settings = JudgeSettings(false_rollback_rate=0.01)
    canary = TAIL_REGRESSION.canary.latency
    assert canary.quantile(0.5) == pytest.approx(20.0) and canary.quantile(0.9) == pytest.approx(
        LatencyModel().quantile(0.9)
    )
    assert canary.quantile(0.99) == pytest.approx(150.0)
    for seed in range(8):
        first, _, judge = judge_at_fixed_weight(
            TAIL_REGRESSION, seed, weight=10, windows=240, settings=settings
        )
        assert first is not None, f"seed {seed}: tail regression not rolled back in 1200 s at 10 %"
        verdict = judge.observe(NoData("after"), 1e4)
        assert verdict.test(TAIL_VS_BASELINE).rejected, verdict.reason
        assert not verdict.test(ERRORS_VS_BASELINE).rejected


def test_identical_versions_rolled_back_at_most_alpha_of_the_time() -> None:
    # Ville: P(ever reaching 1/alpha) <= alpha under the null, however long and often one looks. A large
    # budget makes the bound itself testable on few replays; the split still has to hold per test.
    alpha = 0.3
    settings = JudgeSettings(false_rollback_rate=alpha, min_samples=10)
    replays = 120
    rolled_back = {name: 0 for name in ALPHA_SHARES}
    for seed in range(replays):
        weight = (1, 10, 50)[seed % 3]
        first, _, judge = judge_at_fixed_weight(
            HEALTHY, 1000 + seed, weight=weight, windows=60, settings=settings
        )
        if first is not None:
            for test in judge.observe(NoData("after"), 1e4).tests:
                rolled_back[test.name] += test.rejected
    total = sum(rolled_back.values())
    # Binomial(120, alpha) exceeds its mean plus three standard deviations with probability < 0.2 %.
    allowance = replays * alpha + 3 * math.sqrt(replays * alpha * (1 - alpha))
    assert total <= allowance, rolled_back
    for name, count in rolled_back.items():
        share = alpha * ALPHA_SHARES[name]
        assert count <= replays * share + 3 * math.sqrt(replays * share * (1 - share)) + 1, (
            name,
            rolled_back,
        )


def test_error_e_value_is_a_martingale_under_the_null() -> None:
    # One window with e errors in all: averaging the e-value over every split of the e errors between the
    # versions, weighted by the null's binomial probabilities, gives exactly 1 (a fair bet).
    settings = JudgeSettings(false_rollback_rate=0.05)
    n_c, n_b, errors = 30, 270, 6
    q = n_c / (n_c + n_b)
    mean = 0.0
    for canary_errors in range(errors + 1):
        judge = CanaryJudge(settings, 0.0)
        verdict = judge.observe(pair(n_c, canary_errors, n_b, errors - canary_errors), 5.0)
        mean += stats.binom.pmf(canary_errors, errors, q) * verdict.test(ERRORS_VS_BASELINE).e_value
    assert mean == pytest.approx(1.0, rel=1e-9)


def test_one_sided_a_better_canary_never_rolls_back() -> None:
    settings = JudgeSettings(false_rollback_rate=0.05, min_samples=10)
    judge = CanaryJudge(settings, 0.0)
    for i in range(200):  # canary: no errors in 20 000 requests; baseline 3 % errors
        verdict = judge.observe(pair(100, 0, 900, 27), 5.0 * (i + 1))
    assert verdict.decision is not Decision.ROLLBACK
    assert verdict.test(ERRORS_VS_BASELINE).e_value < 1e-6


def test_no_data_is_never_healthy_and_counts_the_time_without_data() -> None:
    settings = JudgeSettings(false_rollback_rate=0.05, min_samples=10)
    judge = CanaryJudge(settings, started_s=0.0)
    healthy = [judge.observe(pair(100, 0, 900, 1), 5.0 * (i + 1)).decision for i in range(20)]
    assert Decision.HEALTHY in healthy  # the same judge does say healthy when it has data
    outage = judge.observe(NoData("prometheus unreachable"), 130.0)
    assert outage.decision is Decision.NO_DATA
    assert outage.seconds_without_data == pytest.approx(30.0)
    assert "prometheus unreachable" in outage.reason
    no_canary = WindowPair(baseline=window(1, 900, 1, BASE_QUANTILES), canary=window(2, 0, 0, {}))
    silent = judge.observe(no_canary, 160.0)
    assert silent.decision is Decision.NO_DATA and silent.seconds_without_data == pytest.approx(60.0)
    fresh = CanaryJudge(settings, started_s=1000.0)
    assert fresh.observe(NoData("not scraped yet"), 1042.0).seconds_without_data == pytest.approx(42.0)


def test_healthy_waits_for_min_samples_rollback_does_not() -> None:
    settings = JudgeSettings(false_rollback_rate=0.05, min_samples=200)
    judge = CanaryJudge(settings, 0.0)
    decisions = [judge.observe(pair(10, 0, 990, 1), 5.0 * (i + 1)) for i in range(25)]
    first_healthy = next(v for v in decisions if v.decision is Decision.HEALTHY)
    assert first_healthy.canary_requests_total >= 200
    assert all(v.decision is Decision.CONTINUE for v in decisions if v.canary_requests_total < 200)
    # A canary failing every request is rolled back long before 200 samples: the e-process is valid at n=1.
    broken = CanaryJudge(settings, 0.0)
    verdicts = [broken.observe(pair(10, 10, 990, 1), 5.0 * (i + 1)) for i in range(5)]
    assert verdicts[-1].decision is Decision.ROLLBACK and verdicts[-1].canary_requests_total < 200


def test_verdict_carries_its_numbers_as_json() -> None:
    settings = JudgeSettings(false_rollback_rate=0.05, min_samples=10)
    judge = CanaryJudge(settings, 0.0)
    verdict = judge.observe(pair(100, 2, 900, 1), 5.0)
    numbers = json.loads(verdict.to_json())
    assert numbers["decision"] == verdict.decision.value == "continue"
    assert numbers["canary_requests_total"] == 100 and numbers["canary_errors_total"] == 2
    assert numbers["canary_error_rate"] == pytest.approx(0.02)
    assert numbers["baseline_window"]["latency_quantiles_ms"]["0.99"] == 100.0
    by_name = {t["name"]: t for t in numbers["tests"]}
    assert set(by_name) == set(ALPHA_SHARES)
    errors = by_name[ERRORS_VS_BASELINE]
    assert errors["canary_events"] == 2 and errors["baseline_events"] == 1
    assert errors["threshold"] == pytest.approx(1 / (0.05 * ALPHA_SHARES[ERRORS_VS_BASELINE]))
    assert errors["e_value"] == pytest.approx(math.exp(errors["log_e_value"]))
    assert by_name[TAIL_VS_BASELINE]["window_reference_ms"] == 100.0
    no_data = json.loads(judge.observe(NoData("x"), 20.0).to_json())
    assert no_data["decision"] == "no_data" and no_data["seconds_without_data"] == 15.0


@pytest.mark.parametrize("requests", [5, 50, 500])
def test_exceedance_estimate_does_not_overcount_on_average(requests: int) -> None:
    # Against the true count in the window's own samples: never below the order-statistic bound, and on
    # average no more than the truth for log-normal latencies (the estimator leans low).
    rng = np.random.default_rng(7)
    model = LatencyModel()
    for threshold in (model.quantile(0.7), model.quantile(0.97), model.quantile(0.995)):
        estimates, truths = [], []
        for _ in range(400):
            samples = model.sample(rng, requests)
            values = np.quantile(samples, REPORTED_QUANTILES, method="inverted_cdf")
            quantiles = {lvl: float(v) for lvl, v in zip(REPORTED_QUANTILES, values, strict=True)}
            estimate = requests_above(VersionWindow(2, 0, 5, requests, 0, None, quantiles), threshold)
            assert estimate is not None
            truths.append(int((samples >= threshold).sum()))
            estimates.append(estimate)
        assert np.mean(estimates) <= np.mean(truths) + 0.05, (requests, threshold)


def test_exceedance_estimate_from_exact_order_statistics() -> None:
    # Five requests: 10, 20, 30, 40, 50 ms. At rank ceil(l n): p50 = 30, p90..p999 = 50.
    quantiles = {0.5: 30.0, 0.9: 50.0, 0.95: 50.0, 0.99: 50.0, 0.999: 50.0}
    five = VersionWindow(2, 0, 5, 5, 0, 30.0, quantiles)
    assert requests_above(five, 55.0) == 0
    assert requests_above(five, 50.0) == 0  # a tie with the reported value is not "above"
    assert requests_above(five, 49.0) == 1  # the largest request, at least
    assert requests_above(five, 25.0) == 3  # at least the three at or above the median
    assert requests_above(VersionWindow(2, 0, 5, 0, 0, None, {}), 10.0) is None

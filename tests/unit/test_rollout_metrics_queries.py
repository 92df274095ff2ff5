"""The Prometheus metrics source's queries and arithmetic, on hand-worked figures.

The same queries run against a real Prometheus in tests/integration/test_rollout_metrics.py; here
each piece is checked on values small enough to count by hand.
"""

from __future__ import annotations

import pytest

from pipelines.rollout.metrics.prometheus import (
    combine_quantiles,
    counters_query,
    exact_increase,
    gpu_query,
    scrape_problem,
    series_selector,
    up_query,
)


def test_the_selector_names_cluster_model_and_each_version_once() -> None:
    selector = series_selector({"cluster": "local-a", "model": "mlp"}, versions=[1, 12])
    assert selector == 'cluster="local-a",model="mlp",version=~"1|12"'


def test_label_values_are_escaped_as_promql_strings() -> None:
    selector = series_selector({"cluster": 'a"b\\c'})
    assert selector == 'cluster="a\\"b\\\\c"'


def test_counters_come_in_one_query_instant_or_as_raw_samples_over_the_window_in_ms() -> None:
    selector = 'cluster="c",model="m",version=~"2"'
    names = (
        "nv_inference_request_success|nv_inference_request_failure|"
        "nv_inference_request_duration_us|nv_inference_queue_duration_us"
    )
    assert counters_query(selector) == f'{{__name__=~"{names}",{selector}}}'
    assert counters_query(selector, range_ms=30_500) == f'{{__name__=~"{names}",{selector}}}[30500ms]'


def test_scrape_health_and_gpu_queries_select_the_cluster() -> None:
    assert up_query("cluster", "local-a", "triton", 12_000) == 'up{job="triton",cluster="local-a"}[12000ms]'
    assert gpu_query("cluster", "local-a", 5_000) == (
        'avg(avg_over_time(nv_gpu_utilization{cluster="local-a"}[5000ms]))'
    )


@pytest.mark.parametrize(
    ("baseline", "values", "counted"),
    [
        (10.0, [12.0, 15.0, 15.0], 5.0),  # plain increments: 2 + 3 + 0
        (10.0, [], 0.0),  # no sample in the window: nothing counted
        (None, [4.0, 6.0], 6.0),  # loaded inside the window: its counter began at 0
        (10.0, [12.0, 3.0, 7.0], 2.0 + 3.0 + 4.0),  # restart after 12: 3 since it, then 4 more
        (10.0, [0.0, 1.0, 0.0, 2.0], 0.0 + 1.0 + 0.0 + 2.0),  # two restarts
    ],
)
def test_exact_increase_adds_every_increment_and_reads_a_drop_as_a_restart(
    baseline: float | None, values: list[float], counted: float
) -> None:
    assert exact_increase(baseline, values) == counted


FRESH = {"r0": [(98.0, 1.0), (100.0, 1.0), (102.0, 1.0), (110.0, 1.0)]}


def test_fresh_scrapes_at_both_edges_bound_the_window() -> None:
    assert scrape_problem(FRESH, start_s=100.0, end_s=111.0, max_age_s=5.0) is None


def test_a_window_shorter_than_a_scrape_interval_closes_on_its_opening_scrape() -> None:
    assert scrape_problem(FRESH, start_s=100.5, end_s=101.5, max_age_s=5.0) is None


def test_no_target_is_a_problem() -> None:
    assert scrape_problem({}, 100.0, 111.0, 5.0) == "no Triton scrape target in Prometheus"


def test_an_old_last_scrape_is_a_problem() -> None:
    problem = scrape_problem(FRESH, start_s=100.0, end_s=116.0, max_age_s=5.0)
    assert problem is not None and "r0" in problem and "end" in problem and "6.0 s" in problem


def test_a_gap_over_the_start_is_a_problem() -> None:
    gap = {"r0": [(90.0, 1.0), (104.0, 1.0), (106.0, 1.0)]}
    problem = scrape_problem(gap, start_s=100.0, end_s=107.0, max_age_s=5.0)
    assert problem is not None and "before the window's start" in problem
    new = {"r0": [(104.0, 1.0), (106.0, 1.0)]}  # a replica first scraped inside: the next window counts
    assert scrape_problem(new, start_s=100.0, end_s=107.0, max_age_s=5.0) is not None


@pytest.mark.parametrize("failed_at", [100.0, 104.0, 106.0])
def test_a_failed_scrape_at_the_start_inside_or_at_the_end_is_a_problem(failed_at: float) -> None:
    scrapes = {"r0": [(t, 0.0 if t == failed_at else 1.0) for t in (96.0, 100.0, 102.0, 104.0, 106.0)]}
    problem = scrape_problem(scrapes, start_s=100.0, end_s=107.0, max_age_s=5.0)
    assert problem is not None and f"{failed_at:.3f}" in problem


def test_a_failed_scrape_before_the_opening_one_is_none_of_the_windows_business() -> None:
    scrapes = {"r0": [(96.0, 0.0), (100.0, 1.0), (106.0, 1.0)]}
    assert scrape_problem(scrapes, start_s=100.0, end_s=107.0, max_age_s=5.0) is None


def test_the_replica_with_the_problem_is_named() -> None:
    scrapes = {**FRESH, "r1": [(98.0, 1.0), (103.0, 1.0)]}
    problem = scrape_problem(scrapes, start_s=100.0, end_s=111.0, max_age_s=5.0)
    assert problem is not None and problem.startswith("replica r1:")


def test_quantiles_are_weighted_by_each_replicas_successes() -> None:
    per_level = {0.99: {"r0": 1.0, "r1": 5.0}, 0.5: {"r0": 0.5}}
    assert combine_quantiles(per_level, {"r0": 3.0, "r1": 1.0}) == {0.5: 0.5, 0.99: (3 * 1.0 + 1 * 5.0) / 4}


def test_without_weights_replicas_count_alike() -> None:
    assert combine_quantiles({0.9: {"r0": 2.0, "r1": 4.0}}, {}) == {0.9: 3.0}

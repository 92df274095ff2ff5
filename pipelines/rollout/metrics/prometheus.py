"""Per-version evidence from Prometheus (prometheus-api-client), as Triton exports it.

Counts are exact. A window [start, end) is measured between the last scrape at or before `start` and
the last scrape at or before `end`: every series' increments over the raw samples in between, a
counter that went down having restarted (its count since the restart is its value). Not PromQL's
`increase()`: it extrapolates the first and last samples in the range out to the range's edges, so a
30 s window over 2 s scrapes turns 45 requests into e.g. 47.6, and it drops the increment between
the last sample before the range and the first one in it; consecutive windows neither tile nor give
integers. Here they tile exactly (the scrape closing one window opens the next); the price is that
a window's edges are up to one scrape interval late.

- requests / errors: `nv_inference_request_success` + `_failure` (all `reason`s), and `_failure`.
  Triton counts as failure only what the backend failed as a whole (an exception in a python model's
  execute, reason BACKEND; REJECTED/CANCELED): a request refused by validation (wrong shape, name or
  dtype, HTTP 400) reaches no counter at all, and a python-backend response carrying an error is
  counted as a success.
- latency_mean_ms / queue_mean_ms: the increase of `nv_inference_request_duration_us` /
  `nv_inference_queue_duration_us` over that of `_success`. Failed requests add no duration, so the
  latency figures are those of successful requests.
- latency_quantiles_ms: `nv_inference_request_summary_us{quantile=...}` at the window's end. Triton
  computes them itself over a sliding window of its own (prometheus-cpp's default: the last 60 s, in
  5 buckets rotated every 12 s, so 48-60 s of observations; tritonserver has no setting for it), not
  over [start, end): they lag a change by up to a minute, and a window shorter than that also holds
  the step before. Quantiles do not add across replicas; they are combined as the mean of the
  replicas' values weighted by each replica's successes in the window (right where the replicas
  serve one distribution, which the balanced proxy gives; canary and baseline run on the same
  replicas and are combined alike). A version with no success in the window gets none.
- gpu_utilization: mean of `nv_gpu_utilization` over the window on the cluster (all GPUs; a GPU is
  shared by the versions on it), None without GPU metrics.

NoData (never a healthy-looking window) when: Prometheus cannot be asked or a query fails; the
cluster has no Triton scrape target; a replica's scrape at either edge is missing, older than
`max_scrape_age_s` or failed, or a scrape failed inside the window (a replica that crashed or
restarted: what it served before it, and the requests the crash failed, are in no counter); the
version has no `nv_inference_request_success` series on the cluster.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from pipelines.rollout.evidence import NoData, VersionWindow
from pipelines.rollout.metrics.base import MetricsSource

SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
DURATION = "nv_inference_request_duration_us"
QUEUE = "nv_inference_queue_duration_us"
COUNTERS = (SUCCESS, FAILURE, DURATION, QUEUE)
SUMMARY = "nv_inference_request_summary_us"
GPU_UTILIZATION = "nv_gpu_utilization"
_US_PER_MS = 1000.0

Samples = list[tuple[float, float]]  # (timestamp s, value), oldest first


class PrometheusMetrics(MetricsSource):
    """Reads what Prometheus scraped from a cluster's Triton replicas.

    The label names are the local fleet's scrape config (gpufleet/local/prometheus.py): `cluster`
    and `replica` on every target, job `triton`; Triton itself adds `model` and `version`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 3.0,
        max_scrape_age_s: float = 10.0,
        cluster_label: str = "cluster",
        replica_label: str = "replica",
        triton_job: str = "triton",
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_scrape_age_s = max_scrape_age_s
        self.cluster_label = cluster_label
        self.replica_label = replica_label
        self.triton_job = triton_job
        # A stopped Prometheus must not stall a rollout: no retries (the client's default retries with
        # back-off), one short timeout per request; the driver asks again at its next tick.
        self._prom = PrometheusConnect(
            url=self.url, disable_ssl=True, retry=Retry(total=0), timeout=timeout_s
        )

    def windows(
        self, cluster: str, model: str, versions: Iterable[int], start_s: float, end_s: float
    ) -> dict[int, VersionWindow | NoData]:
        wanted = sorted(set(versions))
        if not wanted:
            return {}
        if end_s <= start_s:
            return dict.fromkeys(wanted, NoData(f"empty window [{start_s}, {end_s})"))
        start_ms, end_ms = round(start_s * 1000), round(end_s * 1000)
        selector = series_selector({self.cluster_label: cluster, "model": model}, versions=wanted)
        try:
            problem = self._scrape_problem(cluster, start_ms, end_ms)
            if problem:
                return dict.fromkeys(
                    wanted, NoData(f"prometheus at {self.url}: cluster {cluster}: {problem}")
                )
            baseline = self._instant(counters_query(selector), start_ms)
            inside = self._range(counters_query(selector, range_ms=end_ms - start_ms), end_ms)
            quantiles = self._instant(f"{SUMMARY}{{{selector}}}", end_ms)
            gpu = self._instant(gpu_query(self.cluster_label, cluster, end_ms - start_ms), end_ms)
        except PrometheusApiClientException as exc:
            return dict.fromkeys(wanted, NoData(f"prometheus at {self.url}: query failed: {_one_line(exc)}"))
        except (requests.RequestException, OSError, ValueError, KeyError) as exc:
            # Connection refused, timeout, or an answer that is not Prometheus's JSON.
            reason = f"prometheus at {self.url} unreachable: {type(exc).__name__}: {_one_line(exc)}"
            return dict.fromkeys(wanted, NoData(reason))

        increments = self._increments(baseline, inside)
        gpu_utilization = next((v for _, v in gpu if not math.isnan(v)), None)
        result: dict[int, VersionWindow | NoData] = {}
        for version in wanted:
            per_replica = increments.get(version)
            if per_replica is None or SUCCESS not in per_replica:
                result[version] = NoData(
                    f"prometheus at {self.url}: no {SUCCESS} series for {model} version {version} on "
                    f"cluster {cluster} between {start_s:.3f} and {end_s:.3f}: not loaded there, or not "
                    "scraped"
                )
                continue
            result[version] = self._version_window(
                version, start_s, end_s, per_replica, quantiles, gpu_utilization
            )
        return result

    def _scrape_problem(self, cluster: str, start_ms: int, end_ms: int) -> str | None:
        look_back_ms = end_ms - start_ms + round(self.max_scrape_age_s * 1000)
        up = self._range(up_query(self.cluster_label, cluster, self.triton_job, look_back_ms), end_ms)
        scrapes = {labels.get(self.replica_label, "?"): samples for labels, samples in up}
        return scrape_problem(scrapes, start_ms / 1000, end_ms / 1000, self.max_scrape_age_s)

    def _version_window(
        self,
        version: int,
        start_s: float,
        end_s: float,
        per_replica: Mapping[str, Mapping[str, float]],
        quantiles: list[tuple[dict[str, str], float]],
        gpu_utilization: float | None,
    ) -> VersionWindow:
        def total(metric: str) -> float:
            return sum(per_replica.get(metric, {}).values())

        successes = per_replica[SUCCESS]
        success, failure = total(SUCCESS), total(FAILURE)
        levels: dict[float, dict[str, float]] = defaultdict(dict)
        for labels, value in quantiles:
            if labels.get("version") == str(version) and not math.isnan(value) and "quantile" in labels:
                levels[float(labels["quantile"])][labels.get(self.replica_label, "")] = value / _US_PER_MS
        return VersionWindow(
            version=version,
            start_s=start_s,
            end_s=end_s,
            requests=success + failure,
            errors=failure,
            latency_mean_ms=total(DURATION) / success / _US_PER_MS
            if success > 0 and DURATION in per_replica
            else None,
            latency_quantiles_ms=combine_quantiles(levels, successes) if success > 0 else {},
            queue_mean_ms=total(QUEUE) / success / _US_PER_MS
            if success > 0 and QUEUE in per_replica
            else None,
            gpu_utilization=gpu_utilization,
        )

    def _increments(
        self, baseline: list[tuple[dict[str, str], float]], inside: list[tuple[dict[str, str], Samples]]
    ) -> dict[int, dict[str, dict[str, float]]]:
        """{version: {metric: {replica: exact increase}}}; each series (each failure reason) apart."""
        first = {_series_key(labels): value for labels, value in baseline}
        out: dict[int, dict[str, dict[str, float]]] = {}
        seen: set[tuple[tuple[str, str], ...]] = set()
        for labels, samples in inside:
            key = _series_key(labels)
            seen.add(key)
            self._add(out, labels, exact_increase(first.get(key), [v for _, v in samples]))
        for labels, _ in baseline:  # present at the start, no sample since: served nothing counted
            if _series_key(labels) not in seen:
                self._add(out, labels, 0.0)
        return out

    def _add(
        self, out: dict[int, dict[str, dict[str, float]]], labels: dict[str, str], amount: float
    ) -> None:
        per_metric = out.setdefault(int(labels["version"]), {}).setdefault(labels["__name__"], {})
        replica = labels.get(self.replica_label, "")
        per_metric[replica] = per_metric.get(replica, 0.0) + amount

    def _instant(self, query: str, at_ms: int) -> list[tuple[dict[str, str], float]]:
        raw = self._query(query, at_ms)
        return [(s["metric"], float(s["value"][1])) for s in raw]

    def _range(self, query: str, at_ms: int) -> list[tuple[dict[str, str], Samples]]:
        raw = self._query(query, at_ms)
        return [(s["metric"], [(float(t), float(v)) for t, v in s["values"]]) for s in raw]

    def _query(self, query: str, at_ms: int) -> list[dict[str, Any]]:
        params = {"time": f"{at_ms / 1000:.3f}", "timeout": f"{round(self.timeout_s * 1000)}ms"}
        result: list[dict[str, Any]] = self._prom.custom_query(query, params=params)
        return result


def series_selector(labels: Mapping[str, str], versions: Sequence[int] = ()) -> str:
    """`a="x",b="y",version=~"1|2"`; values escaped as PromQL strings."""
    parts = [f'{name}="{_escape(value)}"' for name, value in labels.items()]
    if versions:
        parts.append(f'version=~"{"|".join(str(int(v)) for v in versions)}"')
    return ",".join(parts)


def counters_query(selector: str, range_ms: int | None = None) -> str:
    """Every counter of the window in one query: instant (the baseline) or a range of raw samples."""
    names = "|".join(COUNTERS)
    query = f'{{__name__=~"{names}",{selector}}}'
    return f"{query}[{range_ms}ms]" if range_ms is not None else query


def up_query(cluster_label: str, cluster: str, job: str, range_ms: int) -> str:
    return f'up{{job="{_escape(job)}",{cluster_label}="{_escape(cluster)}"}}[{range_ms}ms]'


def gpu_query(cluster_label: str, cluster: str, range_ms: int) -> str:
    return f'avg(avg_over_time({GPU_UTILIZATION}{{{cluster_label}="{_escape(cluster)}"}}[{range_ms}ms]))'


def exact_increase(baseline: float | None, values: Sequence[float]) -> float:
    """What a counter counted from `baseline` through `values` (raw samples, oldest first).

    No baseline: the series began inside the window (the version was loaded then; Triton starts its
    counters at zero). A value below the one before it is a restart: count what it holds since then.
    """
    previous = 0.0 if baseline is None else baseline
    total = 0.0
    for value in values:
        total += value - previous if value >= previous else value
        previous = value
    return total


def scrape_problem(
    scrapes: Mapping[str, Samples], start_s: float, end_s: float, max_age_s: float
) -> str | None:
    """Why the replicas' scrapes (`up` samples from start - max_age to end) cannot bound the window."""
    if not scrapes:
        return "no Triton scrape target in Prometheus"
    for replica, samples in sorted(scrapes.items()):
        before_start = [(t, v) for t, v in samples if t <= start_s]
        after_start = [(t, v) for t, v in samples if start_s < t <= end_s]
        # The closing scrape may be the opening one (a window shorter than a scrape interval): it
        # then measures nothing, and the next window counts what it served.
        closing = [t for t, _ in samples if t <= end_s][-1:]
        if not closing or end_s - closing[0] > max_age_s:
            last = f"{end_s - closing[0]:.1f} s before it" if closing else "none"
            return f"replica {replica}: no scrape within {max_age_s:g} s of the window's end (last: {last})"
        # No opening scrape: a gap over the start (what the first scrape after it holds may be from
        # before the window), or a new replica; either way the next window, opened by a scrape, counts.
        if not before_start or start_s - before_start[-1][0] > max_age_s:
            return f"replica {replica}: no scrape within {max_age_s:g} s before the window's start"
        failed = [t for t, v in (before_start[-1:] + after_start) if v != 1]
        if failed:
            return (
                f"replica {replica}: scrape failed at {failed[0]:.3f} (down or restarting): its counts "
                "over the window are not complete"
            )
    return None


def combine_quantiles(
    per_level: Mapping[float, Mapping[str, float]], weights: Mapping[str, float]
) -> dict[float, float]:
    """Each level's replica values averaged with the replicas' weights (their successes); replicas
    with no weight count equally only when none has any."""
    combined: dict[float, float] = {}
    for level, values in sorted(per_level.items()):
        shares = {r: max(weights.get(r, 0.0), 0.0) for r in values}
        total = sum(shares.values())
        if total <= 0:
            shares, total = dict.fromkeys(values, 1.0), float(len(values))
        combined[level] = sum(values[r] * shares[r] for r in values) / total
    return combined


def _series_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]

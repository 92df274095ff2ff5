"""Read the fleet's Prometheus (prometheus-api-client): what it has scraped from Triton."""

from __future__ import annotations

import time

from prometheus_api_client import PrometheusConnect


def successes_by_cluster(prometheus_url: str, model: str) -> dict[str, float]:
    """Successful inferences of a model per cluster, summed over replicas and versions."""
    prom = PrometheusConnect(url=prometheus_url, disable_ssl=True)
    series = prom.custom_query(f'sum by (cluster) (nv_inference_request_success{{model="{model}"}})')
    return {s["metric"].get("cluster", "?"): float(s["value"][1]) for s in series}


def wait_for_successes(
    prometheus_url: str, model: str, at_least: dict[str, float], timeout_s: float = 15.0
) -> dict[str, float]:
    """Poll until Prometheus has scraped at least the given counts per cluster (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    seen = successes_by_cluster(prometheus_url, model)
    while time.monotonic() < deadline and any(seen.get(c, 0) < n for c, n in at_least.items()):
        time.sleep(0.5)
        seen = successes_by_cluster(prometheus_url, model)
    return seen

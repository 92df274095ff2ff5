"""HTML reports for results people would rather look at than read: latency of a load run."""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np

from gpufleet.loadgen import LoadResult

BINS = 40


def latency_histogram_svg(
    latencies_ms: list[float], upper_ms: float, width: int = 480, height: int = 120
) -> str:
    """Inline SVG histogram (no plotting library needed to view or to make it)."""
    counts, edges = np.histogram(np.clip(latencies_ms, 0, upper_ms), bins=BINS, range=(0, upper_ms))
    peak = max(int(counts.max()), 1)
    bar = width / BINS
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 20 - (c / peak) * (height - 30):.1f}" width="{bar - 1:.1f}" '
        f'height="{(c / peak) * (height - 30):.1f}" fill="#4a7"><title>{edges[i]:.2f}-{edges[i + 1]:.2f} ms: '
        f"{c}</title></rect>"
        for i, c in enumerate(counts)
    )
    axis = f'<text x="0" y="{height - 4}" font-size="10">0 ms</text>' + (
        f'<text x="{width - 60}" y="{height - 4}" font-size="10">{upper_ms:.1f} ms+</text>'
    )
    return f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{bars}{axis}</svg>'


def write_load_report(directory: Path, model: str, concurrency: int, results: dict[str, LoadResult]) -> Path:
    """reports/load-<model>-<time>.html: per cluster the numbers and the latency histogram."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"load-{model}-{time.strftime('%Y%m%d-%H%M%S')}.html"
    all_latencies = [x for r in results.values() for x in r.latencies_ms]
    upper = float(np.percentile(all_latencies, 99.5)) if all_latencies else 1.0
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r.requests}</td><td>{r.errors}</td>"
        f"<td>{r.percentile_ms(50):.2f}</td><td>{r.percentile_ms(99):.2f}</td><td>{r.throughput_rps:.0f}</td>"
        f"<td>{latency_histogram_svg(r.latencies_ms, upper)}</td></tr>"
        for name, r in results.items()
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8>"
        f"<title>gpufleet load: {html.escape(model)}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 10px;text-align:right}</style>"
        f"<h1>Load through each cluster's proxy: {html.escape(model)}</h1>"
        f"<p>{time.strftime('%Y-%m-%d %H:%M:%S')}, concurrency {concurrency}</p>"
        "<table><tr><th>cluster</th><th>requests</th><th>errors</th><th>p50 ms</th><th>p99 ms</th>"
        f"<th>req/s</th><th>latency histogram</th></tr>{rows}</table>"
    )
    return path

"""What the judge is given: per-version observations over one window, or a reason there are none.

A metrics source (metrics/) produces these from what the serving layer exports; the canary
benchmark's simulator produces the same shapes from synthetic requests, so the judge sees one form.
Counts are increments over the window (not cumulative counters). Latency quantiles are what the
serving layer's summaries report for that window (Triton: `nv_inference_request_summary_us`,
quantiles 0.5/0.9/0.95/0.99/0.999); Triton exports no per-request latency histogram for
non-decoupled models, so quantiles plus the exact mean (duration sum / count) are the latency data.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VersionWindow:
    """One model version's traffic over [start_s, end_s) (seconds since the epoch, or simulated)."""

    version: int
    start_s: float
    end_s: float
    requests: float  # completed inferences, success + failure
    errors: float  # failed inferences
    latency_mean_ms: float | None  # exact: duration sum / request count over the window
    latency_quantiles_ms: dict[float, float] = field(default_factory=dict)  # {0.5: 1.2, 0.99: 4.0, ...}
    queue_mean_ms: float | None = None
    gpu_utilization: float | None = None  # 0..1, None where there is no GPU metric

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class NoData:
    """The source could not say anything about this window: never read as healthy."""

    reason: str  # e.g. "prometheus at http://127.0.0.1:9090 unreachable: connection refused"


@dataclass(frozen=True)
class WindowPair:
    """Stable (baseline) and canary over the same window, as the judge takes them."""

    baseline: VersionWindow
    canary: VersionWindow

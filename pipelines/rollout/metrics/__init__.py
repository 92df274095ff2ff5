"""Per-version evidence for the judge: one interface (base.py), one file per source (prometheus.py)."""

from pipelines.rollout.metrics.base import MetricsSource

__all__ = ["MetricsSource"]

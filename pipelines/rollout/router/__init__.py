"""Traffic split by model version: the interface (base.py) and one module per implementation."""

from pipelines.rollout.router.base import Router, Split, Weights, checked_split

__all__ = ["Router", "Split", "Weights", "checked_split"]

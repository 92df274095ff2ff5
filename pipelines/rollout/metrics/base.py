"""The metrics interface the rollout driver knows: what each model version served over a window.

A source answers per (cluster, model, version) over [start_s, end_s) in epoch seconds, with a
VersionWindow or a NoData naming why it cannot. It never stands a zero-error window in for data it
does not have: an unreachable backend, a failed query or a version without series is NoData. A
version whose series are there but that served nothing in the window is a VersionWindow with
requests == 0 (present, and no evidence either way).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from pipelines.rollout.evidence import NoData, VersionWindow


class MetricsSource(ABC):
    @abstractmethod
    def windows(
        self, cluster: str, model: str, versions: Iterable[int], start_s: float, end_s: float
    ) -> dict[int, VersionWindow | NoData]:
        """Every asked version over the same window (baseline and canary are read together, so the
        judge compares them over exactly the same scrapes)."""

    def window(
        self, cluster: str, model: str, version: int, start_s: float, end_s: float
    ) -> VersionWindow | NoData:
        return self.windows(cluster, model, [version], start_s, end_s)[version]

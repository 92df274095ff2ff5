"""What the rollout driver needs of one cluster: its router, its metrics, its replicas, loading versions.

The driver knows nothing else of a cluster. The local fleet's clusters (rollout/local.py) are HAProxy,
the fleet's Prometheus and the replicas' repository APIs; a Kubernetes cluster would be a Gateway API
HTTPRoute, its Prometheus and the Triton pods' repository APIs behind the same four members.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pipelines.engines.load import Replica
from pipelines.rollout.metrics.base import MetricsSource
from pipelines.rollout.router.base import Router


class RolloutCluster(ABC):
    name: str
    router: Router
    metrics: MetricsSource

    @abstractmethod
    def replicas(self) -> list[Replica]:
        """Every replica, each with the URL of its own Triton (the gate calls them one by one)."""

    @abstractmethod
    def served(self, model: str) -> list[int]:
        """The versions of `model` the cluster serves now."""

    @abstractmethod
    def refusal(self, model: str, versions: Sequence[int]) -> str | None:
        """Why the cluster could not serve `versions` of `model` together (checked before anything
        moves: engine compatibility, signature), or None."""

    @abstractmethod
    def serve(self, model: str, versions: Sequence[int]) -> None:
        """Every replica serves exactly `versions` of `model`, each verified; idempotent."""

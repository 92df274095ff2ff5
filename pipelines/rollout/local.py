"""The local fleet's clusters as the rollout driver sees them (rollout/clusters.py).

Router: the cluster's HAProxy runtime map. Metrics: the fleet's Prometheus. Loading: the engine
pipeline's own `serve_on_cluster` (checksums, compatibility, every replica verified), which also
records the served versions in the fleet's state so `gpufleet up` serves them again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from gpufleet.local.fleet import FleetEndpoints, LocalFleet
from gpufleet.objectstore import ObjectStore
from gpufleet.spec import Fleet
from pipelines.engines.load import Replica, compatibility_refusal, read_published, signature_refusal
from pipelines.engines.local_fleet import cluster_spec, currently_served, replicas_of, serve_on_cluster
from pipelines.rollout.clusters import RolloutCluster
from pipelines.rollout.metrics.prometheus import PrometheusMetrics
from pipelines.rollout.router.haproxy import HAProxyRouter

Report = Callable[[str], None]


class LocalRolloutCluster(RolloutCluster):
    def __init__(
        self,
        name: str,
        fleet: Fleet,
        local: LocalFleet,
        endpoints: FleetEndpoints,
        store: ObjectStore,
        report: Report,
    ) -> None:
        self.name = name
        self.fleet = fleet
        self.local = local
        self.endpoints = endpoints
        self.store = store
        self.report = report
        self.router = HAProxyRouter(name, Path(endpoints.cluster(name).admin_socket))
        self.metrics = PrometheusMetrics(endpoints.prometheus_url)

    def replicas(self) -> list[Replica]:
        return replicas_of(self.endpoints, self.name)

    def served(self, model: str) -> list[int]:
        return currently_served(self.local, self.endpoints, self.name, model)

    def refusal(self, model: str, versions: Sequence[int]) -> str | None:
        spec = cluster_spec(self.fleet, self.name)
        published = [read_published(self.store, model, v) for v in sorted(set(versions))]
        for version in published:
            problem = compatibility_refusal(spec, version)
            if problem:
                return f"{self.name}: {problem}"
        problem = signature_refusal(self.fleet.model(model), published, max(versions), self.name)
        return f"{self.name}: {problem}" if problem else None

    def serve(self, model: str, versions: Sequence[int]) -> None:
        serve_on_cluster(
            self.local,
            self.endpoints,
            self.fleet,
            self.name,
            self.fleet.model(model),
            self.store,
            versions,
            self.report,
        )


def local_clusters(
    fleet: Fleet, local: LocalFleet, endpoints: FleetEndpoints, store: ObjectStore, report: Report
) -> dict[str, LocalRolloutCluster]:
    """Every running local cluster of the fleet, by name."""
    return {
        c.name: LocalRolloutCluster(c.name, fleet, local, endpoints, store, report)
        for c in endpoints.clusters
    }

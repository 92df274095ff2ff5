"""A real two-wave local fleet for rollout tests, shared by the rollout test modules (one per session).

Two clusters in two waves (one Triton replica each, HAProxy in front, the fleet's Prometheus),
traffic from gpufleet's own BackgroundLoad, versions built and pushed the way a user does it. Each
test leaves every cluster serving one version (whatever it promoted or restored): the next test
starts its rollout from there.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpufleet.loadgen import BackgroundLoad
from gpufleet.local.fleet import FleetEndpoints, LocalFleet
from gpufleet.objectstore import ObjectStore
from gpufleet.spec import Fleet, ModelSpec, load_fleet
from gpufleet.triton_admin import serving_versions
from pipelines.engines.load import published_versions
from pipelines.rollout.driver import RolloutDriver, plan_rollout, plan_waves, settings_from_spec
from pipelines.rollout.local import LocalRolloutCluster, local_clusters
from pipelines.rollout.router.haproxy import HAProxyRouter
from pipelines.rollout.state import RolloutState, RolloutStore
from tests.conftest import RunningFleet, mlp_fleet, own_fleet

MODEL = "mlp"
WAVES = [["local-w1"], ["local-w2"]]
STEPS = [10, 50, 100]
FLEET = mlp_fleet(
    "dtest",
    [(WAVES[0][0], 1, 1), (WAVES[1][0], 2, 1)],
    f"""rollout:
  steps: {STEPS}
  min_bake_seconds: 4
  min_samples: 20
  no_data_deadline_seconds: 12
  slo: {{max_error_rate: 0.05, p99_latency_ms: 500}}
""",
)
LOAD_RPS = 60.0  # per cluster: 6 canary requests a second at the first step
WINDOW_S = 3.0
ROLLOUT_LIMIT_S = 150.0


@dataclass
class Harness:
    running: RunningFleet
    fleet: Fleet
    model: ModelSpec
    root: Path

    @property
    def local(self) -> LocalFleet:
        return LocalFleet(self.running.home)

    @property
    def endpoints(self) -> FleetEndpoints:
        endpoints = self.local.endpoints()
        assert endpoints is not None
        return endpoints

    @property
    def store(self) -> ObjectStore:
        return self.local.object_store(self.endpoints)

    @property
    def rollouts(self) -> RolloutStore:
        return RolloutStore(self.store)

    def clusters(self) -> dict[str, LocalRolloutCluster]:
        return local_clusters(self.fleet, self.local, self.endpoints, self.store, lambda m: None)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.running.cli(*args, timeout=timeout)

    def push(self, *inject: str) -> int:
        """Build (with `--inject-*` options, if any) and push a new version; its number."""
        built = self.cli("engine", "build", MODEL, *inject)
        assert built.returncode == 0, built.stdout + built.stderr
        pushed = self.cli("engine", "push", MODEL)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        return self.newest()

    def newest(self) -> int:
        return published_versions(self.store, MODEL)[-1]

    def served(self) -> dict[str, set[int]]:
        """What each replica's Triton itself says it serves, per cluster."""
        return {
            c.name: set.union(*(serving_versions(r.http_url, MODEL) for r in c.replicas))
            for c in self.endpoints.clusters
        }

    def stable(self) -> int:
        served = self.served()
        versions = {v for found in served.values() for v in found}
        assert len(versions) == 1 and all(len(s) == 1 for s in served.values()), served
        return versions.pop()

    def router_weights(self) -> dict[str, dict[int, int]]:
        return {
            c: HAProxyRouter(c, Path(self.endpoints.cluster(c).admin_socket)).weights(MODEL)
            for wave in WAVES
            for c in wave
        }

    def loads(self) -> list[BackgroundLoad]:
        return [
            BackgroundLoad(c.proxy_url, self.model, LOAD_RPS, concurrency=2) for c in self.endpoints.clusters
        ]

    def roll_out(self, candidate: int, *, load: bool = True, **overrides: float) -> RolloutState:
        """Run a rollout in this process with traffic on both clusters, to its end."""
        clusters = self.clusters()
        settings = settings_from_spec(self.fleet.rollout, window_seconds=WINDOW_S, **overrides)
        waves, _ = plan_waves(self.fleet, clusters)
        state = plan_rollout(self.model, candidate, STEPS, settings, waves, clusters, self.store, time.time())
        loads = self.loads() if load else []
        for generator in loads:
            generator.start()
        try:
            return RolloutDriver(self.rollouts, self.model, clusters).start(state)
        finally:
            for generator in loads:
                generator.stop()


@pytest.fixture(scope="session")
def rollout_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with own_fleet(tmp_path_factory, "rollouts", FLEET) as running:
        fleet = load_fleet(running.file)
        yield Harness(running, fleet, fleet.model(MODEL), running.file.parent)

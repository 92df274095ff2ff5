"""The pre-rollout gate on a real local fleet: real tritonserver replicas serving several mlp versions.

The fleet is this module's own (its own home): it loads versions the session fleet's users must not
see, and serves a different set on each replica. Versions, all published with `push_package` as
`engine push` does, from packages `build_engine` wrote:
  1  what `up` publishes (stable)
  2  a rebuild of the same builtin mlp (a healthy candidate)
  3  that rebuild with model.py sleeping SLOW_MS in every execute (push hashes the package's files
     when it pushes, so an edited model.py is simply a package with other bytes)
  4  the rebuild, whose stored reference.npz is then overwritten with outputs shifted by SHIFT
     (after the load, which checks every stored file against the manifest)
  5  the rebuild, loaded on replica 0 only
What each replica served is read from Triton's statistics API, not from the gate.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from gpufleet.local.fleet import LocalFleet
from gpufleet.objectstore import ObjectStore
from gpufleet.spec import ModelSpec, load_fleet
from gpufleet.triton_admin import apply_versions
from pipelines.engines.build import build_engine
from pipelines.engines.load import Replica, load_config_json, read_published
from pipelines.engines.local_fleet import replicas_of, serve_on_cluster
from pipelines.engines.package import read_package
from pipelines.engines.push import push_package
from pipelines.engines.reference import REFERENCE_FILE, Reference
from pipelines.rollout.gate import GateSettings, run_gate
from tests.conftest import mlp_fleet, own_fleet

pytestmark = pytest.mark.integration

CLUSTER = "local-g"
MODEL = "mlp"
FLEET = mlp_fleet("gtest", [(CLUSTER, 1, 2)])
STABLE, REBUILD, SLOW, ALTERED, ON_ONE_REPLICA = 1, 2, 3, 4, 5
SLOW_MS = 20
SHIFT = 0.5
# Appended to the rebuilt package's model.py: the served model, SLOW_MS slower per batch.
SLOWER = f"""

_Served = TritonPythonModel


class TritonPythonModel(_Served):  # test: a candidate that computes the right outputs, slowly
    def execute(self, requests):
        import time

        time.sleep({SLOW_MS} / 1000)
        return _Served.execute(self, requests)
"""


@dataclass(frozen=True)
class Fleet:
    model: ModelSpec
    store: ObjectStore
    replicas: list[Replica]


def successes(replica: Replica, version: int) -> int:
    """Requests `version` answered on `replica`, by Triton's own statistics API."""
    url = f"{replica.url}/v2/models/{MODEL}/versions/{version}/stats"
    stats = requests.get(url, timeout=10).json()["model_stats"][0]["inference_stats"]
    return int(stats["success"]["count"])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with own_fleet(tmp_path_factory, "gate", FLEET) as running:
        root = running.file.parent
        spec = load_fleet(running.file)
        model = spec.model(MODEL)
        local = LocalFleet(running.home)
        endpoints = local.endpoints()
        assert endpoints is not None
        store = local.object_store(endpoints)

        build_engine(model, target="cpu", out=root / "rebuild")
        build_engine(model, target="cpu", out=root / "slow")
        with (root / "slow" / "model.py").open("a") as model_py:
            model_py.write(SLOWER)
        for version, folder in (
            (REBUILD, "rebuild"),
            (SLOW, "slow"),
            (ALTERED, "rebuild"),
            (ON_ONE_REPLICA, "rebuild"),
        ):
            push_package(
                store, model, read_package(root / folder), journal_dir=root / "journal", version=version
            )

        def say(message: str) -> None:
            print(message)

        serve_on_cluster(local, endpoints, spec, CLUSTER, model, store, [1, 2, 3, 4], say)
        replicas = replicas_of(endpoints, CLUSTER)
        every = [read_published(store, MODEL, v) for v in (1, 2, 3, 4, 5)]
        apply_versions(replicas[0].url, MODEL, load_config_json(model, every), [1, 2, 3, 4, 5])

        key = f"{MODEL}/{ALTERED}/{REFERENCE_FILE}"
        stored = Reference.from_bytes(store.get_bytes(key) or b"")
        shifted = Reference(stored.inputs, {k: v + SHIFT for k, v in stored.outputs.items()}).to_bytes()
        store.put_file(key, shifted, sha256=hashlib.sha256(shifted).hexdigest())
        yield Fleet(model, store, replicas)


def test_a_rebuild_of_the_stable_model_passes_on_every_replica(fleet: Fleet) -> None:
    settings = GateSettings()
    before = {(r.name, v): successes(r, v) for r in fleet.replicas for v in (STABLE, REBUILD)}
    result = run_gate(fleet.model, fleet.store, STABLE, REBUILD, fleet.replicas, settings)
    after = {(r.name, v): successes(r, v) for r in fleet.replicas for v in (STABLE, REBUILD)}
    print(result.reason)

    assert result.passed, result.reason
    assert re.fullmatch(
        r"passed on 2 replicas: outputs within fp32 tolerance, p50 \d+\.\d ms vs \d+\.\d ms stable "
        r"\(on local-g-[01]; limit \d+\.\d ms\)",
        result.reason,
    ), result.reason
    assert [c.replica for c in result.checks] == ["local-g-0", "local-g-1"]
    for check in result.checks:
        assert check.passed and check.outputs_ok
        assert check.stable_p50_ms is not None and check.candidate_p50_ms is not None
        assert check.candidate_p50_ms <= check.latency_limit_ms  # type: ignore[operator]
    # Each replica itself answered every request, each on the version asked for: the reference call,
    # the warm-up and the latency test on the candidate; warm-up and latency test on the stable.
    for replica in fleet.replicas:
        candidate_sent = 1 + settings.warmup_requests + settings.latency_requests
        assert after[replica.name, REBUILD] - before[replica.name, REBUILD] == candidate_sent
        stable_sent = settings.warmup_requests + settings.latency_requests
        assert after[replica.name, STABLE] - before[replica.name, STABLE] == stable_sent
    history = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert history["passed"] is True and len(history["checks"]) == 2


def test_altered_reference_outputs_fail_naming_the_mismatch(fleet: Fleet) -> None:
    result = run_gate(fleet.model, fleet.store, STABLE, ALTERED, fleet.replicas)
    print(result.reason)
    assert not result.passed
    assert result.reason.startswith(
        "local-g-0: mlp version 4 gives wrong outputs for the reference inputs: output OUTPUT: "
    )
    assert f"max abs diff {SHIFT:g}" in result.reason  # what the test shifted them by
    assert "tolerance rtol 0.0001, atol 1e-05 for fp32" in result.reason
    assert result.reason.endswith("(and 1 more of 2 replicas failed)")
    for check in result.checks:
        assert not check.outputs_ok and check.problem and "wrong outputs" in check.problem
        assert check.candidate_p50_ms is None  # no latency test for a candidate computing the wrong thing


def test_a_slow_candidate_fails_on_latency(fleet: Fleet) -> None:
    result = run_gate(fleet.model, fleet.store, STABLE, SLOW, fleet.replicas)
    print(result.reason)
    assert not result.passed
    assert re.match(
        r"local-g-0: mlp version 3 is too slow: median \d+\.\d ms against \d+\.\d ms", result.reason
    )
    for check in result.checks:
        assert check.outputs_ok and check.problem and "too slow" in check.problem
        assert check.candidate_p50_ms is not None and check.stable_p50_ms is not None
        # Every request sleeps SLOW_MS in the candidate; the stable version does not sleep at all.
        assert check.candidate_p50_ms >= SLOW_MS
        assert check.stable_p50_ms < SLOW_MS / 2


def test_a_replica_not_serving_the_candidate_fails_naming_that_replica(fleet: Fleet) -> None:
    began = time.monotonic()
    result = run_gate(fleet.model, fleet.store, STABLE, ON_ONE_REPLICA, fleet.replicas)
    print(result.reason, f"({time.monotonic() - began:.1f} s)")
    assert not result.passed
    serving, missing = result.checks
    assert serving.replica == "local-g-0" and serving.passed
    assert missing.replica == "local-g-1" and not missing.outputs_ok
    assert result.reason == missing.problem
    assert result.reason.startswith(f"local-g-1: mlp version 5 did not answer at {fleet.replicas[1].url}: ")
    assert "version 5" in result.reason.split(": ", 2)[2]  # Triton's own words about the version

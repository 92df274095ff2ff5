"""A package built and pushed with `gpufleet engine` into the running local fleet's store is served by
Triton on every replica of both clusters (loaded straight from the store, as pushed).

The model is one the fleet does not declare, so the session fleet's own model and versions, which the
other integration tests check, stay as they are; it is unloaded again at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gpufleet.loadgen import infer_once
from gpufleet.local.fleet import LocalFleet, ReplicaEndpoints
from gpufleet.spec import load_fleet
from gpufleet.triton_admin import client, load_versions
from tests.conftest import TEST_FLEET, RunningFleet
from tests.unit.test_engine_push import ENGINE_CLI, stored_version_problem

pytestmark = pytest.mark.integration

PUSHED_MODEL = """
  - name: pushed
    source: builtin:mlp
    inputs: [{name: INPUT, dtype: FP32, dims: [16]}]
    outputs: [{name: OUTPUT, dtype: FP32, dims: [4]}]
    triton: {max_batch_size: 8}
"""


def engine(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")} | {"COLUMNS": "300"}
    return subprocess.run([*ENGINE_CLI, "engine", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_pushed_package_serves_on_every_replica_of_both_clusters(
    local_fleet: RunningFleet, tmp_path: Path
) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(TEST_FLEET + PUSHED_MODEL)
    built = engine("build", "pushed", "-f", str(fleet_file), "--out", "pkg", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    # No --store: the running fleet's store (its home says where).
    pushed = engine(
        "push",
        "pushed",
        "-f",
        str(fleet_file),
        "--from",
        "pkg",
        "--home",
        str(local_fleet.home),
        cwd=tmp_path,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "version=1 " in pushed.stdout and "files_uploaded=3" in pushed.stdout

    fleet = LocalFleet(local_fleet.home)
    endpoints = fleet.endpoints()
    assert endpoints is not None
    reader = fleet.store(endpoints)
    assert reader.versions("pushed") == [1]
    assert stored_version_problem(reader, "pushed", 1) is None

    spec = load_fleet(fleet_file).model("pushed")
    session = ort.InferenceSession(str(tmp_path / "pkg/model.onnx"), providers=["CPUExecutionProvider"])
    replicas = [r for c in endpoints.clusters for r in c.replicas]
    assert len(replicas) == 4
    try:
        for replica in replicas:
            load_versions(replica.http_url, spec, [1])
            got = infer_once(replica.http_url, spec, version="1", seed=11)["OUTPUT"]
            want = session.run(["OUTPUT"], {"INPUT": _input(seed=11)})[0]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=replica.name)
    finally:
        for replica in replicas:
            with client(replica.http_url) as c:
                c.unload_model("pushed")
        _wait_until_unloaded(replicas)


def _wait_until_unloaded(replicas: list[ReplicaEndpoints], timeout_s: float = 60) -> None:
    """Unloading is asynchronous, and a replica unloading a model reports itself not ready: wait for
    every replica to be ready again, so the tests after this one see the fleet as it was."""
    deadline = time.monotonic() + timeout_s
    waiting = list(replicas)
    while waiting and time.monotonic() < deadline:
        waiting = [r for r in waiting if "pushed" in _serving(r.http_url) or not _ready(r.http_url)]
        time.sleep(0.2)
    assert not waiting, f"still unloading after {timeout_s} s: {[r.name for r in waiting]}"


def _serving(url: str) -> set[str]:
    with client(url) as c:
        return {e["name"] for e in c.get_model_repository_index() if e.get("state") in ("READY", "UNLOADING")}


def _ready(url: str) -> bool:
    with client(url) as c:
        return bool(c.is_server_ready())


def _input(seed: int) -> np.ndarray:
    # What gpufleet.loadgen.example_inputs sends for this seed (as tests/integration/test_local_fleet.py).
    return np.random.default_rng(seed).standard_normal((1, 16)).astype(np.float32)

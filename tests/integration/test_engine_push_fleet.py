"""The engine pipeline on the running local fleet, as a user runs it: `engine build`, `engine push`,
`engine load` / `unload`, `model list|show`, each through `python -m gpufleet`.

Every claim about what a replica serves is checked on that replica directly (its repository index and
an inference against onnxruntime on the built ONNX file), never through the proxy or gpufleet's output.
The model is one the session fleet does not declare, so that fleet's own model and versions, which
other integration tests check, stay as they are; it is unloaded again at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import onnxruntime as ort
import pytest

from gpufleet.loadgen import infer_once
from gpufleet.local.fleet import FleetEndpoints, LocalFleet, ReplicaEndpoints
from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS
from gpufleet.spec import ModelSpec, load_fleet
from gpufleet.triton_admin import client
from tests.conftest import GPUFLEET, TEST_FLEET, RunningFleet
from tests.store_reader import StoreReader
from tests.unit.test_engine_push import stored_version_problem

pytestmark = pytest.mark.integration

MODEL = "pushed"
PUSHED_MODEL = """
  - name: pushed
    source: builtin:mlp
    inputs: [{name: INPUT, dtype: FP32, dims: [16]}]
    outputs: [{name: OUTPUT, dtype: FP32, dims: [4]}]
    triton: {max_batch_size: 8}
"""


@dataclass(frozen=True)
class Session:
    fleet: RunningFleet
    file: Path
    cwd: Path
    endpoints: FleetEndpoints
    spec: ModelSpec

    def engine(self, *args: str, file: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("engine", *args, file=file)

    def run(self, *args: str, file: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")} | {"COLUMNS": "300"}
        argv = [*GPUFLEET, *args, "-f", str(file or self.file), "--home", str(self.fleet.home)]
        return subprocess.run(argv, capture_output=True, text=True, cwd=self.cwd, env=env, timeout=300)

    def replicas(self, cluster: str | None = None) -> list[ReplicaEndpoints]:
        return [r for c in self.endpoints.clusters if cluster in (None, c.name) for r in c.replicas]

    def build_and_push(self, out: str, file: Path | None = None) -> int:
        built = self.engine("build", MODEL, "--out", out, file=file)
        assert built.returncode == 0, built.stderr
        pushed = self.engine("push", MODEL, "--from", out, file=file)
        assert pushed.returncode == 0, pushed.stderr
        return int(pushed.stdout.split("version=")[1].split()[0])


def serving(url: str, model: str = MODEL) -> set[int]:
    """What the replica itself says it serves READY."""
    with client(url) as c:
        return {
            int(e["version"])
            for e in c.get_model_repository_index()
            if e["name"] == model and e.get("state") == "READY" and "version" in e
        }


@pytest.fixture(scope="module")
def session(local_fleet: RunningFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    cwd = tmp_path_factory.mktemp("engine")
    fleet_file = cwd / "fleet.yaml"
    fleet_file.write_text(TEST_FLEET + PUSHED_MODEL)
    endpoints = LocalFleet(local_fleet.home).endpoints()
    assert endpoints is not None
    s = Session(local_fleet, fleet_file, cwd, endpoints, load_fleet(fleet_file).model(MODEL))
    try:
        yield s
    finally:
        for replica in s.replicas():
            with client(replica.http_url) as c:
                c.unload_model(MODEL)
        _wait_until_unloaded(s.replicas())


def test_push_then_load_serves_on_every_replica_of_each_cluster(session: Session) -> None:
    v1 = session.build_and_push("pkg1")
    assert v1 == 1
    e = session.endpoints
    reader = StoreReader(e.bucket, e.prefix, e.store_url, credentials=LOCAL_S3_CREDENTIALS)
    assert reader.versions(MODEL) == [1] and stored_version_problem(reader, MODEL, 1) is None
    # A push is not a load: no replica serves what was only pushed.
    assert all(serving(r.http_url) == set() for r in session.replicas())

    loaded = session.engine("load", "local-a", MODEL, "1")
    assert loaded.returncode == 0, loaded.stderr
    assert [serving(r.http_url) for r in session.replicas("local-a")] == [{1}, {1}]
    assert [serving(r.http_url) for r in session.replicas("local-b")] == [set(), set()]
    onnx = ort.InferenceSession(str(session.cwd / "pkg1/model.onnx"), providers=["CPUExecutionProvider"])
    want = onnx.run(["OUTPUT"], {"INPUT": _input(seed=11)})[0]
    for replica in session.replicas("local-a"):
        got = infer_once(replica.http_url, session.spec, version="1", seed=11)["OUTPUT"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=replica.name)

    assert session.engine("load", "local-b", MODEL, "1").returncode == 0
    v2 = session.build_and_push("pkg2")  # rebuilt: a new engine.json, the same ONNX file and runner
    assert v2 == 2
    both = session.engine("load", "local-a", MODEL, "2")
    assert both.returncode == 0, both.stderr
    assert [serving(r.http_url) for r in session.replicas("local-a")] == [{1, 2}, {1, 2}]
    assert [serving(r.http_url) for r in session.replicas("local-b")] == [{1}, {1}]

    listed = session.run("model", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["version"]: row for row in json.loads(listed.stdout)["models"][MODEL]}
    assert sorted(rows) == [1, 2]
    assert {c: sorted(r) for c, r in rows[1]["loaded_on"].items()} == {
        "local-a": ["local-a-0", "local-a-1"],
        "local-b": ["local-b-0", "local-b-1"],
    }
    assert list(rows[2]["loaded_on"]) == ["local-a"]
    package_bytes = sum(p.stat().st_size for p in (session.cwd / "pkg2").iterdir())
    assert rows[2]["size"] == package_bytes

    shown = session.run("model", "show", MODEL, "--version", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)["versions"][0]["manifest"]
    on_disk = hashlib.sha256((session.cwd / "pkg2/model.onnx").read_bytes()).hexdigest()
    assert manifest["files"]["model.onnx"]["sha256"] == on_disk

    unloaded = session.engine("unload", "local-a", MODEL, "1")
    assert unloaded.returncode == 0, unloaded.stderr
    assert [serving(r.http_url) for r in session.replicas("local-a")] == [{2}, {2}]
    last = session.engine("unload", "local-a", MODEL, "2")
    assert last.returncode == 2 and "only version" in last.stderr
    assert [serving(r.http_url) for r in session.replicas("local-a")] == [{2}, {2}]


def test_a_stored_file_that_does_not_match_the_manifest_is_refused(session: Session) -> None:
    version = session.build_and_push("pkg-tampered")
    before = [serving(r.http_url) for r in session.replicas("local-b")]
    # Replace the stored ONNX file behind the manifest's back, keeping the sha256 metadata it had: only
    # reading the bytes themselves can tell.
    key = f"{session.endpoints.prefix}/{MODEL}/{version}/model.onnx"
    s3 = boto3.client(
        "s3",
        endpoint_url=session.endpoints.store_url,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    head = s3.head_object(Bucket=session.endpoints.bucket, Key=key)
    s3.put_object(Bucket=session.endpoints.bucket, Key=key, Body=b"not the model", Metadata=head["Metadata"])

    refused = session.engine("load", "local-b", MODEL, str(version))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "model.onnx" in refused.stderr and "manifest" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert [serving(r.http_url) for r in session.replicas("local-b")] == before


def test_an_engine_for_a_gpu_is_refused_on_a_local_cluster_before_anything_moves(session: Session) -> None:
    gpu_package = session.cwd / "pkg-gpu"
    built = session.engine("build", MODEL, "--out", str(gpu_package))
    assert built.returncode == 0, built.stderr
    # What a TensorRT build on an A100 records (pipelines/engines/tensorrt_build.py); no GPU here to
    # make one, and the refusal reads only the metadata.
    meta = json.loads((gpu_package / "engine.json").read_text())
    meta |= {
        "target": "sm80",
        "format": "tensorrt_plan",
        "runtime": "tensorrt",
        "model_file": "model.plan",
        "gpu": {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"},
        "hardware_compatibility": "none",
        "precision": "fp16",
    }
    meta["runtime_versions"] |= {"tensorrt": "10.13.3", "cuda_runtime": "12.9"}
    (gpu_package / "engine.json").write_text(json.dumps(meta))
    shutil.move(gpu_package / "model.onnx", gpu_package / "model.plan")
    pushed = session.engine("push", MODEL, "--from", str(gpu_package))
    assert pushed.returncode == 0, pushed.stderr
    version = pushed.stdout.split("version=")[1].split()[0]
    before = [serving(r.http_url) for r in session.replicas()]

    refused = session.engine("load", "local-a", MODEL, version)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert "local-a" in line and "sm80" in line and len(line.splitlines()) == 1, line
    assert [serving(r.http_url) for r in session.replicas()] == before


def test_a_version_of_another_signature_is_refused(session: Session) -> None:
    other = session.cwd / "fleet-other-signature.yaml"
    other.write_text(
        session.file.read_text().replace("dims: [16]", "dims: [8]").replace("dims: [4]", "dims: [2]")
    )
    version = session.build_and_push("pkg-other", file=other)
    before = [serving(r.http_url) for r in session.replicas()]
    refused = session.engine("load", "local-a", MODEL, str(version))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"version {version}" in refused.stderr and "[-1, 8]" in refused.stderr
    assert [serving(r.http_url) for r in session.replicas()] == before
    # Under the fleet file it was built for, beside version 2 (built for the first one): one config
    # cannot serve both.
    beside = session.engine("load", "local-a", MODEL, str(version), file=other)
    assert beside.returncode == 2 and "one config per model" in beside.stderr, beside.stderr
    assert [serving(r.http_url) for r in session.replicas()] == before


def _wait_until_unloaded(replicas: list[ReplicaEndpoints], timeout_s: float = 60) -> None:
    """Unloading is asynchronous, and a replica unloading a model reports itself not ready: wait for
    every replica to be ready again, so the tests after this one see the fleet as it was."""
    deadline = time.monotonic() + timeout_s
    waiting = list(replicas)
    while waiting and time.monotonic() < deadline:
        waiting = [r for r in waiting if MODEL in _serving_names(r.http_url) or not _ready(r.http_url)]
        time.sleep(0.2)
    assert not waiting, f"still unloading after {timeout_s} s: {[r.name for r in waiting]}"


def _serving_names(url: str) -> set[str]:
    with client(url) as c:
        return {e["name"] for e in c.get_model_repository_index() if e.get("state") in ("READY", "UNLOADING")}


def _ready(url: str) -> bool:
    with client(url) as c:
        return bool(c.is_server_ready())


def _input(seed: int) -> np.ndarray:
    # What gpufleet.loadgen.example_inputs sends for this seed (as tests/integration/test_local_fleet.py).
    return np.random.default_rng(seed).standard_normal((1, 16)).astype(np.float32)

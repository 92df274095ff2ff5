"""The pre-rollout gate's refusals that need no Triton: the candidate's stored data, replicas that do not
answer, and its result as the rollout history stores it.

The store is a real S3 API (moto server) holding real packages of the builtin mlp, pushed the way
`engine push` pushes them; their stored reference data is then removed or spoiled. A replica that does
not answer is a real socket: one refusing connections, one accepting them and never replying. Whether
the gate called a replica at all is read from that socket (a pending connection), not from the gate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from gpufleet.objectstore import ObjectStore
from gpufleet.spec import ModelSpec, parse_fleet
from pipelines.engines.build import build_engine
from pipelines.engines.load import Replica
from pipelines.engines.package import read_package
from pipelines.engines.push import push_package
from pipelines.engines.reference import REFERENCE_FILE, Reference
from pipelines.rollout.gate import GateResult, GateSettings, ReplicaCheck, run_gate
from tests.objectstore_servers import emulator_or_skip

BUCKET = "rollout-gate"
FLEET = """
name: gate
clusters: [{name: local-a, cloud: local, wave: 1}]
model_store: {bucket: rollout-gate}
models:
  - name: mlp
    source: builtin:mlp
    inputs: [{name: INPUT, dtype: FP32, dims: [16]}]
    outputs: [{name: OUTPUT, dtype: FP32, dims: [4]}]
    triton: {max_batch_size: 8}
"""
# Versions in the module's store: 1 intact; the others with their reference data spoiled after the push.
INTACT, NO_REFERENCE, GARBAGE_REFERENCE, NO_OUTPUTS, ODD_INPUTS, UNPUBLISHED = 1, 2, 3, 4, 5, 9
FAST = GateSettings(timeout_s=0.5)


def mlp() -> ModelSpec:
    return parse_fleet(FLEET).model("mlp")


def put(store: ObjectStore, key: str, data: bytes) -> None:
    store.put_file(key, data, sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    root = tmp_path_factory.mktemp("gate")
    with emulator_or_skip("s3", root / "moto") as server:
        server.open(BUCKET).ensure_bucket()
        opened = server.open(BUCKET, "models")
        build_engine(mlp(), target="cpu", out=root / "pkg")
        package = read_package(root / "pkg")
        for version in (INTACT, NO_REFERENCE, GARBAGE_REFERENCE, NO_OUTPUTS, ODD_INPUTS):
            push_package(opened, mlp(), package, journal_dir=root / "journal", version=version)
        opened.delete(f"mlp/{NO_REFERENCE}/{REFERENCE_FILE}")
        put(opened, f"mlp/{GARBAGE_REFERENCE}/{REFERENCE_FILE}", b"not an npz file at all")
        intact = Reference.from_bytes(opened.get_bytes(f"mlp/{INTACT}/{REFERENCE_FILE}") or b"")
        put(opened, f"mlp/{NO_OUTPUTS}/{REFERENCE_FILE}", Reference(intact.inputs, {}).to_bytes())
        odd = {"INPUT": np.array([1 + 2j], dtype=np.complex64)}  # a dtype no Triton tensor has
        put(opened, f"mlp/{ODD_INPUTS}/{REFERENCE_FILE}", Reference(odd, intact.outputs).to_bytes())
        yield opened


@contextlib.contextmanager
def silent_replica(name: str) -> Iterator[tuple[Replica, socket.socket]]:
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield Replica(name, f"http://127.0.0.1:{listener.getsockname()[1]}"), listener


def refused_replica(name: str) -> Replica:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Replica(name, f"http://127.0.0.1:{port}")  # closed again: connecting is refused


def was_called(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.mark.parametrize(
    ("candidate", "says"),
    [
        (NO_REFERENCE, "has no reference data (mlp/2/reference.npz is not in"),
        (GARBAGE_REFERENCE, "mlp/3/reference.npz is not readable"),
        (NO_OUTPUTS, "mlp/4/reference.npz holds no reference outputs"),
    ],
)
def test_a_candidate_without_usable_reference_data_fails_before_any_replica_is_called(
    store: ObjectStore, candidate: int, says: str
) -> None:
    with silent_replica("local-a-0") as (replica, listener):
        result = run_gate(mlp(), store, INTACT, candidate, [replica], FAST)
        assert not was_called(listener)
    assert not result.passed and result.checks == ()
    assert says in result.reason
    assert result.reason.startswith(f"candidate mlp version {candidate}")
    # The fix, in the words of the CLI the user has.
    assert "build and push it again with this gpufleet (`gpufleet engine build mlp`" in result.reason
    assert "\n" not in result.reason


def test_an_unpublished_candidate_fails_naming_what_is_published(store: ObjectStore) -> None:
    with silent_replica("local-a-0") as (replica, listener):
        result = run_gate(mlp(), store, INTACT, UNPUBLISHED, [replica], FAST)
        assert not was_called(listener)
    assert not result.passed
    assert "mlp version 9 is not published" in result.reason
    assert "published: 1, 2, 3, 4, 5" in result.reason


def test_no_replicas_is_no_pass(store: ObjectStore) -> None:
    result = run_gate(mlp(), store, INTACT, INTACT, [], FAST)
    assert not result.passed and result.reason == "no replicas to call mlp version 1 on"


def test_replicas_that_do_not_answer_fail_the_gate_each_named(store: ObjectStore) -> None:
    with silent_replica("local-a-1") as (silent, listener):
        began = time.monotonic()
        result = run_gate(mlp(), store, INTACT, INTACT, [refused_replica("local-a-0"), silent], FAST)
        took_s = time.monotonic() - began
        assert was_called(listener)  # the gate did go to the replica itself
    assert not result.passed
    refused, timed_out = result.checks
    assert refused.problem is not None and timed_out.problem is not None
    assert refused.problem.startswith("local-a-0: mlp version 1 did not answer at http://127.0.0.1:")
    assert "ConnectionRefusedError" in refused.problem
    assert timed_out.problem.startswith("local-a-1: mlp version 1 did not answer")
    assert "TimeoutError" in timed_out.problem
    assert not refused.outputs_ok and refused.stable_p50_ms is None and refused.candidate_p50_ms is None
    # The first failure, and how many more.
    assert result.reason == f"{refused.problem} (and 1 more of 2 replicas failed)"
    # One request's timeout per silent replica, not one per planned request (44 of them).
    assert took_s < 5 * FAST.timeout_s


def test_the_result_goes_into_the_history_as_json(store: ObjectStore) -> None:
    failed = run_gate(mlp(), store, INTACT, INTACT, [refused_replica("local-a-0")], FAST)
    passed = GateResult(
        passed=True,
        reason="passed on 1 replica",
        checks=(ReplicaCheck("local-a-0", "http://127.0.0.1:1", True, None, 0.8, 0.9, 3.2, 40),),
        model="mlp",
        stable=1,
        candidate=2,
        precision="fp32",
    )
    for result in (failed, passed):
        document = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        assert document["passed"] is result.passed and document["reason"] == result.reason
        assert [c["replica"] for c in document["checks"]] == [c.replica for c in result.checks]
        assert document["settings"]["latency_ratio_limit"] == result.settings.latency_ratio_limit
    assert json.loads(json.dumps(passed.to_dict()))["checks"][0]["candidate_p50_ms"] == 0.9
    assert failed.to_dict()["precision"] == "fp32" and failed.to_dict()["candidate"] == 1


def test_reference_inputs_triton_cannot_take_fail_before_any_call(store: ObjectStore) -> None:
    with silent_replica("local-a-0") as (replica, listener):
        result = run_gate(mlp(), store, INTACT, ODD_INPUTS, [replica], FAST)
        assert not was_called(listener)
    assert not result.passed
    assert "input INPUT has dtype complex64, which Triton cannot take" in result.reason

"""The window journal on a real S3 API (moto's server): records round-trip exactly, are written once,
and come back per cluster in index order, so a resumed driver replays what its judges had seen."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from gpufleet.objectstore import ObjectStore
from gpufleet.objectstore.emulators import Emulator
from pipelines.rollout.evidence import NoData, VersionWindow, WindowPair
from pipelines.rollout.journal import WindowJournal, WindowRecord
from tests.objectstore_servers import emulator_or_skip

BUCKET = "rollout-journal"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator_or_skip("s3", tmp_path_factory.mktemp("s3-emulator")) as server:
        server.open(BUCKET).ensure_bucket()
        yield server


@pytest.fixture
def store(emulator: Emulator) -> ObjectStore:
    return emulator.open(BUCKET, f"t-{uuid.uuid4().hex[:8]}")


def window(version: int, requests: float, errors: float) -> VersionWindow:
    return VersionWindow(
        version=version,
        start_s=100.0,
        end_s=105.0,
        requests=requests,
        errors=errors,
        latency_mean_ms=1.25,
        latency_quantiles_ms={0.5: 1.0, 0.99: 4.5, 0.999: 9.0},
        queue_mean_ms=0.1,
    )


def record(cluster: str, index: int, evidence: WindowPair | NoData) -> WindowRecord:
    return WindowRecord(
        cluster=cluster,
        index=index,
        start_s=100.0 + 5 * index,
        end_s=105.0 + 5 * index,
        weight=10,
        step_index=1,
        evidence=evidence,
        verdict={"decision": "continue", "reason": "collecting", "tests": [{"name": "x", "e_value": 1.5}]},
        action={"kind": "stay", "weight": 10, "reason": "collecting"},
    )


def test_records_round_trip_exactly_including_quantile_levels_and_no_data(store: ObjectStore) -> None:
    journal = WindowJournal(store, "mlp", "mlp-v2-x")
    pair = WindowPair(baseline=window(1, 990, 0), canary=window(2, 10, 1))
    written = [record("local-a", 0, pair), record("local-a", 1, NoData("prometheus unreachable"))]
    for r in written:
        journal.append(r)

    read = WindowJournal(store, "mlp", "mlp-v2-x").records("local-a")

    assert read == written
    canary = read[0].evidence.canary  # type: ignore[union-attr]
    assert list(canary.latency_quantiles_ms) == [0.5, 0.99, 0.999]  # float levels again, not "0.99"
    assert store.list_keys("_rollouts/mlp/windows/mlp-v2-x/local-a/") == [
        "_rollouts/mlp/windows/mlp-v2-x/local-a/000000.json",
        "_rollouts/mlp/windows/mlp-v2-x/local-a/000001.json",
    ]


def test_a_window_is_written_once_and_clusters_and_rollouts_stay_apart(store: ObjectStore) -> None:
    journal = WindowJournal(store, "mlp", "r1")
    first = record("local-a", 0, NoData("first"))
    journal.append(first)
    journal.append(record("local-a", 0, NoData("replayed after a crash")))  # same index: kept as first
    for i in (2, 1, 0):  # out of order on purpose: read back in index order
        journal.append(record("local-b", i, NoData(f"b{i}")))
    WindowJournal(store, "mlp", "r2").append(record("local-a", 0, NoData("other rollout")))

    assert journal.records("local-a") == [first]
    assert [r.index for r in journal.records("local-b")] == [0, 1, 2]
    assert [(r.cluster, r.index) for r in journal.records()] == [
        ("local-a", 0),
        ("local-b", 0),
        ("local-b", 1),
        ("local-b", 2),
    ]

"""What `engine load` checks in the store before any replica is touched (pipelines/engines/load.py),
against a real S3 API (moto server). Loading itself runs on the real local fleet:
tests/integration/test_engine_push_fleet.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.objectstore import ObjectStore
from gpufleet.objectstore.emulators import Emulator
from gpufleet.spec import parse_fleet
from pipelines.engines.load import (
    compatibility_refusal,
    load_config_json,
    published_versions,
    read_published,
    signature_refusal,
    verify_checksums,
)
from tests.objectstore_servers import emulator_or_skip
from tests.unit.test_engine_push import FLEET, make_package, mlp_spec, push

BUCKET = "engine-load"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator_or_skip("s3", tmp_path_factory.mktemp("moto")) as server:
        server.open(BUCKET).ensure_bucket()
        yield server


@pytest.fixture
def store(moto: Emulator, request: pytest.FixtureRequest) -> ObjectStore:
    return moto.open(BUCKET, request.node.name[:50])


@pytest.fixture
def one_version(tmp_path: Path, store: ObjectStore) -> int:
    return push(store, make_package(tmp_path / "pkg"), tmp_path / "journal").version


def test_only_versions_with_a_manifest_are_published(store: ObjectStore, one_version: int) -> None:
    store.put_file("mlp/7/.reservation.json", b"{}", sha256=hashlib.sha256(b"{}").hexdigest())
    store.put_file("mlp/8/model.onnx", b"half", sha256=hashlib.sha256(b"half").hexdigest())
    assert published_versions(store, "mlp") == [one_version]


def test_an_unpublished_version_is_one_line_naming_the_published_ones(
    store: ObjectStore, one_version: int
) -> None:
    with pytest.raises(UserError, match=rf"mlp version 9 is not published .*\(published: {one_version}\)"):
        read_published(store, "mlp", 9)


def test_a_manifest_gpufleet_cannot_read_is_a_runtime_error(store: ObjectStore) -> None:
    text = json.dumps({"model": "mlp", "files": {"a": {"sha256": "x", "size": 1}}}).encode()  # no engine
    store.put_file("mlp/3/manifest.json", text, sha256=hashlib.sha256(text).hexdigest())
    with pytest.raises(FleetRuntimeError, match="not a manifest gpufleet can read"):
        read_published(store, "mlp", 3)


def test_stored_files_matching_the_manifest_pass(store: ObjectStore, one_version: int) -> None:
    verify_checksums(store, read_published(store, "mlp", one_version))


def test_a_stored_file_with_other_bytes_is_refused_even_when_its_metadata_agrees(
    store: ObjectStore, one_version: int
) -> None:
    published = read_published(store, "mlp", one_version)
    entry = published.files["model.onnx"]
    # Same length, other bytes, and the metadata sha256 left as the manifest says: only reading
    # the bytes shows it.
    store.put_file(f"mlp/{one_version}/model.onnx", b"x" * entry["size"], sha256=entry["sha256"])
    with pytest.raises(FleetRuntimeError, match=r"model\.onnx is .* the manifest says"):
        verify_checksums(store, published)


def test_a_missing_stored_file_is_refused(store: ObjectStore, one_version: int) -> None:
    store.delete(f"mlp/{one_version}/model.py")
    with pytest.raises(FleetRuntimeError, match=r"model\.py is missing"):
        verify_checksums(store, read_published(store, "mlp", one_version))


def test_versions_built_for_another_signature_are_refused(tmp_path: Path, store: ObjectStore) -> None:
    first = push(store, make_package(tmp_path / "a"), tmp_path / "j").version
    other_spec = parse_fleet(FLEET.replace("dims: [16]", "dims: [8]")).model("mlp")
    second = push(
        store, make_package(tmp_path / "b", spec=other_spec), tmp_path / "j", spec=other_spec
    ).version
    v1, v2 = read_published(store, "mlp", first), read_published(store, "mlp", second)
    spec = mlp_spec()
    assert signature_refusal(spec, [v1], first, "local-a") is None
    alone = signature_refusal(spec, [v2], second, "local-a")
    assert alone and f"version {second}" in alone and "[-1, 8]" in alone
    # The fleet file now says [8]: version 2 fits it, the version already served does not.
    beside = signature_refusal(other_spec, [v1, v2], second, "local-a")
    assert beside and f"version {first}, which local-a serves" in beside and "--only" in beside


def test_the_load_override_pins_every_served_version(tmp_path: Path, store: ObjectStore) -> None:
    first = push(store, make_package(tmp_path / "a"), tmp_path / "j").version
    second = push(store, make_package(tmp_path / "b", extra={"vocab.txt": b"a b"}), tmp_path / "j").version
    assert first != second
    versions = [read_published(store, "mlp", v) for v in (first, second)]
    config = json.loads(load_config_json(mlp_spec(), versions))
    # proto3 JSON writes int64 as strings (Triton's parser takes them).
    assert config["version_policy"] == {"specific": {"versions": [str(first), str(second)]}}
    assert config["backend"] == "python" and config["name"] == "mlp"


def test_a_tensorrt_plan_is_refused_on_a_local_cluster(tmp_path: Path, store: ObjectStore) -> None:
    package = make_package(tmp_path / "gpu")
    meta = json.loads((package / "engine.json").read_text())
    meta |= {
        "target": "sm80",
        "format": "tensorrt_plan",
        "runtime": "tensorrt",
        "model_file": "model.plan",
        "gpu": {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"},
        "hardware_compatibility": "none",
    }
    (package / "engine.json").write_text(json.dumps(meta))
    (package / "model.onnx").rename(package / "model.plan")
    version = push(store, package, tmp_path / "j").version
    local = parse_fleet(FLEET).clusters[0]
    refusal = compatibility_refusal(local, read_published(store, "mlp", version))
    assert (
        refusal
        and refusal.startswith(f"mlp version {version} (sm80 tensorrt_plan): ")
        and "local-a" in refusal
    )
    cpu = push(store, make_package(tmp_path / "cpu"), tmp_path / "j").version
    assert compatibility_refusal(local, read_published(store, "mlp", cpu)) is None

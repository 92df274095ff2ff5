"""The model store against moto's S3 server (a real S3 API on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from gpufleet.local.ports import free_port
from gpufleet.store import ModelStore, sha256_hex

CREDS = {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def store(s3_url: str, request: pytest.FixtureRequest) -> ModelStore:
    bucket = "t-" + request.node.name.replace("_", "-")[:50].lower()
    s = ModelStore(bucket, "models", s3_url, credentials=CREDS)
    s.ensure_bucket()
    return s


def test_publish_writes_files_then_manifest(store: ModelStore) -> None:
    files = {"model.onnx": b"onnx-bytes", "model.py": b"print('hi')"}
    result = store.publish_version("m", 1, files, 'name: "m"\n', {"source": "builtin:mlp"})
    assert result.uploaded == ["model.onnx", "model.py"] and result.unchanged == []
    manifest = store.manifest("m", 1)
    assert manifest is not None
    assert manifest["files"]["model.onnx"] == {"sha256": sha256_hex(b"onnx-bytes"), "size": 10}
    assert manifest["source"] == "builtin:mlp"
    body = store.s3.get_object(Bucket=store.bucket, Key="models/m/config.pbtxt")["Body"].read()
    assert body == b'name: "m"\n'
    assert store.versions("m") == [1]


def test_unchanged_files_are_not_uploaded_again(store: ModelStore) -> None:
    files = {"model.onnx": b"same", "model.py": b"v1"}
    store.publish_version("m", 1, files, "", {})
    again = store.publish_version("m", 1, {**files, "model.py": b"v2"}, "", {})
    assert again.unchanged == ["model.onnx"] and again.uploaded == ["model.py"]


def test_version_without_manifest_does_not_exist(store: ModelStore) -> None:
    store.publish_version("m", 1, {"a": b"1"}, "", {})
    # A crashed upload: files of version 2 but no manifest.
    store.s3.put_object(Bucket=store.bucket, Key="models/m/2/a", Body=b"partial")
    assert store.versions("m") == [1]
    assert store.manifest("m", 2) is None
    assert store.next_version("m") == 3  # never reuse a crashed version's number


def test_manifest_is_json_with_sorted_keys(store: ModelStore) -> None:
    store.publish_version("m", 1, {"a": b"1"}, "", {"engine": {"format": "onnx"}})
    raw = store.s3.get_object(Bucket=store.bucket, Key="models/m/1/manifest.json")["Body"].read()
    data = json.loads(raw)
    assert data["version"] == 1 and data["engine"] == {"format": "onnx"} and data["model"] == "m"

"""Store URLs, settings and metadata checks (refused before any request is sent), and S3 answers
no emulator gives, stubbed."""

from __future__ import annotations

import sys

import pytest
from botocore.stub import Stubber

from gpufleet.errors import UserError
from gpufleet.objectstore import MiB, StoreError, TransferSettings, open_store
from gpufleet.objectstore.azure_blob import BlobStore, parse_blob_url
from gpufleet.objectstore.gcs import GcsStore
from gpufleet.objectstore.s3 import S3Store

UNUSED_ENDPOINT = "http://127.0.0.1:9"  # never contacted: these tests send no request


def test_s3_url_names_bucket_and_prefix() -> None:
    store = open_store("s3://models-bucket/fleet/models/", endpoint=UNUSED_ENDPOINT)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (
        "models-bucket",
        "fleet/models",
        "s3://models-bucket/fleet/models/",
    )
    assert store.full_key("mlp/1/manifest.json") == "fleet/models/mlp/1/manifest.json"


def test_gcs_url_against_an_emulator_uploads_big_files_as_resumable_chunks() -> None:
    store = open_store("gs://models-bucket/models", endpoint=UNUSED_ENDPOINT)
    assert isinstance(store, GcsStore)
    assert (store.bucket.name, store.prefix, store.parallel_chunks) == ("models-bucket", "models", False)


def test_gcs_without_credentials_is_one_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    with pytest.raises(
        StoreError, match=r"^object store gs://b/m: connect failed: no Google credentials: .*nonexistent"
    ):
        open_store("gs://b/m")


@pytest.mark.parametrize(
    ("url", "account_url", "account", "container", "prefix"),
    [
        (
            "https://fleetstore.blob.core.windows.net/models/fleet",
            "https://fleetstore.blob.core.windows.net",
            "fleetstore",
            "models",
            "fleet",
        ),
        (
            "http://127.0.0.1:10000/devstoreaccount1/models",
            "http://127.0.0.1:10000/devstoreaccount1",
            "devstoreaccount1",
            "models",
            "",
        ),
    ],
)
def test_blob_urls_public_and_path_style(
    url: str, account_url: str, account: str, container: str, prefix: str
) -> None:
    assert parse_blob_url(url) == (account_url, account, container, prefix)


def test_blob_store_uses_the_account_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", "a2V5")
    store = open_store("https://fleetstore.blob.core.windows.net/models/fleet")
    assert isinstance(store, BlobStore)
    assert store.container.container_name == "models" and store.prefix == "fleet"
    assert store.container.credential.account_name == "fleetstore"


@pytest.mark.parametrize(
    ("url", "endpoint", "message"),
    [
        ("ftp://bucket/models", None, "use s3://BUCKET/PREFIX"),
        ("models-bucket", None, "use s3://BUCKET/PREFIX"),
        ("s3://", None, "names no bucket"),
        ("https://fleetstore.blob.core.windows.net/", None, "expected https://ACCOUNT.blob.core.windows.net"),
        ("http://127.0.0.1:10000/devstoreaccount1", None, "expected https://ACCOUNT"),
        ("http://127.0.0.1:10000/devstoreaccount1/models", UNUSED_ENDPOINT, "drop endpoint="),
    ],
)
def test_bad_store_urls_are_user_errors(url: str, endpoint: str | None, message: str) -> None:
    with pytest.raises(UserError, match=message):
        open_store(url, endpoint=endpoint)


def test_missing_cloud_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "gpufleet.objectstore.gcs")
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)  # as if not installed
    with pytest.raises(UserError, match=r"needs the cloud extra .*pip install -e '\.\[cloud\]'"):
        open_store("gs://b/m", endpoint=UNUSED_ENDPOINT)


@pytest.mark.parametrize(
    "settings",
    [
        {"part_size": 1 * MiB},  # below S3's 5 MiB minimum part
        {"part_size": 5 * MiB + 1},  # not a multiple of GCS's 256 KiB
        {"part_size": 16 * MiB, "multipart_threshold": 8 * MiB},
        {"max_concurrency": 0},
        {"retry_attempts": 0},
    ],
)
def test_transfer_settings_refuse_what_a_cloud_would(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TransferSettings(**settings)


@pytest.mark.parametrize(
    ("sha256", "metadata", "message"),
    [
        ("ABC", None, "sha256 must be 64 lowercase hex"),
        ("F" * 64, None, "sha256 must be 64 lowercase hex"),
        ("0" * 64, {"Source-File": "x"}, "metadata key 'Source-File'"),
    ],
)
def test_put_file_refuses_bad_sha256_or_metadata_before_sending(
    sha256: str, metadata: dict[str, str] | None, message: str
) -> None:
    store = open_store("s3://b/m", endpoint=UNUSED_ENDPOINT)
    with pytest.raises(ValueError, match=message):
        store.put_file("k", b"x", sha256=sha256, metadata=metadata)


@pytest.mark.parametrize("key", ["", "/absolute"])
def test_keys_are_relative_and_non_empty(key: str) -> None:
    with pytest.raises(ValueError, match="relative and non-empty"):
        open_store("s3://b/m", endpoint=UNUSED_ENDPOINT).full_key(key)


def test_s3_conditional_write_conflict_is_retried_not_taken_as_refusal() -> None:
    """AWS answers 409 ConditionalRequestConflict to overlapping writes and says retry (moto never does)."""
    store = open_store("s3://b/m", endpoint=UNUSED_ENDPOINT)
    assert isinstance(store, S3Store)
    with Stubber(store.s3) as stub:
        stub.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
        stub.add_response("put_object", {"ETag": '"etag"'})
        assert store.create_if_absent("locks/rollout", b"owner-a") is True
    with Stubber(store.s3) as stub:
        for _ in range(3):
            stub.add_client_error(
                "put_object", "ConditionalRequestConflict", "try again", http_status_code=409
            )
        with pytest.raises(
            StoreError, match="create_if_absent 'locks/rollout' failed: ConditionalRequestConflict"
        ):
            store.create_if_absent("locks/rollout", b"owner-a")


def test_blob_store_without_a_key_uses_azure_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import DefaultAzureCredential

    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    store = open_store("https://fleetstore.blob.core.windows.net/models")
    assert isinstance(store, BlobStore)
    assert isinstance(store.container.credential, DefaultAzureCredential)

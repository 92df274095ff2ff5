"""One object-store interface over S3, GCS and Azure Blob: what `engine push`, rollout locks and
version reservation are written against.

A store is a bucket (container) plus a key prefix, named by one URL: `s3://bucket/prefix`,
`gs://bucket/prefix`, `https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix` (or Azurite's
path-style `http://127.0.0.1:PORT/devstoreaccount1/CONTAINER/prefix`). Keys are relative to the prefix.

Uploads go through each cloud's own transfer library (boto3/s3transfer, google-cloud-storage's
transfer manager or resumable uploads, azure-storage-blob's block uploads); nothing here splits files.
Every file carries its sha256 in object metadata, so an unchanged file is recognised without reading it;
`sha256_and_size` streams the bytes themselves through sha256, for checks that must not trust metadata.

Conditional writes (what locks and compare-and-swap state are built on), checked against each emulator
by tests/unit/test_objectstore.py:

- create_if_absent: S3 `IfNoneMatch="*"` works on moto 5.2; Blob `overwrite=False` works on Azurite
  3.37; GCS `ifGenerationMatch=0` is IGNORED by gcp-storage-emulator (the create overwrites).
- replace_if_unchanged (compare-and-swap): S3 `IfMatch=ETag` works on moto; Blob ETag
  `IfNotModified` works on Azurite; GCS `ifGenerationMatch=N` is IGNORED by the emulator (a stale
  swap succeeds).
- one big file in parts (the part count is what the tests check; up to `max_concurrency` parts are
  in flight at once): S3 multipart works on moto, Blob blocks on Azurite; GCS XML multipart
  (`upload_chunks_concurrently`) is answered 501 by the emulator, whose resumable chunked upload
  (chunks one after another) works instead.
- server-side copy: S3 via s3transfer's managed copy (UploadPartCopy parts above the threshold, so
  objects over CopyObject's 5 GB limit copy) works on moto; GCS `rewrite` works on the emulator, which
  ignores the request's metadata and keeps the source's (the copy then patches its sha256 in); Blob
  Copy Blob with the account key completes at once on Azurite (a pending copy is polled).

Real GCS honours `ifGenerationMatch` and the XML multipart API; the emulator only lacks them. So the
GCS code sends the preconditions everywhere, and against the emulator the tests show them ignored
(strict xfail) instead of pretending they hold.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import FleetRuntimeError, UserError

MiB = 1024 * 1024
SHA256_METADATA_KEY = "sha256"
# Portable across the three clouds: Azure wants C# identifiers, S3 lowercases names.
_METADATA_KEY = re.compile(r"[a-z][a-z0-9_]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
# Bytes per read when a store streams an object through sha256 (memory held per stream).
DIGEST_CHUNK = 1 * MiB
# Called with each increment of bytes sent; the increments of one upload add up to its size.
ByteProgress = Callable[[int], None]
# The StoreError reason of a copy whose source is not there (S3 and GCS answer a bare 404 for it).
COPY_SOURCE_MISSING = "the source object does not exist"


class StoreError(FleetRuntimeError):
    """An object-store operation failed; the message names the store, the operation and the key."""

    def __init__(self, url: str, operation: str, key: str, reason: str) -> None:
        self.url, self.operation, self.key, self.reason = url, operation, key, reason
        what = f"{operation} {key!r}" if key else operation
        super().__init__(f"object store {url}: {what} failed: {reason}")


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and the token a compare-and-swap must present to replace exactly them."""

    data: bytes
    # The ETag (S3, Blob) or the generation number (GCS), as a string.
    token: str


@dataclass(frozen=True)
class TransferSettings:
    """How files move, the same on every cloud (each maps it onto its own transfer library)."""

    part_size: int = 8 * MiB  # S3 part, GCS chunk, Blob block
    multipart_threshold: int = 8 * MiB  # files at least this big go up in parts
    max_concurrency: int = 8  # parts (or blocks) of one file in flight at once
    # Tries per request, the first included; the waits between grow from about 1 s (each SDK's policy).
    retry_attempts: int = 5
    timeout_s: float = 60.0  # per request

    def __post_init__(self) -> None:
        # S3 parts are at least 5 MiB; GCS resumable chunks are multiples of 256 KiB.
        if self.part_size < 5 * MiB or self.part_size % (256 * 1024):
            raise ValueError(f"part_size must be >= 5 MiB and a multiple of 256 KiB, not {self.part_size}")
        if self.multipart_threshold < self.part_size:
            raise ValueError("multipart_threshold must be at least part_size")
        if self.max_concurrency < 1 or self.retry_attempts < 1:
            raise ValueError("max_concurrency and retry_attempts must be at least 1")


def object_metadata(sha256: str, metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The metadata stored with a file: the caller's entries plus its sha256 (checked, lowercase hex)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, not {sha256!r}")
    entries = dict(metadata or {})
    for name in entries:
        if not _METADATA_KEY.fullmatch(name):
            raise ValueError(f"metadata key {name!r}: use lowercase letters, digits and _ (portable names)")
    return {**entries, SHA256_METADATA_KEY: sha256}


class Sha256Sink:
    """A write-only file that hashes and counts what is written to it (nothing is kept)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def result(self) -> tuple[str, int]:
        return self.hash.hexdigest(), self.size


class ProgressFromTotals:
    """Turns "bytes done so far" reports into increments for a ByteProgress.

    Only growth is passed on: a report below the best one so far (a retried chunk read again, or
    totals from parallel threads arriving out of order) adds nothing, so the increments sum to the
    highest total reported, which is the size once the upload has finished.
    """

    def __init__(self, progress: ByteProgress) -> None:
        self.progress = progress
        self.reported = 0
        self._lock = threading.Lock()

    def __call__(self, done: int) -> None:
        with self._lock:
            grown, self.reported = done - self.reported, max(done, self.reported)
        if grown > 0:
            self.progress(grown)


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def connection_reason(endpoint: str, exc: BaseException) -> str:
    """`cannot connect to http://…: Connection refused` instead of urllib3's nested reprs."""
    found = _ERRNO_TEXT.search(str(exc))
    return f"cannot connect to {endpoint}: {found.group(1).strip() if found else type(exc).__name__}"


class ObjectStore(abc.ABC):
    """A bucket plus a key prefix. Every SDK failure comes out as a StoreError."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix.strip("/")

    # --- what each cloud implements -------------------------------------------------------------

    @abc.abstractmethod
    def ensure_bucket(self) -> None:
        """Create the bucket (container) when it does not exist (local fleet, emulators)."""

    @abc.abstractmethod
    def put_file(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        metadata: Mapping[str, str] | None = None,
        progress: ByteProgress | None = None,
    ) -> None:
        """Upload a file (or bytes), in parallel parts when it is big; its sha256 goes into metadata.

        The caller computed `sha256` from the same bytes; it is stored as given (lowercase hex).
        `progress` is called with increments of bytes as they go out, possibly from several threads
        at once (a retried part may be reported again as a negative and then positive increment on S3);
        the increments of a finished upload add up to its size.
        """

    @abc.abstractmethod
    def sha256_and_size(self, key: str) -> tuple[str, int] | None:
        """The sha256 (hex) and byte count of the object's actual bytes; None when it does not exist.

        Streams the bytes through the hash in chunks (memory stays the same whatever the size) and
        never looks at the sha256 in its metadata: this is how a stored copy is checked, not trusted.
        """

    @abc.abstractmethod
    def copy(self, source_key: str, dest_key: str, *, sha256: str) -> None:
        """Copy an object to another key of this store inside the service (no bytes pass through here).

        `dest_key` gets `sha256` in its metadata, as put_file would record it; the caller vouches
        that it is the source's digest. A source that does not exist is a StoreError.
        """

    @abc.abstractmethod
    def stored_metadata(self, key: str) -> dict[str, str] | None:
        """The object's metadata (without reading its bytes); None when it does not exist.

        On S3 and GCS a missing bucket reads the same way (their metadata request is a bare 404);
        writes and listings name the bucket.
        """

    @abc.abstractmethod
    def read(self, key: str) -> StoredObject | None:
        """The object's bytes and CAS token, None when it does not exist."""

    @abc.abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (recursive), sorted, relative to the store's prefix."""

    @abc.abstractmethod
    def list_prefixes(self, prefix: str = "") -> list[str]:
        """The "folders" directly under `prefix` (ending in '/'), sorted, relative to the store's prefix."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a key that does not exist is fine."""

    @abc.abstractmethod
    def _create(self, key: str, data: bytes) -> bool:
        """One conditional create request: False when the store refused it because the key exists."""

    @abc.abstractmethod
    def _replace(self, key: str, data: bytes, token: str) -> bool:
        """One conditional overwrite: False when the object is no longer the one `token` names."""

    @abc.abstractmethod
    def _reason(self, exc: BaseException) -> str | None:
        """One readable line for an SDK failure; None for an exception that is not the SDK's."""

    # --- built on the above --------------------------------------------------------------------

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 recorded with the object; None when it does not exist or has none."""
        return (self.stored_metadata(key) or {}).get(SHA256_METADATA_KEY)

    def get_bytes(self, key: str) -> bytes | None:
        found = self.read(key)
        return found.data if found else None

    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Write `data` only if no object has that key; True when this call's bytes are now stored.

        `data` must be unique to the caller (say, hold a random owner id): a refusal whose stored
        bytes equal `data` means an earlier attempt of this same call landed and the SDK retried after
        losing its response, which counts as success.
        """
        with self.operation("create_if_absent", key):
            return self._create(key, data) or self._holds(key, data)

    def replace_if_unchanged(self, key: str, data: bytes, token: str) -> bool:
        """Compare-and-swap: overwrite only if the object is still the one `read` returned `token` for.

        Same uniqueness rule for `data` as create_if_absent.
        """
        with self.operation("replace_if_unchanged", key):
            return self._replace(key, data, token) or self._holds(key, data)

    def _holds(self, key: str, data: bytes) -> bool:
        found = self.read(key)
        return found is not None and found.data == data

    def copy_error(self, source_key: str, dest_key: str, reason: str) -> StoreError:
        return StoreError(self.url, "copy", f"{source_key} -> {dest_key}", reason)

    def full_key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"object key must be relative and non-empty, not {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def full_prefix(self, prefix: str) -> str:
        if prefix.startswith("/"):
            raise ValueError(f"prefix must be relative, not {prefix!r}")
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    @contextlib.contextmanager
    def operation(self, name: str, key: str) -> Iterator[None]:
        """Turn the SDK's failures inside into one StoreError naming the store, `name` and `key`."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            reason = self._reason(exc)
            if reason is None:
                raise
            raise StoreError(self.url, name, key, one_line(reason)) from exc


def open_store(
    url: str, *, endpoint: str | None = None, settings: TransferSettings | None = None
) -> ObjectStore:
    """The store a URL names. `endpoint`: S3's endpoint URL (moto) or the GCS emulator's URL;
    Blob URLs already contain theirs. Credentials come from each cloud's usual chain.
    """
    transfer = settings or TransferSettings()
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "s3":
        from gpufleet.objectstore.s3 import S3Store

        return S3Store.connect(url, endpoint_url=endpoint, settings=transfer)
    if scheme == "gs":
        with _cloud_extra(url):
            from gpufleet.objectstore.gcs import GcsStore

            return GcsStore.connect(url, emulator=endpoint, settings=transfer)
    if scheme in ("http", "https"):
        if endpoint:
            raise UserError(f"store {url}: a Blob URL holds its own endpoint; drop endpoint={endpoint!r}")
        with _cloud_extra(url):
            from gpufleet.objectstore.azure_blob import BlobStore

            return BlobStore.connect(url, settings=transfer)
    raise UserError(
        f"store URL {url!r}: use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or "
        "https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX"
    )


def split_bucket_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → ("bucket", "a/b"), refusing a URL without a bucket."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UserError(f"store URL {url!r} names no bucket (expected {scheme}://BUCKET/PREFIX)")
    return bucket, prefix.strip("/")


@contextlib.contextmanager
def _cloud_extra(url: str) -> Iterator[None]:
    """The GCS and Azure SDKs belong to the `cloud` extra: a missing one is a setup step to name."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise UserError(
            f"store {url} needs the cloud extra ({exc.name} is not installed): pip install -e '.[cloud]'"
        ) from exc

"""Google Cloud Storage: google-cloud-storage's transfer manager and generation preconditions.

Big files: on GCS itself, `transfer_manager.upload_chunks_concurrently` (the XML multipart API, chunks
in parallel). gcp-storage-emulator does not implement that API (it answers 501), so against an
emulator big files go up as a resumable upload in chunks (`Blob.chunk_size`; the library sends the
chunks one after another). Small files are one request either way.

Conditional writes are `if_generation_match=0` (create) and `if_generation_match=N` (CAS), answered
412 when refused. gcp-storage-emulator ignores every `ifGenerationMatch` (checked by the tests): on it
create_if_absent overwrites and a stale CAS succeeds. Locks and version reservation on GCS are only
as good as GCS itself; the emulator cannot show them.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import re
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import requests
from google.api_core import exceptions as api_errors
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage
from google.cloud.storage import transfer_manager
from google.cloud.storage.exceptions import InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY

from gpufleet.objectstore import (
    COPY_SOURCE_MISSING,
    ByteProgress,
    ObjectStore,
    ProgressFromTotals,
    Sha256Sink,
    StoredObject,
    StoreError,
    TransferSettings,
    connection_reason,
    object_metadata,
    one_line,
    split_bucket_url,
)

_REQUEST_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")
# A read whose object changes between its metadata and its bytes tries again this often.
_READ_ATTEMPTS = 3


class GcsStore(ObjectStore):
    def __init__(
        self,
        url: str,
        client: storage.Client,
        bucket: str,
        prefix: str,
        settings: TransferSettings,
        *,
        parallel_chunks: bool,
    ) -> None:
        super().__init__(url, prefix)
        self.client = client
        self.bucket = client.bucket(bucket)
        self.settings = settings
        # False against gcp-storage-emulator, which lacks the XML multipart API.
        self.parallel_chunks = parallel_chunks
        self.endpoint = str(client._connection.API_BASE_URL)
        # About `retry_attempts` tries: the retry deadline covers backoffs of 1, 2, 4, ... seconds.
        self.retry: Retry | None = (
            DEFAULT_RETRY.with_timeout(float(2 ** (settings.retry_attempts - 1)))
            if settings.retry_attempts > 1
            else None
        )

    @classmethod
    def connect(
        cls, url: str, *, emulator: str | None = None, settings: TransferSettings, project: str | None = None
    ) -> GcsStore:
        """`emulator`: gcp-storage-emulator's URL (anonymous, no XML multipart); else Google's default
        credentials (or STORAGE_EMULATOR_HOST, which the library honours itself)."""
        bucket, prefix = split_bucket_url(url)
        if emulator:
            client = storage.Client(
                project=project or "gpufleet-local",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": emulator},
            )
        else:
            try:
                client = storage.Client(project=project)
            except GoogleAuthError as exc:
                raise StoreError(url, "connect", "", f"no Google credentials: {one_line(str(exc))}") from exc
        parallel = not emulator and not getattr(client, "_is_emulator_set", False)
        return cls(url, client, bucket, prefix, settings, parallel_chunks=parallel)

    def ensure_bucket(self) -> None:
        with self.operation("ensure_bucket", ""):
            if self.client.lookup_bucket(self.bucket.name, retry=self.retry) is None:
                self.client.create_bucket(self.bucket.name, retry=self.retry)

    def put_file(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        metadata: Mapping[str, str] | None = None,
        progress: ByteProgress | None = None,
    ) -> None:
        meta = object_metadata(sha256, metadata)
        with self.operation("put_file", key):
            size = source.stat().st_size if isinstance(source, Path) else len(source)
            big = size >= self.settings.multipart_threshold
            if big and self.parallel_chunks and isinstance(source, Path):
                blob = self.bucket.blob(self.full_key(key))
                blob.metadata = meta
                transfer_manager.upload_chunks_concurrently(
                    str(source),
                    blob,
                    chunk_size=self.settings.part_size,
                    max_workers=self.settings.max_concurrency,
                    worker_type=transfer_manager.THREAD,
                    timeout=self.settings.timeout_s,
                    retry=self.retry,
                )
                if progress is not None:
                    progress(size)  # the transfer manager's workers report nothing on the way
                return
            blob = self.bucket.blob(self.full_key(key), chunk_size=self.settings.part_size if big else None)
            blob.metadata = meta
            # What upload_from_filename does (content type from the name), on a stream we can watch.
            content_type = mimetypes.guess_type(str(source))[0] if isinstance(source, Path) else None
            with source.open("rb") if isinstance(source, Path) else io.BytesIO(source) as stream:
                blob.upload_from_file(
                    stream if progress is None else _ReadProgress(stream, progress),
                    size=size,
                    content_type=content_type,
                    retry=self.retry,
                    timeout=self.settings.timeout_s,
                )

    def copy(self, source_key: str, dest_key: str, *, sha256: str) -> None:
        meta = object_metadata(sha256, None)
        with self.operation("copy", f"{source_key} -> {dest_key}"):
            source = self.bucket.blob(self.full_key(source_key))
            dest = self.bucket.blob(self.full_key(dest_key))
            dest.metadata = meta  # the rewrite request's body: the new object's metadata
            token: str | None = None
            try:
                # Rewrite, not copyTo: GCS may answer a big rewrite in several calls, each with a token.
                while True:
                    token, _, _ = dest.rewrite(
                        source, token=token, retry=self.retry, timeout=self.settings.timeout_s
                    )
                    if token is None:
                        break
            except api_errors.NotFound as exc:
                if self.client.lookup_bucket(self.bucket.name, retry=self.retry) is None:
                    raise
                raise self.copy_error(source_key, dest_key, COPY_SOURCE_MISSING) from exc
            if (dest.metadata or {}) != meta:
                # gcp-storage-emulator ignores the body and keeps the source's metadata: set ours.
                dest.metadata = meta
                dest.patch(
                    if_generation_match=dest.generation, retry=self.retry, timeout=self.settings.timeout_s
                )

    def stored_metadata(self, key: str) -> dict[str, str] | None:
        with self.operation("stored_metadata", key):
            blob = self.bucket.get_blob(self.full_key(key), retry=self.retry, timeout=self.settings.timeout_s)
            return None if blob is None else {str(k): str(v) for k, v in (blob.metadata or {}).items()}

    def read(self, key: str) -> StoredObject | None:
        with self.operation("read", key):
            for _ in range(_READ_ATTEMPTS):
                blob = self.bucket.get_blob(
                    self.full_key(key), retry=self.retry, timeout=self.settings.timeout_s
                )
                if blob is None:
                    return None
                try:
                    # Pinned to the generation just seen, so bytes and token belong together.
                    data = blob.download_as_bytes(
                        if_generation_match=blob.generation, retry=self.retry, timeout=self.settings.timeout_s
                    )
                except (api_errors.PreconditionFailed, api_errors.NotFound):
                    continue
                return StoredObject(data=data, token=str(blob.generation))
            raise StoreError(self.url, "read", key, f"the object kept changing ({_READ_ATTEMPTS} tries)")

    def sha256_and_size(self, key: str) -> tuple[str, int] | None:
        with self.operation("sha256_and_size", key):
            for _ in range(_READ_ATTEMPTS):
                blob = self.bucket.get_blob(
                    self.full_key(key), retry=self.retry, timeout=self.settings.timeout_s
                )
                if blob is None:
                    return None
                sink = Sha256Sink()
                try:
                    # One streamed download written into the hash as it arrives, pinned like `read`.
                    blob.download_to_file(
                        sink,
                        if_generation_match=blob.generation,
                        retry=self.retry,
                        timeout=self.settings.timeout_s,
                    )
                except (api_errors.PreconditionFailed, api_errors.NotFound):
                    continue
                return sink.result()
            raise StoreError(
                self.url, "sha256_and_size", key, f"the object kept changing ({_READ_ATTEMPTS} tries)"
            )

    def list_keys(self, prefix: str = "") -> list[str]:
        with self.operation("list_keys", prefix):
            blobs = self.client.list_blobs(self.bucket, prefix=self.full_prefix(prefix), retry=self.retry)
            return sorted(self.relative(b.name) for b in blobs)

    def list_prefixes(self, prefix: str = "") -> list[str]:
        with self.operation("list_prefixes", prefix):
            listing: Any = self.client.list_blobs(
                self.bucket, prefix=self.full_prefix(prefix), delimiter="/", retry=self.retry
            )
            for _page in listing.pages:  # `prefixes` fills in as the pages are read
                pass
            return sorted(self.relative(p) for p in listing.prefixes)

    def delete(self, key: str) -> None:
        with self.operation("delete", key), contextlib.suppress(api_errors.NotFound):
            self.bucket.blob(self.full_key(key)).delete(retry=self.retry, timeout=self.settings.timeout_s)

    def _create(self, key: str, data: bytes) -> bool:
        return self._conditional_upload(key, data, generation=0)

    def _replace(self, key: str, data: bytes, token: str) -> bool:
        return self._conditional_upload(key, data, generation=int(token))

    def _conditional_upload(self, key: str, data: bytes, *, generation: int) -> bool:
        try:
            self.bucket.blob(self.full_key(key)).upload_from_string(
                data, if_generation_match=generation, retry=self.retry, timeout=self.settings.timeout_s
            )
        except api_errors.PreconditionFailed:
            return False
        return True

    def _reason(self, exc: BaseException) -> str | None:
        if isinstance(exc, api_errors.RetryError) and exc.cause is not None:
            exc = exc.cause
        if isinstance(exc, requests.ConnectionError):
            return connection_reason(self.endpoint, exc)
        if isinstance(exc, api_errors.NotFound):
            # Missing objects are answered before this (None, or nothing to delete): it is the bucket.
            return f"bucket {self.bucket.name!r} does not exist (HTTP 404)"
        if isinstance(exc, api_errors.GoogleAPICallError):
            return f"HTTP {exc.code}: {_REQUEST_PREFIX.sub('', str(exc.message))}"
        if isinstance(exc, InvalidResponse):
            status = getattr(exc.response, "status_code", "?")
            return f"HTTP {status} from {self.endpoint} ({exc.args[0] if exc.args else 'unexpected answer'})"
        if isinstance(exc, GoogleAuthError):
            return f"no Google credentials: {exc} (gcloud auth application-default login, workload identity)"
        if isinstance(exc, requests.RequestException):
            return str(exc)
        return None


class _ReadProgress:
    """The file a GCS upload reads: reports how far its reads have got as bytes sent.

    The library reads one request's bytes (a chunk, or a small file whole) right before sending
    them, and seeks back to re-read a chunk it retries; only the furthest point counts.
    """

    def __init__(self, stream: IO[bytes], progress: ByteProgress) -> None:
        self.stream = stream
        self.reached = ProgressFromTotals(progress)

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.reached(self.stream.tell())
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

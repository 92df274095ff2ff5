"""Azure Blob Storage: azure-storage-blob's block uploads and ETag conditions.

Big files: `BlobClient.upload_blob(..., max_concurrency=N)` stages blocks of `part_size` in parallel
and commits the block list (above `multipart_threshold`; below it, one Put Blob). Conditional writes are
`overwrite=False` (If-None-Match: *) and `etag=…, match_condition=IfNotModified` (If-Match), answered
409 BlobAlreadyExists / 412 ConditionNotMet when refused. Azurite 3.37 implements both.

URLs: `https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix`, or path-style
`http://HOST:PORT/ACCOUNT/CONTAINER/prefix` (Azurite). Credentials: Azurite's published development
key for its `devstoreaccount1` account, else AZURE_STORAGE_KEY, else azure-identity's
DefaultAzureCredential (workload identity, managed identity, `az login`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import (
    BlobClient,
    BlobPrefix,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
)

from gpufleet.errors import UserError
from gpufleet.objectstore import (
    COPY_SOURCE_MISSING,
    ByteProgress,
    ObjectStore,
    ProgressFromTotals,
    Sha256Sink,
    StoredObject,
    TransferSettings,
    connection_reason,
    object_metadata,
)

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's fixed development key, published in its README (not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_PUBLIC_SUFFIX = ".blob.core.windows.net"


class BlobStore(ObjectStore):
    def __init__(self, url: str, container: ContainerClient, prefix: str, settings: TransferSettings) -> None:
        super().__init__(url, prefix)
        self.container = container
        self.max_concurrency = settings.max_concurrency
        self.timeout_s = settings.timeout_s
        parts = urlsplit(container.url)
        self.endpoint = f"{parts.scheme}://{parts.netloc}"

    @classmethod
    def connect(cls, url: str, *, settings: TransferSettings, credential: Any = None) -> BlobStore:
        account_url, account, container, prefix = parse_blob_url(url)
        service = BlobServiceClient(
            account_url,
            credential=credential or _default_credential(account),
            max_single_put_size=settings.multipart_threshold,
            max_block_size=settings.part_size,
            retry_policy=ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=settings.retry_attempts - 1
            ),
            connection_timeout=settings.timeout_s,
            read_timeout=settings.timeout_s,
        )
        return cls(url, service.get_container_client(container), prefix, settings)

    def ensure_bucket(self) -> None:
        with self.operation("ensure_bucket", ""), contextlib.suppress(ResourceExistsError):
            self.container.create_container(timeout=int(self.timeout_s))

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
        blob = self.container.get_blob_client(self.full_key(key))
        # upload_blob's progress_hook gets (bytes done so far, total), after each block or the one Put.
        hook = None if progress is None else _totals_hook(ProgressFromTotals(progress))
        with self.operation("put_file", key):
            if isinstance(source, Path):
                with source.open("rb") as data:
                    blob.upload_blob(
                        data,
                        length=source.stat().st_size,
                        overwrite=True,
                        metadata=meta,
                        max_concurrency=self.max_concurrency,
                        progress_hook=hook,
                    )
            else:
                blob.upload_blob(
                    source,
                    overwrite=True,
                    metadata=meta,
                    max_concurrency=self.max_concurrency,
                    progress_hook=hook,
                )

    def copy(self, source_key: str, dest_key: str, *, sha256: str) -> None:
        meta = object_metadata(sha256, None)
        source = self.container.get_blob_client(self.full_key(source_key))
        dest = self.container.get_blob_client(self.full_key(dest_key))
        with self.operation("copy", f"{source_key} -> {dest_key}"):
            try:
                # Copy Blob: inside one account the source needs no credential of its own (the
                # request's own authorizes it); any size; done by the service, maybe asynchronously.
                started = dest.start_copy_from_url(source.url, metadata=meta)
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                raise self.copy_error(source_key, dest_key, COPY_SOURCE_MISSING) from exc
            if started["copy_status"] != "success":
                self._wait_for_copy(dest, source_key, dest_key)

    def _wait_for_copy(self, dest: BlobClient, source_key: str, dest_key: str) -> None:
        """Poll a pending copy until it ends; abort it when its progress stalls for `timeout_s`."""
        pause, progress, moved_at = 0.05, "", time.monotonic()
        while True:
            copy = dest.get_blob_properties().copy
            if copy.status != "pending":
                break
            if copy.progress != progress:
                progress, moved_at = str(copy.progress), time.monotonic()
            elif time.monotonic() - moved_at > self.timeout_s:
                dest.abort_copy(str(copy.id))
                raise self.copy_error(
                    source_key,
                    dest_key,
                    f"no progress in {self.timeout_s:.0f} s at {progress} bytes; aborted",
                )
            time.sleep(pause)
            pause = min(1.0, pause * 2)
        if copy.status != "success":
            raise self.copy_error(source_key, dest_key, f"copy {copy.status}: {copy.status_description}")

    def stored_metadata(self, key: str) -> dict[str, str] | None:
        with self.operation("stored_metadata", key):
            try:
                props = self.container.get_blob_client(self.full_key(key)).get_blob_properties()
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                return None
            return {str(k): str(v) for k, v in (props.metadata or {}).items()}

    def read(self, key: str) -> StoredObject | None:
        with self.operation("read", key):
            try:
                download = self.container.get_blob_client(self.full_key(key)).download_blob(
                    max_concurrency=self.max_concurrency
                )
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                return None
            # The downloader pins every range to the first response's ETag: bytes and token agree.
            return StoredObject(data=download.readall(), token=str(download.properties.etag))

    def sha256_and_size(self, key: str) -> tuple[str, int] | None:
        with self.operation("sha256_and_size", key):
            try:
                # validate_content: ranges of max_chunk_get_size (4 MiB), each checked against the
                # service's MD5 of it; without it the first request alone takes up to 32 MiB.
                download = self.container.get_blob_client(self.full_key(key)).download_blob(
                    validate_content=True
                )
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                return None
            sink = Sha256Sink()
            # The ranges one after another, each pinned to the first response's ETag.
            for chunk in download.chunks():
                sink.write(chunk)
            return sink.result()

    def list_keys(self, prefix: str = "") -> list[str]:
        with self.operation("list_keys", prefix):
            names = self.container.list_blob_names(name_starts_with=self.full_prefix(prefix) or None)
            return sorted(self.relative(name) for name in names)

    def list_prefixes(self, prefix: str = "") -> list[str]:
        with self.operation("list_prefixes", prefix):
            start = self.full_prefix(prefix) or None
            items = self.container.walk_blobs(name_starts_with=start, delimiter="/")
            return sorted(self.relative(item.name) for item in items if isinstance(item, BlobPrefix))

    def delete(self, key: str) -> None:
        with self.operation("delete", key):
            try:
                self.container.get_blob_client(self.full_key(key)).delete_blob()
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise

    def _create(self, key: str, data: bytes) -> bool:
        try:
            self.container.get_blob_client(self.full_key(key)).upload_blob(data, overwrite=False)
        except ResourceExistsError:
            return False
        return True

    def _replace(self, key: str, data: bytes, token: str) -> bool:
        try:
            self.container.get_blob_client(self.full_key(key)).upload_blob(
                data, overwrite=True, etag=token, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            if _code(exc) == "ContainerNotFound":
                raise
            return False
        return True

    def _reason(self, exc: BaseException) -> str | None:
        if isinstance(exc, ServiceRequestError):
            return connection_reason(self.endpoint, exc)
        if _code(exc) == "ContainerNotFound":
            return f"container {self.container.container_name!r} does not exist"
        if isinstance(exc, ClientAuthenticationError):
            return f"not authorized (HTTP {exc.status_code}): {_first_line(exc)}"
        if isinstance(exc, HttpResponseError):
            return f"HTTP {exc.status_code} {_code(exc) or ''}: {_first_line(exc)}"
        if isinstance(exc, AzureError):
            return _first_line(exc)
        return None


def parse_blob_url(url: str) -> tuple[str, str, str, str]:
    """(account URL, account, container, prefix) of a public or path-style (Azurite) Blob URL."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    host = parts.hostname or ""
    if host.endswith(_PUBLIC_SUFFIX):
        account, account_url = host[: -len(_PUBLIC_SUFFIX)], f"{parts.scheme}://{parts.netloc}"
    elif segments:
        account = segments.pop(0)
        account_url = f"{parts.scheme}://{parts.netloc}/{account}"
    else:
        account, account_url = "", ""
    if not account or not segments:
        raise UserError(
            f"Blob store URL {url!r}: expected https://ACCOUNT{_PUBLIC_SUFFIX}/CONTAINER[/PREFIX] "
            "or http://HOST:PORT/ACCOUNT/CONTAINER[/PREFIX] (Azurite)"
        )
    return account_url, account, segments[0], "/".join(segments[1:])


def _default_credential(account: str) -> Any:
    if account == AZURITE_ACCOUNT:
        return {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    if key := os.environ.get("AZURE_STORAGE_KEY"):
        return {"account_name": account, "account_key": key}
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _totals_hook(totals: ProgressFromTotals) -> Callable[[int, int | None], None]:
    def hook(done: int, total: int | None) -> None:
        totals(done)

    return hook


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)  # a StorageErrorCode (str enum) or a plain string
    return str(getattr(code, "value", code) or "")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__

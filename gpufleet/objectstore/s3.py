"""S3 (and S3 APIs such as moto's server): boto3's managed transfers, conditional PutObject.

Big files go through `upload_file`/`upload_fileobj` with a TransferConfig (multipart, parts in
parallel). Conditional writes are PutObject's `IfNoneMatch="*"` (create) and `IfMatch=ETag` (CAS), both
answered 412 PreconditionFailed when refused; AWS S3 has them since 2024 and moto 5.2 implements both.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from gpufleet.objectstore import (
    COPY_SOURCE_MISSING,
    DIGEST_CHUNK,
    ByteProgress,
    ObjectStore,
    Sha256Sink,
    StoredObject,
    TransferSettings,
    connection_reason,
    object_metadata,
    split_bucket_url,
)

_REFUSED = "PreconditionFailed"
# AWS answers 409 when a conditional write overlaps another write of the key; AWS says to retry it.
_CONFLICT = "ConditionalRequestConflict"
_CONFLICT_ATTEMPTS = 3
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Store(ObjectStore):
    def __init__(self, url: str, client: Any, bucket: str, prefix: str, settings: TransferSettings) -> None:
        super().__init__(url, prefix)
        self.s3 = client
        self.bucket = bucket
        self.endpoint = str(client.meta.endpoint_url)
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.part_size,
            max_concurrency=settings.max_concurrency,
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        settings: TransferSettings,
        credentials: Mapping[str, str] | None = None,
    ) -> S3Store:
        """`credentials`: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION; else boto3's chain."""
        bucket, prefix = split_bucket_url(url)
        creds = credentials or {}
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=creds.get("AWS_DEFAULT_REGION"),
            aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
            config=Config(
                retries={"max_attempts": settings.retry_attempts, "mode": "standard"},
                connect_timeout=settings.timeout_s,
                read_timeout=settings.timeout_s,
                # Parallel parts need as many pooled connections as parts in flight.
                max_pool_connections=max(10, settings.max_concurrency),
                s3={"addressing_style": "path"} if endpoint_url else {},
            ),
        )
        return cls(url, client, bucket, prefix, settings)

    def ensure_bucket(self) -> None:
        with self.operation("ensure_bucket", ""):
            try:
                self.s3.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in _MISSING and _code(exc) != "NoSuchBucket":
                    raise
                region = self.s3.meta.region_name
                where = {} if region in (None, "us-east-1") else {"LocationConstraint": region}
                self.s3.create_bucket(
                    Bucket=self.bucket, **({"CreateBucketConfiguration": where} if where else {})
                )

    def put_file(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        metadata: Mapping[str, str] | None = None,
        progress: ByteProgress | None = None,
    ) -> None:
        extra = {"Metadata": object_metadata(sha256, metadata)}
        with self.operation("put_file", key):
            # s3transfer's Callback: bytes as each part's body is read out to the connection.
            if isinstance(source, Path):
                self.s3.upload_file(
                    str(source),
                    self.bucket,
                    self.full_key(key),
                    extra,
                    Callback=progress,
                    Config=self.transfer,
                )
            else:
                self.s3.upload_fileobj(
                    io.BytesIO(source),
                    self.bucket,
                    self.full_key(key),
                    extra,
                    Callback=progress,
                    Config=self.transfer,
                )

    def copy(self, source_key: str, dest_key: str, *, sha256: str) -> None:
        # s3transfer's managed copy: CopyObject below multipart_threshold, UploadPartCopy in parts of
        # part_size above it (CopyObject stops at 5 GB), the parts pinned to the source's ETag.
        extra = {"Metadata": object_metadata(sha256, None), "MetadataDirective": "REPLACE"}
        source = {"Bucket": self.bucket, "Key": self.full_key(source_key)}
        with self.operation("copy", f"{source_key} -> {dest_key}"):
            try:
                self.s3.copy(source, self.bucket, self.full_key(dest_key), extra, Config=self.transfer)
            except ClientError as exc:
                if _code(exc) in _MISSING:  # the source HEAD s3transfer starts with
                    raise self.copy_error(source_key, dest_key, COPY_SOURCE_MISSING) from exc
                raise

    def stored_metadata(self, key: str) -> dict[str, str] | None:
        with self.operation("stored_metadata", key):
            try:
                head = self.s3.head_object(Bucket=self.bucket, Key=self.full_key(key))
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            return {str(k): str(v) for k, v in head.get("Metadata", {}).items()}

    def read(self, key: str) -> StoredObject | None:
        with self.operation("read", key):
            try:
                got = self.s3.get_object(Bucket=self.bucket, Key=self.full_key(key))
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            return StoredObject(data=got["Body"].read(), token=str(got["ETag"]))

    def sha256_and_size(self, key: str) -> tuple[str, int] | None:
        with self.operation("sha256_and_size", key):
            try:
                got = self.s3.get_object(Bucket=self.bucket, Key=self.full_key(key))
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            sink = Sha256Sink()
            with contextlib.closing(got["Body"]) as body:
                for chunk in body.iter_chunks(DIGEST_CHUNK):
                    sink.write(chunk)
            return sink.result()

    def list_keys(self, prefix: str = "") -> list[str]:
        with self.operation("list_keys", prefix):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.full_prefix(prefix)
            )
            return sorted(self.relative(o["Key"]) for page in pages for o in page.get("Contents", []))

    def list_prefixes(self, prefix: str = "") -> list[str]:
        with self.operation("list_prefixes", prefix):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.full_prefix(prefix), Delimiter="/"
            )
            return sorted(
                self.relative(p["Prefix"]) for page in pages for p in page.get("CommonPrefixes", [])
            )

    def delete(self, key: str) -> None:
        with self.operation("delete", key):
            self.s3.delete_object(Bucket=self.bucket, Key=self.full_key(key))

    def _create(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def _replace(self, key: str, data: bytes, token: str) -> bool:
        return self._conditional_put(key, data, IfMatch=token)

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> bool:
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                self.s3.put_object(Bucket=self.bucket, Key=self.full_key(key), Body=data, **condition)
            except ClientError as exc:
                if _code(exc) == _CONFLICT and attempt < _CONFLICT_ATTEMPTS:
                    time.sleep(0.1 * attempt)
                    continue
                # IfMatch on a key that is gone: there is nothing left to swap.
                if _code(exc) == _REFUSED or (_code(exc) in _MISSING and "IfMatch" in condition):
                    return False
                raise
            return True
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _reason(self, exc: BaseException) -> str | None:
        # upload_file wraps the service's answer in S3UploadFailedError; the answer is the reason.
        if isinstance(exc, Boto3Error) and isinstance(exc.__context__, ClientError | BotoCoreError):
            exc = exc.__context__
        if isinstance(exc, EndpointConnectionError):
            return connection_reason(self.endpoint, exc.kwargs.get("error", exc))
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            if _code(exc) == "NoSuchBucket":
                return f"bucket {self.bucket!r} does not exist"
            return f"{error.get('Code', '?')}: {error.get('Message') or exc}"
        if isinstance(exc, Boto3Error | BotoCoreError):
            return str(exc)
        return None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))

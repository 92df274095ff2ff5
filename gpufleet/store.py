"""The model store: Triton repository layout in an S3 API bucket, with a manifest per version.

Layout: `<prefix>/<model>/config.pbtxt`, `<prefix>/<model>/<version>/<files>` and
`<prefix>/<model>/<version>/manifest.json`. The manifest is written last, so a version without one
(an upload in progress or one that crashed) does not exist for any reader.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PublishResult:
    version: int
    uploaded: list[str]
    unchanged: list[str]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelStore:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        creds = credentials or {}
        self.s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def key(self, *parts: object) -> str:
        return "/".join([self.prefix, *(str(p) for p in parts)])

    def ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.s3.create_bucket(Bucket=self.bucket)
            self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})

    def put_text(self, key: str, text: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode())

    def _remote_sha256(self, key: str) -> str | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return None
        value = head.get("Metadata", {}).get("sha256")
        return str(value) if value else None

    def publish_version(
        self, model: str, version: int, files: dict[str, bytes], config_pbtxt: str, lineage: dict[str, object]
    ) -> PublishResult:
        """Upload a version's files (skipping unchanged ones), then its manifest, last."""
        uploaded, unchanged = [], []
        entries: dict[str, dict[str, object]] = {}
        for name, data in sorted(files.items()):
            digest = sha256_hex(data)
            entries[name] = {"sha256": digest, "size": len(data)}
            key = self.key(model, version, name)
            if self._remote_sha256(key) == digest:
                unchanged.append(name)
                continue
            # upload_fileobj goes through s3transfer: multipart and parallel parts for big engines.
            self.s3.upload_fileobj(
                io.BytesIO(data), self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}}
            )
            uploaded.append(name)
        self.put_text(self.key(model, "config.pbtxt"), config_pbtxt)
        manifest = {
            "model": model,
            "version": version,
            "files": entries,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **lineage,
        }
        self.put_text(self.key(model, version, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True))
        return PublishResult(version=version, uploaded=uploaded, unchanged=unchanged)

    def _version_dirs(self, model: str) -> list[int]:
        paginator = self.s3.get_paginator("list_objects_v2")
        found: set[int] = set()
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(model) + "/", Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = str(common["Prefix"]).rstrip("/").rsplit("/", 1)[-1]
                if name.isdigit():
                    found.add(int(name))
        return sorted(found)

    def versions(self, model: str) -> list[int]:
        """Versions that exist: those whose manifest is present."""
        return [v for v in self._version_dirs(model) if self.manifest(model, v) is not None]

    def next_version(self, model: str) -> int:
        # Count directories without a manifest too: never reuse the number of a crashed upload.
        dirs = self._version_dirs(model)
        return (max(dirs) + 1) if dirs else 1

    def manifest(self, model: str, version: int) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key(model, version, MANIFEST))[
                "Body"
            ].read()
        except ClientError:
            return None
        data = json.loads(body)
        return data if isinstance(data, dict) else None

"""An independent reader of the model store's layout, with plain boto3 (as Triton reads S3).

Tests check what the engine pipeline wrote through this reader rather than through the pipeline's own
code: a version exists only when `<prefix>/<model>/<version>/manifest.json` does.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from gpufleet.store import MANIFEST


class StoreReader:
    def __init__(
        self, bucket: str, prefix: str, endpoint_url: str, credentials: dict[str, str] | None = None
    ) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        creds = credentials or {}
        self.s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
            config=Config(s3={"addressing_style": "path"}),
        )

    def key(self, *parts: object) -> str:
        return "/".join([self.prefix, *(str(p) for p in parts)])

    def versions(self, model: str) -> list[int]:
        """Versions that exist: number folders holding a manifest."""
        found: set[int] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(model) + "/", Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = str(common["Prefix"]).rstrip("/").rsplit("/", 1)[-1]
                if name.isdigit() and self.manifest(model, int(name)) is not None:
                    found.add(int(name))
        return sorted(found)

    def manifest(self, model: str, version: int) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key(model, version, MANIFEST))[
                "Body"
            ].read()
        except ClientError:
            return None
        data = json.loads(body)
        return data if isinstance(data, dict) else None

"""The model store: the S3 bucket that holds the Triton model repository, its manifests and rollout state."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from modules.aws.account import AwsAccount
from modules.aws.encryption_key import alias_for
from modules.aws.secure_bucket import keyed_bucket

# Superseded engine versions stay recoverable this long (a rollback past it republishes from the source).
NONCURRENT_VERSION_DAYS = 30


def store_key_alias(bucket: str) -> str:
    """Alias of the store's KMS key: cluster stacks grant decrypt by alias (they cannot know the key id)."""
    return alias_for("model-store", bucket)


def store_url(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}"


@dataclass(frozen=True)
class ModelStoreProps:
    bucket: str
    prefix: str
    account: AwsAccount
    tags: dict[str, str]
    access_log_bucket: str
    noncurrent_version_days: int = NONCURRENT_VERSION_DAYS


class ModelStore(Construct):
    def __init__(self, scope: Construct, id_: str, props: ModelStoreProps) -> None:
        super().__init__(scope, id_)
        self.key, self.secure_bucket = keyed_bucket(
            self,
            "store",
            bucket=props.bucket,
            key_alias=store_key_alias(props.bucket),
            key_description=f"gpufleet model store {props.bucket}",
            account=props.account,
            tags=props.tags,
            noncurrent_version_days=props.noncurrent_version_days,
            access_log_bucket=props.access_log_bucket,
            no_replication_reason="fleet.yaml names no second region to replicate to; the store is "
            "versioned, and every engine can be rebuilt from its model source (gpufleet DR restores from "
            "the source of truth)",
        )
        self.bucket_name: str = self.secure_bucket.bucket_name
        self.bucket_arn: str = self.secure_bucket.bucket_arn
        self.url: str = store_url(props.bucket, props.prefix)

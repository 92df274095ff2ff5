"""Remote Terraform state of an environment: a versioned S3 bucket and a DynamoDB lock table."""

from __future__ import annotations

from dataclasses import dataclass

from cdktf_cdktf_provider_aws.dynamodb_table import (
    DynamodbTable,
    DynamodbTableAttribute,
    DynamodbTablePointInTimeRecovery,
    DynamodbTableServerSideEncryption,
)
from constructs import Construct

from modules.aws.account import AwsAccount
from modules.aws.encryption_key import alias_for
from modules.aws.secure_bucket import keyed_bucket

# Old state versions are the undo of a bad apply: keep them a quarter.
NONCURRENT_VERSION_DAYS = 90
LOCK_KEY = "LockID"  # the attribute Terraform's S3 backend locks on


def lock_table_name(state_bucket: str) -> str:
    """The lock table beside a state bucket (previews compute it from the base environment's bucket)."""
    return f"{state_bucket}-lock"  # DynamoDB allows 255 characters; bucket names have at most 63


@dataclass(frozen=True)
class StateBackendProps:
    bucket: str
    account: AwsAccount
    tags: dict[str, str]
    access_log_bucket: str
    noncurrent_version_days: int = NONCURRENT_VERSION_DAYS


class StateBackend(Construct):
    def __init__(self, scope: Construct, id_: str, props: StateBackendProps) -> None:
        super().__init__(scope, id_)
        # Objects Terraform writes carry their own encryption header (backend `encrypt = true`); the bucket
        # default covers anything else written here.
        self.key, self.secure_bucket = keyed_bucket(
            self,
            "state",
            bucket=props.bucket,
            key_alias=alias_for("tfstate", props.bucket),
            key_description=f"gpufleet Terraform state {props.bucket}",
            account=props.account,
            tags=props.tags,
            noncurrent_version_days=props.noncurrent_version_days,
            access_log_bucket=props.access_log_bucket,
            no_replication_reason="state is versioned and every stack can be re-imported or rebuilt from "
            "fleet.yaml; a replica region is not part of the fleet spec",
        )
        self.lock_table = DynamodbTable(
            self,
            "lock",
            name=lock_table_name(props.bucket),
            billing_mode="PAY_PER_REQUEST",  # a handful of lock writes per deploy
            hash_key=LOCK_KEY,
            attribute=[DynamodbTableAttribute(name=LOCK_KEY, type="S")],
            point_in_time_recovery=DynamodbTablePointInTimeRecovery(enabled=True),
            server_side_encryption=DynamodbTableServerSideEncryption(
                enabled=True, kms_key_arn=self.key.key_arn
            ),
            deletion_protection_enabled=True,
            tags=props.tags,
        )
        self.bucket_name: str = self.secure_bucket.bucket_name
        self.lock_table_name: str = self.lock_table.name

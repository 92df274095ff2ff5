"""Remote Terraform state of an environment on S3: the bucket (in the shared stack) and the backend of the
cluster stacks.

Terraform's S3 backend locks state with a lock object beside the state file (`use_lockfile`, Terraform
1.10+); the DynamoDB lock table it needed before is deprecated since 1.11, so none is created.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdktf import S3Backend, TerraformStack
from constructs import Construct

from modules.aws.account import AwsAccount
from modules.aws.encryption_key import alias_for
from modules.aws.secure_bucket import keyed_bucket

# Old state versions are the undo of a bad apply: keep them a quarter.
NONCURRENT_VERSION_DAYS = 90


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
        # default covers anything else written here (lock objects included).
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
        self.bucket_name: str = self.secure_bucket.bucket_name


def use_s3_state(stack: TerraformStack, *, bucket: str, key: str, region: str) -> S3Backend:
    """Keep `stack`'s state at s3://<bucket>/<key>, encrypted, locked by an S3 lock object."""
    backend = S3Backend(stack, bucket=bucket, key=key, region=region, encrypt=True)
    # cdktf 0.21's S3Backend predates `use_lockfile`; the override writes it into the backend block.
    stack.add_override("terraform.backend.s3.use_lockfile", True)
    return backend

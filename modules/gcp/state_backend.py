"""Remote Terraform state on GCS: the bucket (in the shared stack) and the backend of cluster stacks."""

from __future__ import annotations

from dataclasses import dataclass

from cdktf import GcsBackend, TerraformStack
from constructs import Construct

from modules.gcp.secure_bucket import GcsBucketProps, secure_bucket

STATE_FILE_SUFFIX = ".tfstate"


@dataclass(frozen=True, kw_only=True)
class GcsStateBucketProps(GcsBucketProps):
    access_log_bucket: str
    noncurrent_version_days: int = 90  # older state versions to roll back to after a bad apply
    noncurrent_versions_kept: int = 20  # ... but always keep this many, however old


class GcsStateBucket(Construct):
    """Private, versioned bucket for the environment's (and its previews') Terraform state.

    The GCS backend locks state with a lock object in the bucket itself; nothing else is needed.
    """

    bucket_name: str

    def __init__(self, scope: Construct, construct_id: str, props: GcsStateBucketProps) -> None:
        super().__init__(scope, construct_id)
        self.bucket = secure_bucket(
            self,
            props,
            delete_when=[
                {
                    "days_since_noncurrent_time": props.noncurrent_version_days,
                    "num_newer_versions": props.noncurrent_versions_kept,
                }
            ],
            access_log_bucket=props.access_log_bucket,
        )
        self.bucket_name = props.bucket_name


def gcs_state_prefix(state_key: str) -> str:
    """The GCS backend takes a folder, not an object key: state lands at <prefix>/<workspace>.tfstate
    (default.tfstate), so `prod/prod-gke-usc1.tfstate` becomes the folder `prod/prod-gke-usc1/`."""
    return state_key.removesuffix(STATE_FILE_SUFFIX)


def use_gcs_state(stack: TerraformStack, bucket: str, state_key: str) -> GcsBackend:
    return GcsBackend(stack, bucket=bucket, prefix=gcs_state_prefix(state_key))

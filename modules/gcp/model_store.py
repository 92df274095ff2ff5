"""GCS bucket holding the model repository (Triton layout + manifests) and rollout state."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from modules.gcp.secure_bucket import GcsBucketProps, secure_bucket

# GCS bucket names: 3-63 lowercase letters, digits, '-', '_' and '.', starting and ending with a letter
# or digit, not starting with "goog" and not containing "google".
GCS_BUCKET_NAME_MAX_LENGTH = 63


@dataclass(frozen=True, kw_only=True)
class GcsModelStoreProps(GcsBucketProps):
    prefix: str  # models live under gs://<bucket>/<prefix>/
    access_log_bucket: str
    noncurrent_version_days: int = 30  # how long an overwritten or deleted object can be restored


class GcsModelStore(Construct):
    """Private, versioned bucket: versions make a bad publish or a deleted engine recoverable."""

    bucket_name: str
    url: str

    def __init__(self, scope: Construct, construct_id: str, props: GcsModelStoreProps) -> None:
        super().__init__(scope, construct_id)
        self.bucket = secure_bucket(
            self,
            props,
            delete_when=[{"days_since_noncurrent_time": props.noncurrent_version_days}],
            access_log_bucket=props.access_log_bucket,
        )
        self.bucket_name = props.bucket_name
        self.url = f"gs://{props.bucket_name}/{props.prefix}"

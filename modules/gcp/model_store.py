"""GCS bucket holding the model repository (Triton layout + manifests) and rollout state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

# GCS bucket names: 3-63 lowercase letters, digits, '-', '_' and '.', starting and ending with a letter
# or digit, not starting with "goog" and not containing "google".
GCS_BUCKET_NAME_MAX_LENGTH = 63


@dataclass(frozen=True)
class GcsModelStoreProps:
    bucket_name: str
    project: str
    location: str
    prefix: str  # models live under gs://<bucket>/<prefix>/
    access_log_bucket: str
    labels: Mapping[str, str] = field(default_factory=dict)
    noncurrent_version_days: int = 30  # how long an overwritten or deleted object can be restored


class GcsModelStore(Construct):
    """Private, versioned bucket: versions make a bad publish or a deleted engine recoverable."""

    bucket_name: str
    url: str

    def __init__(self, scope: Construct, construct_id: str, props: GcsModelStoreProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_google.storage_bucket import (
            StorageBucket,
            StorageBucketLifecycleRule,
        )

        self.bucket = StorageBucket(
            self,
            "bucket",
            name=props.bucket_name,
            project=props.project,
            location=props.location,
            uniform_bucket_level_access=True,  # IAM only, no per-object ACLs
            public_access_prevention="enforced",
            versioning={"enabled": True},
            lifecycle_rule=[
                StorageBucketLifecycleRule(
                    action={"type": "Delete"},
                    condition={"days_since_noncurrent_time": props.noncurrent_version_days},
                )
            ],
            logging={"log_bucket": props.access_log_bucket, "log_object_prefix": f"{props.bucket_name}/"},
            labels=dict(props.labels),
        )
        self.bucket_name = props.bucket_name
        self.url = f"gs://{props.bucket_name}/{props.prefix}"

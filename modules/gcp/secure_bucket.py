"""A GCS bucket with the settings every gpufleet bucket shares (the GCS counterpart of
modules/aws/secure_bucket.py).

IAM only (uniform bucket-level access, no per-object ACLs), public access prevention enforced, versioning
on, and optionally usage (access) logs written to another bucket. What differs per bucket is its
lifecycle: which objects or versions are deleted, and when.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from constructs import Construct

if TYPE_CHECKING:
    from cdktf_cdktf_provider_google.storage_bucket import StorageBucket


@dataclass(frozen=True, kw_only=True)
class GcsBucketProps:
    """What every gpufleet bucket is given by its stack (the props of each bucket construct extend it)."""

    bucket_name: str
    project: str
    location: str
    labels: Mapping[str, str] = field(default_factory=dict)


def secure_bucket(
    scope: Construct,
    props: GcsBucketProps,
    *,
    delete_when: Sequence[Mapping[str, int]],
    access_log_bucket: str | None = None,
) -> StorageBucket:
    """The private, versioned bucket `bucket` of `scope`. Each condition of `delete_when` becomes a
    lifecycle rule that deletes what matches it; access logs go to `access_log_bucket` under
    `<bucket_name>/` (none when the bucket is itself the log sink)."""
    from cdktf_cdktf_provider_google.storage_bucket import (
        StorageBucket,
        StorageBucketLifecycleRule,
    )

    return StorageBucket(
        scope,
        "bucket",
        name=props.bucket_name,
        project=props.project,
        location=props.location,
        uniform_bucket_level_access=True,  # IAM only, no per-object ACLs
        public_access_prevention="enforced",
        versioning={"enabled": True},
        lifecycle_rule=[
            StorageBucketLifecycleRule(action={"type": "Delete"}, condition=dict(condition))
            for condition in delete_when
        ],
        logging=(
            {"log_bucket": access_log_bucket, "log_object_prefix": f"{props.bucket_name}/"}
            if access_log_bucket is not None
            else None
        ),
        labels=dict(props.labels),
    )

"""GCS bucket that receives the usage (access) logs of the environment's other buckets."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from modules.checkov import skip_checks
from modules.gcp.secure_bucket import GcsBucketProps, secure_bucket

# Cloud Storage writes usage logs as this Google group; with uniform bucket-level access it needs
# objectCreator on the log bucket through IAM (no ACLs).
STORAGE_ANALYTICS_MEMBER = "group:cloud-storage-analytics@google.com"


@dataclass(frozen=True, kw_only=True)
class GcsAccessLogBucketProps(GcsBucketProps):
    retention_days: int = 365  # a year of who-read-what for the model store and the state


class GcsAccessLogBucket(Construct):
    """Private, versioned log sink; logs expire after retention_days."""

    bucket_name: str

    def __init__(self, scope: Construct, construct_id: str, props: GcsAccessLogBucketProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_google.storage_bucket_iam_member import StorageBucketIamMember

        self.bucket = secure_bucket(
            self,
            props,
            delete_when=[{"age": props.retention_days}, {"days_since_noncurrent_time": 30}],
        )
        # The sink of access logs cannot log its own access anywhere but into itself (CKV_GCP_63) or a
        # further bucket that would need the same; reads of it show in Cloud Audit Logs instead.
        skip_checks(
            self.bucket,
            {"CKV_GCP_62": "access-log sink: logging it would need another sink; Cloud Audit Logs cover it"},
        )
        self.bucket_name = self.bucket.name
        self.log_writer = StorageBucketIamMember(
            self,
            "log-writer",
            bucket=self.bucket.name,
            role="roles/storage.objectCreator",
            member=STORAGE_ANALYTICS_MEMBER,
        )

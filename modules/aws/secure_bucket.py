"""An S3 bucket with the settings every gpufleet bucket shares.

Owner-enforced objects (no ACLs), all public access blocked, TLS-only bucket policy, versioning,
default encryption (SSE-KMS with a bucket key, or SSE-S3 where a service requires it), a lifecycle
that expires old versions and abandoned multipart uploads, optional server access logging, and
object events to EventBridge (free for the default bus; lets tooling react to a published manifest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.s3_bucket import S3Bucket
from cdktf_cdktf_provider_aws.s3_bucket_lifecycle_configuration import (
    S3BucketLifecycleConfiguration,
    S3BucketLifecycleConfigurationRule,
    S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload,
    S3BucketLifecycleConfigurationRuleExpiration,
    S3BucketLifecycleConfigurationRuleFilter,
    S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration,
)
from cdktf_cdktf_provider_aws.s3_bucket_logging import S3BucketLoggingA
from cdktf_cdktf_provider_aws.s3_bucket_notification import S3BucketNotification
from cdktf_cdktf_provider_aws.s3_bucket_ownership_controls import (
    S3BucketOwnershipControls,
    S3BucketOwnershipControlsRule,
)
from cdktf_cdktf_provider_aws.s3_bucket_policy import S3BucketPolicy
from cdktf_cdktf_provider_aws.s3_bucket_public_access_block import S3BucketPublicAccessBlock
from cdktf_cdktf_provider_aws.s3_bucket_server_side_encryption_configuration import (
    S3BucketServerSideEncryptionConfigurationA,
    S3BucketServerSideEncryptionConfigurationRuleA,
    S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA,
)
from cdktf_cdktf_provider_aws.s3_bucket_versioning import (
    S3BucketVersioningA,
    S3BucketVersioningVersioningConfiguration,
)
from constructs import Construct

from modules.aws.account import AwsAccount
from modules.aws.encryption_key import EncryptionKey, EncryptionKeyProps
from modules.checkov import skip_check


@dataclass(frozen=True)
class AccessLogging:
    target_bucket: str
    target_prefix: str


@dataclass(frozen=True)
class SecureBucketProps:
    bucket: str
    tags: dict[str, str]
    # None: SSE-S3 (AES256). Only for buckets a service cannot write with SSE-KMS (S3 access-log targets).
    kms_key_arn: str | None
    noncurrent_version_days: int
    abort_multipart_days: int = 7
    # Expire current objects too (e.g. access logs); None keeps them until deleted.
    expire_days: int | None = None
    access_logging: AccessLogging | None = None
    # Statements added to the bucket policy after the TLS-only deny (e.g. a log-delivery grant).
    extra_policy_statements: Sequence[DataAwsIamPolicyDocumentStatement] = field(default_factory=tuple)


class SecureBucket(Construct):
    def __init__(self, scope: Construct, id_: str, props: SecureBucketProps) -> None:
        super().__init__(scope, id_)
        self.bucket = S3Bucket(self, "bucket", bucket=props.bucket, tags=props.tags)
        bucket_id = self.bucket.id
        self.bucket_name: str = self.bucket.bucket
        self.bucket_arn: str = self.bucket.arn

        S3BucketOwnershipControls(
            self,
            "ownership",
            bucket=bucket_id,
            rule=S3BucketOwnershipControlsRule(object_ownership="BucketOwnerEnforced"),
        )
        public_access_block = S3BucketPublicAccessBlock(
            self,
            "public-access-block",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
        )
        S3BucketVersioningA(
            self,
            "versioning",
            bucket=bucket_id,
            versioning_configuration=S3BucketVersioningVersioningConfiguration(status="Enabled"),
        )
        if props.kms_key_arn:
            by_default = S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA(
                sse_algorithm="aws:kms", kms_master_key_id=props.kms_key_arn
            )
        else:
            by_default = S3BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultA(
                sse_algorithm="AES256"
            )
        S3BucketServerSideEncryptionConfigurationA(
            self,
            "encryption",
            bucket=bucket_id,
            rule=[
                S3BucketServerSideEncryptionConfigurationRuleA(
                    apply_server_side_encryption_by_default=by_default,
                    # One data key per bucket instead of one KMS call per object: cheaper, fewer throttles.
                    bucket_key_enabled=bool(props.kms_key_arn),
                )
            ],
        )
        rule = S3BucketLifecycleConfigurationRule(
            id="expire-old-versions-and-abandoned-uploads",
            status="Enabled",
            filter=[S3BucketLifecycleConfigurationRuleFilter(prefix="")],  # every object
            noncurrent_version_expiration=[
                S3BucketLifecycleConfigurationRuleNoncurrentVersionExpiration(
                    noncurrent_days=props.noncurrent_version_days
                )
            ],
            abort_incomplete_multipart_upload=[
                S3BucketLifecycleConfigurationRuleAbortIncompleteMultipartUpload(
                    days_after_initiation=props.abort_multipart_days
                )
            ],
            expiration=(
                [S3BucketLifecycleConfigurationRuleExpiration(days=props.expire_days)]
                if props.expire_days
                else None
            ),
        )
        S3BucketLifecycleConfiguration(self, "lifecycle", bucket=bucket_id, rule=[rule])

        deny_plain_http = DataAwsIamPolicyDocumentStatement(
            sid="DenyRequestsWithoutTls",
            effect="Deny",
            principals=[DataAwsIamPolicyDocumentStatementPrincipals(type="*", identifiers=["*"])],
            actions=["s3:*"],
            resources=[self.bucket_arn, f"{self.bucket_arn}/*"],
            condition=[
                DataAwsIamPolicyDocumentStatementCondition(
                    test="Bool", variable="aws:SecureTransport", values=["false"]
                )
            ],
        )
        policy = DataAwsIamPolicyDocument(
            self, "policy-document", statement=[deny_plain_http, *props.extra_policy_statements]
        )
        # After the public access block: S3 rejects a policy it would judge public before the block exists.
        S3BucketPolicy(self, "policy", bucket=bucket_id, policy=policy.json, depends_on=[public_access_block])

        if props.access_logging:
            S3BucketLoggingA(
                self,
                "access-logging",
                bucket=bucket_id,
                target_bucket=props.access_logging.target_bucket,
                target_prefix=props.access_logging.target_prefix,
            )
        S3BucketNotification(self, "events", bucket=bucket_id, eventbridge=True)


def keyed_bucket(
    scope: Construct,
    bucket_id: str,
    *,
    bucket: str,
    key_alias: str,
    key_description: str,
    account: AwsAccount,
    tags: dict[str, str],
    noncurrent_version_days: int,
    access_log_bucket: str,
    no_replication_reason: str,
) -> tuple[EncryptionKey, SecureBucket]:
    """A SecureBucket `bucket_id` encrypted with its own KMS key (`key` in `scope`), its access logged to
    `access_log_bucket` under `s3/<bucket>/`: the model store and the Terraform state.

    Neither is replicated to a second region (CKV_AWS_144); `no_replication_reason` says why that is fine.
    """
    key = EncryptionKey(
        scope,
        "key",
        EncryptionKeyProps(alias=key_alias, description=key_description, account=account, tags=tags),
    )
    secure_bucket = SecureBucket(
        scope,
        bucket_id,
        SecureBucketProps(
            bucket=bucket,
            tags=tags,
            kms_key_arn=key.key_arn,
            noncurrent_version_days=noncurrent_version_days,
            access_logging=AccessLogging(access_log_bucket, f"s3/{bucket}/"),
        ),
    )
    skip_check(secure_bucket.bucket, "CKV_AWS_144", no_replication_reason)
    return key, secure_bucket

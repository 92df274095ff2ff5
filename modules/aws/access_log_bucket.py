"""The bucket that receives S3 server access logs of an environment's other buckets."""

from __future__ import annotations

from dataclasses import dataclass

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from constructs import Construct

from modules.aws.account import AwsAccount
from modules.aws.secure_bucket import SecureBucket, SecureBucketProps
from modules.checkov import skip_check


@dataclass(frozen=True)
class AccessLogBucketProps:
    bucket: str
    account: AwsAccount
    tags: dict[str, str]
    retention_days: int = 365


class AccessLogBucket(Construct):
    def __init__(self, scope: Construct, id_: str, props: AccessLogBucketProps) -> None:
        super().__init__(scope, id_)
        bucket_arn = f"arn:{props.account.partition}:s3:::{props.bucket}"
        # Log delivery writes with the S3 logging service principal; only for this account's buckets.
        allow_log_delivery = DataAwsIamPolicyDocumentStatement(
            sid="S3ServerAccessLogDelivery",
            principals=[
                DataAwsIamPolicyDocumentStatementPrincipals(
                    type="Service", identifiers=[props.account.service_principal("logging.s3")]
                )
            ],
            actions=["s3:PutObject"],
            resources=[f"{bucket_arn}/*"],
            condition=[
                DataAwsIamPolicyDocumentStatementCondition(
                    test="StringEquals", variable="aws:SourceAccount", values=[props.account.account_id]
                )
            ],
        )
        self.secure_bucket = SecureBucket(
            self,
            "logs",
            SecureBucketProps(
                bucket=props.bucket,
                tags=props.tags,
                # Server access log delivery supports only SSE-S3 on the target bucket, not SSE-KMS.
                kms_key_arn=None,
                noncurrent_version_days=30,
                expire_days=props.retention_days,
                extra_policy_statements=(allow_log_delivery,),
            ),
        )
        bucket = self.secure_bucket.bucket
        # Suppressions (see modules/checkov.py); each reason is the finding's answer.
        skip_check(
            bucket,
            "CKV_AWS_145",
            "S3 server access log delivery supports only SSE-S3 on the target bucket; "
            "it is encrypted with AES256",
        )
        skip_check(
            bucket,
            "CKV_AWS_144",
            "access logs are audit data kept 365 days in the environment's region; cross-region copies "
            "are a compliance choice the fleet spec does not make",
        )
        self.bucket_name: str = self.secure_bucket.bucket_name

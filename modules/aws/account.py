"""The AWS account and partition a stack deploys into, read once per stack from the provider's credentials."""

from __future__ import annotations

from cdktf_cdktf_provider_aws.data_aws_caller_identity import DataAwsCallerIdentity
from cdktf_cdktf_provider_aws.data_aws_partition import DataAwsPartition
from constructs import Construct

IAM_ROLE_NAME_MAX_LENGTH = 64


class AwsAccount(Construct):
    """Account id and partition (aws, aws-cn, aws-us-gov) for building ARNs and service principals."""

    def __init__(self, scope: Construct, id_: str) -> None:
        super().__init__(scope, id_)
        caller = DataAwsCallerIdentity(self, "caller")
        partition = DataAwsPartition(self, "partition")
        self.account_id: str = caller.account_id
        self.partition: str = partition.partition

    def arn(self, service: str, resource: str, region: str = "") -> str:
        """arn:<partition>:<service>:<region>:<account>:<resource> (region empty for global services)."""
        return f"arn:{self.partition}:{service}:{region}:{self.account_id}:{resource}"

    def root_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:root"

    def managed_policy_arn(self, name: str) -> str:
        return f"arn:{self.partition}:iam::aws:policy/{name}"

    @staticmethod
    def service_principal(service: str, region: str = "") -> str:
        """`<service>.amazonaws.com`, or the regional form `<service>.<region>.amazonaws.com`.

        The commercial and GovCloud partitions use amazonaws.com principals; the China partition (whose
        principals differ per service) is not a gpufleet target.
        """
        return f"{service}.{region}.amazonaws.com" if region else f"{service}.amazonaws.com"

"""A customer-managed KMS key with rotation, an alias, and a key policy that delegates to IAM."""

from __future__ import annotations

from dataclasses import dataclass

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.kms_alias import KmsAlias
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

from modules.aws.account import AwsAccount
from modules.checkov import skip_check

# KMS alias names: `alias/` then letters, digits, '/', '_' and '-' (256 characters in all).
ALIAS_PREFIX = "alias/gpufleet/"
ALIAS_MAX_LENGTH = 256


def alias_for(*parts: str) -> str:
    """`alias/gpufleet/<parts>`, with characters KMS does not accept in aliases (e.g. '.') made '-'."""
    body = "/".join("".join(c if c.isalnum() or c in "_-" else "-" for c in part) for part in parts)
    return f"{ALIAS_PREFIX}{body}"[:ALIAS_MAX_LENGTH]


@dataclass(frozen=True)
class EncryptionKeyProps:
    alias: str  # full alias, from alias_for()
    description: str
    account: AwsAccount
    tags: dict[str, str]
    # Set for keys that encrypt CloudWatch log groups: the Logs service of this region may use the key,
    # only for log groups of this account and region.
    cloudwatch_logs_region: str | None = None
    # Waiting period before a deleted key is gone for good (7-30 days); the maximum leaves time to notice.
    deletion_window_days: int = 30


class EncryptionKey(Construct):
    def __init__(self, scope: Construct, id_: str, props: EncryptionKeyProps) -> None:
        super().__init__(scope, id_)
        account = props.account
        # Root of the account administers the key; IAM policies then grant use (e.g. the Triton role).
        statements = [
            DataAwsIamPolicyDocumentStatement(
                sid="AccountAdministersKeyThroughIam",
                principals=[
                    DataAwsIamPolicyDocumentStatementPrincipals(type="AWS", identifiers=[account.root_arn()])
                ],
                actions=["kms:*"],
                resources=["*"],  # in a key policy, "*" means this key
            )
        ]
        if props.cloudwatch_logs_region:
            region = props.cloudwatch_logs_region
            statements.append(
                DataAwsIamPolicyDocumentStatement(
                    sid="CloudWatchLogsEncryptsLogGroups",
                    principals=[
                        DataAwsIamPolicyDocumentStatementPrincipals(
                            type="Service", identifiers=[account.service_principal("logs", region)]
                        )
                    ],
                    actions=[
                        "kms:Encrypt*",
                        "kms:Decrypt*",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Describe*",
                    ],
                    resources=["*"],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="ArnLike",
                            variable="kms:EncryptionContext:aws:logs:arn",
                            values=[account.arn("logs", "log-group:*", region)],
                        )
                    ],
                )
            )
        policy = DataAwsIamPolicyDocument(self, "policy", statement=statements)
        # Checkov reads every policy document as an IAM identity policy; this one is a key policy, where
        # Resource "*" is this key alone and the root grant hands decisions to IAM (the AWS default policy).
        key_policy_reason = (
            "KMS key policy, not an IAM policy: Resource '*' means this key only, and kms:* for the account "
            "root delegates access decisions to IAM (the AWS default key policy)"
        )
        for check_id in ("CKV_AWS_109", "CKV_AWS_111", "CKV_AWS_356"):
            skip_check(policy, check_id, key_policy_reason)
        self.key = KmsKey(
            self,
            "key",
            description=props.description,
            enable_key_rotation=True,
            deletion_window_in_days=props.deletion_window_days,
            policy=policy.json,
            tags=props.tags,
        )
        KmsAlias(self, "alias", name=props.alias, target_key_id=self.key.key_id)
        self.key_arn: str = self.key.arn
        self.alias: str = props.alias

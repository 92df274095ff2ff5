"""The IAM role Triton's pods assume through IRSA: read-only access to the model repository."""

from __future__ import annotations

from dataclasses import dataclass

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
)
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from constructs import Construct

from modules.aws.account import AwsAccount
from modules.aws.iam import service_account_role

# The serving layer (stacks/serving) creates this service account, annotated with the role ARN output.
TRITON_NAMESPACE = "triton"
TRITON_SERVICE_ACCOUNT = "triton"


@dataclass(frozen=True)
class TritonIdentityProps:
    role_name: str
    oidc_provider_arn: str
    oidc_issuer_host: str  # issuer URL without https://
    store_bucket: str
    store_prefix: str
    store_region: str  # where the store and its KMS key live (the shared stack's region)
    store_key_alias: str  # alias of the store's KMS key (created by the shared stack)
    account: AwsAccount
    tags: dict[str, str]


class TritonIdentity(Construct):
    def __init__(self, scope: Construct, id_: str, props: TritonIdentityProps) -> None:
        super().__init__(scope, id_)
        account = props.account
        self.role = service_account_role(
            self,
            "role",
            name=props.role_name,
            description=(
                f"Triton (service account {TRITON_NAMESPACE}/{TRITON_SERVICE_ACCOUNT}) reads the model "
                f"repository s3://{props.store_bucket}/{props.store_prefix}"
            ),
            oidc_provider_arn=props.oidc_provider_arn,
            oidc_issuer_host=props.oidc_issuer_host,
            namespace=TRITON_NAMESPACE,
            service_account=TRITON_SERVICE_ACCOUNT,
            tags=props.tags,
        )
        bucket_arn = f"arn:{account.partition}:s3:::{props.store_bucket}"
        prefix = props.store_prefix
        read_models = DataAwsIamPolicyDocument(
            self,
            "read-models",
            statement=[
                DataAwsIamPolicyDocumentStatement(
                    sid="ListModelRepository",
                    actions=["s3:ListBucket"],
                    resources=[bucket_arn],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringLike", variable="s3:prefix", values=[prefix, f"{prefix}/*"]
                        )
                    ],
                ),
                DataAwsIamPolicyDocumentStatement(
                    sid="LocateBucket", actions=["s3:GetBucketLocation"], resources=[bucket_arn]
                ),
                DataAwsIamPolicyDocumentStatement(
                    sid="ReadModelFiles", actions=["s3:GetObject"], resources=[f"{bucket_arn}/{prefix}/*"]
                ),
                # The store's key id is unknown here (another stack created it); its alias is not. Decrypt
                # only through S3, only with the key that carries the store's alias.
                DataAwsIamPolicyDocumentStatement(
                    sid="DecryptModelFiles",
                    actions=["kms:Decrypt"],
                    resources=[account.arn("kms", "key/*", props.store_region)],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="ForAnyValue:StringEquals",
                            variable="kms:ResourceAliases",
                            values=[props.store_key_alias],
                        ),
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals",
                            variable="kms:ViaService",
                            values=[f"s3.{props.store_region}.amazonaws.com"],
                        ),
                    ],
                ),
            ],
        )
        IamRolePolicy(
            self, "read-models-policy", role=self.role.id, name="read-model-store", policy=read_models.json
        )
        self.role_arn: str = self.role.arn
        self.namespace = TRITON_NAMESPACE
        self.service_account = TRITON_SERVICE_ACCOUNT

"""IAM helpers shared by the constructs: service roles and their trust policies."""

from __future__ import annotations

from collections.abc import Sequence

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementCondition,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from constructs import Construct

from modules.aws.account import AwsAccount

# The audience EKS service-account tokens carry when they are meant for STS (IRSA).
STS_AUDIENCE = "sts.amazonaws.com"


def service_role(
    scope: Construct,
    id_: str,
    *,
    name: str,
    service: str,
    account: AwsAccount,
    managed_policies: Sequence[str],
    tags: dict[str, str],
    tag_session: bool = False,
) -> tuple[IamRole, list[IamRolePolicyAttachment]]:
    """A role that `<service>.amazonaws.com` assumes, with AWS managed policies attached by name.

    Returns the attachments too: resources that act with the role should depend on them, so that the
    role has its permissions on create and keeps them until those resources are gone on destroy.
    """
    actions = ["sts:AssumeRole", "sts:TagSession"] if tag_session else ["sts:AssumeRole"]
    trust = DataAwsIamPolicyDocument(
        scope,
        f"{id_}-trust",
        statement=[
            DataAwsIamPolicyDocumentStatement(
                actions=actions,
                principals=[
                    DataAwsIamPolicyDocumentStatementPrincipals(
                        type="Service", identifiers=[account.service_principal(service)]
                    )
                ],
            )
        ],
    )
    role = IamRole(scope, id_, name=name, assume_role_policy=trust.json, tags=tags)
    attachments = [
        IamRolePolicyAttachment(
            scope, f"{id_}-{policy}", role=role.name, policy_arn=account.managed_policy_arn(policy)
        )
        for policy in managed_policies
    ]
    return role, attachments


def service_account_role(
    scope: Construct,
    id_: str,
    *,
    name: str,
    description: str,
    oidc_provider_arn: str,
    oidc_issuer_host: str,
    namespace: str,
    service_account: str,
    tags: dict[str, str],
) -> IamRole:
    """A role that exactly one Kubernetes service account of one cluster assumes through IRSA."""
    trust = DataAwsIamPolicyDocument(
        scope,
        f"{id_}-trust",
        statement=[
            DataAwsIamPolicyDocumentStatement(
                actions=["sts:AssumeRoleWithWebIdentity"],
                principals=[
                    DataAwsIamPolicyDocumentStatementPrincipals(
                        type="Federated", identifiers=[oidc_provider_arn]
                    )
                ],
                # Exactly this service account of this cluster, with tokens minted for STS.
                condition=[
                    DataAwsIamPolicyDocumentStatementCondition(
                        test="StringEquals",
                        variable=f"{oidc_issuer_host}:sub",
                        values=[f"system:serviceaccount:{namespace}:{service_account}"],
                    ),
                    DataAwsIamPolicyDocumentStatementCondition(
                        test="StringEquals", variable=f"{oidc_issuer_host}:aud", values=[STS_AUDIENCE]
                    ),
                ],
            )
        ],
    )
    return IamRole(scope, id_, name=name, description=description, assume_role_policy=trust.json, tags=tags)

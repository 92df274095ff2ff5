"""IAM helpers shared by the constructs: service roles and their trust policies."""

from __future__ import annotations

from collections.abc import Sequence

from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
    DataAwsIamPolicyDocumentStatementPrincipals,
)
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from constructs import Construct

from modules.aws.account import AwsAccount


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

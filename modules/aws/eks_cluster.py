"""An EKS control plane: private API endpoint, encrypted secrets, full audit logging, OIDC for IRSA."""

from __future__ import annotations

from dataclasses import dataclass, field

from cdktf import Fn, TerraformStack
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.data_aws_cloudwatch_log_groups import DataAwsCloudwatchLogGroups
from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocument,
    DataAwsIamPolicyDocumentStatement,
)
from cdktf_cdktf_provider_aws.eks_cluster import (
    EksCluster as EksControlPlane,
)
from cdktf_cdktf_provider_aws.eks_cluster import (
    EksClusterAccessConfig,
    EksClusterEncryptionConfig,
    EksClusterEncryptionConfigProvider,
    EksClusterVpcConfig,
)
from cdktf_cdktf_provider_aws.iam_openid_connect_provider import IamOpenidConnectProvider
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from constructs import Construct

from modules.aws.account import AwsAccount
from modules.aws.encryption_key import EncryptionKey, EncryptionKeyProps, alias_for
from modules.aws.iam import STS_AUDIENCE, service_role
from modules.checkov import skip_check

# Every control-plane log type: the audit log is the record of who did what to the cluster.
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
CONTROL_PLANE_LOG_RETENTION_DAYS = 365
# SHA-1 of the root CA that signs the EKS OIDC issuers' TLS certificates (Starfield Services Root CA - G2,
# the widely published value for EKS IRSA). The `tls` provider that could read it at apply time is not part
# of this toolkit; IAM now validates EKS issuers against its own trusted CA store and ignores this value for
# them, but a thumbprint keeps the resource valid for API versions that still require one.
EKS_OIDC_ROOT_CA_THUMBPRINT = "9e99a48a9960b14926bb7f3b02e22da2b0ab7280"


def control_plane_log_group_name(cluster_name: str) -> str:
    """The log group EKS writes control-plane logs to; the name is fixed by EKS."""
    return f"/aws/eks/{cluster_name}/cluster"


def adopt_existing_log_group(
    scope: Construct, log_group: CloudwatchLogGroup, name: str
) -> DataAwsCloudwatchLogGroups:
    """Import the log group into the stack if it already exists, else let Terraform create it.

    EKS keeps writing control-plane logs while a cluster is being deleted and recreates the group with its
    own settings (no retention, no key) once Terraform has deleted it (terraform-aws-eks #920, #2486; the
    Deny on logs:CreateLogGroup tried there did not stop the EKS service role). A later deploy of the same
    cluster name (`preview up` after `preview down`) then fails with "already exists". A data source lists
    the group if present, and a conditional import block (Terraform 1.7+) adopts it, so Terraform applies
    this stack's retention and key to it instead of failing.
    """
    existing = DataAwsCloudwatchLogGroups(scope, "existing-control-plane-logs", log_group_name_prefix=name)
    existing_names = f"data.{existing.terraform_resource_type}.{existing.friendly_unique_id}.log_group_names"
    # One import block, written as a JSON object (HCL JSON allows an object or a list for a label-less
    # block; checkov's terraform_json parser takes only the object form).
    TerraformStack.of(log_group).add_override(
        "import",
        {
            # The prefix also matches longer names: adopt only the group with exactly this name.
            "for_each": f'${{toset([for found in {existing_names} : found if found == "{name}"])}}',
            "to": f"{log_group.terraform_resource_type}.{log_group.friendly_unique_id}",
            "id": "${each.value}",
        },
    )
    return existing


@dataclass(frozen=True)
class EksClusterProps:
    name: str  # the EKS cluster name (100 characters, letters, digits, '-' and '_')
    role_name: str  # IAM role of the control plane (64 characters)
    kubernetes_version: str
    subnet_ids: list[str]  # private subnets, in at least two zones
    account: AwsAccount
    log_key_arn: str  # KMS key for the control-plane log group (its policy must allow CloudWatch Logs)
    tags: dict[str, str]
    # The API is always reachable from inside the VPC; from the internet only when the spec asks, and then
    # only from the listed networks (the spec refuses public access without CIDRs).
    endpoint_public_access: bool = False
    public_access_cidrs: list[str] = field(default_factory=list)
    log_retention_days: int = CONTROL_PLANE_LOG_RETENTION_DAYS


class EksCluster(Construct):
    def __init__(self, scope: Construct, id_: str, props: EksClusterProps) -> None:
        super().__init__(scope, id_)
        account = props.account
        self.secrets_key = EncryptionKey(
            self,
            "secrets-key",
            EncryptionKeyProps(
                alias=alias_for("eks-secrets", props.name),
                description=f"EKS secrets envelope encryption for {props.name}",
                account=account,
                tags=props.tags,
            ),
        )
        role, attachments = service_role(
            self,
            "role",
            name=props.role_name,
            service="eks",
            account=account,
            managed_policies=["AmazonEKSClusterPolicy"],
            tags=props.tags,
            tag_session=True,  # EKS tags its sessions; the current cluster-role trust policy allows it
        )
        # The control plane wraps Kubernetes secrets' data keys with the secrets key.
        use_secrets_key = DataAwsIamPolicyDocument(
            self,
            "secrets-key-use",
            statement=[
                DataAwsIamPolicyDocumentStatement(
                    actions=["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"],
                    resources=[self.secrets_key.key_arn],
                )
            ],
        )
        key_policy = IamRolePolicy(
            self, "role-secrets-key", role=role.id, name="secrets-encryption", policy=use_secrets_key.json
        )
        # Created before the cluster (the cluster depends on it), so EKS writes into this encrypted, retained
        # group instead of creating an unencrypted one that never expires; and destroyed after the cluster,
        # so the cluster's last logs still land in it. A group EKS recreated after an earlier destroy is
        # adopted instead of failing the deploy (adopt_existing_log_group).
        log_group_name = control_plane_log_group_name(props.name)
        log_group = CloudwatchLogGroup(
            self,
            "control-plane-logs",
            name=log_group_name,
            retention_in_days=props.log_retention_days,
            kms_key_id=props.log_key_arn,
            tags=props.tags,
        )
        adopt_existing_log_group(self, log_group, log_group_name)
        self.cluster = EksControlPlane(
            self,
            "cluster",
            name=props.name,
            version=props.kubernetes_version,
            role_arn=role.arn,
            vpc_config=EksClusterVpcConfig(
                subnet_ids=props.subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=props.endpoint_public_access,
                public_access_cidrs=props.public_access_cidrs if props.endpoint_public_access else None,
            ),
            # Access entries (not the aws-auth ConfigMap); whoever deploys the stack administers the cluster,
            # so the configure step (Ansible, Pulumi) can reach it.
            access_config=EksClusterAccessConfig(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True
            ),
            encryption_config=EksClusterEncryptionConfig(
                resources=["secrets"],
                provider=EksClusterEncryptionConfigProvider(key_arn=self.secrets_key.key_arn),
            ),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            tags=props.tags,
            depends_on=[*attachments, key_policy, log_group],
        )
        if props.endpoint_public_access:
            skip_check(
                self.cluster,
                "CKV_AWS_39",
                "fleet.yaml sets endpoint_public_access with an explicit public_access_cidrs allow-list "
                "(the spec refuses one without the other); CKV_AWS_38 still fails an open 0.0.0.0/0",
            )

        issuer_url = self.cluster.identity.get(0).oidc.get(0).issuer
        self.oidc_provider = IamOpenidConnectProvider(
            self,
            "oidc-provider",
            url=issuer_url,
            client_id_list=[STS_AUDIENCE],
            thumbprint_list=[EKS_OIDC_ROOT_CA_THUMBPRINT],
            tags=props.tags,
        )
        self.name: str = self.cluster.name
        self.version: str = self.cluster.version
        self.endpoint: str = self.cluster.endpoint
        self.certificate_authority_data: str = self.cluster.certificate_authority.get(0).data
        self.oidc_provider_arn: str = self.oidc_provider.arn
        # Issuer without the scheme: prefix of the IRSA trust policy condition keys (`<host>/id/X:sub`).
        self.oidc_issuer_host: str = Fn.replace(issuer_url, "https://", "")

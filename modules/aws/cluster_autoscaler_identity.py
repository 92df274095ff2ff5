"""The IAM role cluster-autoscaler assumes through IRSA: scale this cluster's node groups, nothing else.

GPU pools may start at zero nodes; on EKS only cluster-autoscaler adds the first one (GKE and AKS scale
node pools themselves). Managed node groups tag their Auto Scaling groups for its auto-discovery
(`k8s.io/cluster-autoscaler/enabled`, `k8s.io/cluster-autoscaler/<cluster>`), and with
eks:DescribeNodegroup it reads a group's labels and taints, so it can scale a GPU group up from zero.
The in-cluster layer installs the chart with this service account and the role ARN output.
"""

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

CLUSTER_AUTOSCALER_NAMESPACE = "kube-system"
CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"


@dataclass(frozen=True)
class ClusterAutoscalerIdentityProps:
    role_name: str
    cluster_name: str
    region: str
    oidc_provider_arn: str
    oidc_issuer_host: str  # issuer URL without https://
    account: AwsAccount
    tags: dict[str, str]


class ClusterAutoscalerIdentity(Construct):
    def __init__(self, scope: Construct, id_: str, props: ClusterAutoscalerIdentityProps) -> None:
        super().__init__(scope, id_)
        self.role = service_account_role(
            self,
            "role",
            name=props.role_name,
            description=f"cluster-autoscaler scales the node groups of EKS cluster {props.cluster_name}",
            oidc_provider_arn=props.oidc_provider_arn,
            oidc_issuer_host=props.oidc_issuer_host,
            namespace=CLUSTER_AUTOSCALER_NAMESPACE,
            service_account=CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
            tags=props.tags,
        )
        tag = f"aws:ResourceTag/k8s.io/cluster-autoscaler/{props.cluster_name}"
        policy = DataAwsIamPolicyDocument(
            self,
            "scale-node-groups",
            statement=[
                # Describe calls take no resource ARN (IAM requires "*" for them).
                DataAwsIamPolicyDocumentStatement(
                    sid="DiscoverNodeGroups",
                    actions=[
                        "autoscaling:DescribeAutoScalingGroups",
                        "autoscaling:DescribeAutoScalingInstances",
                        "autoscaling:DescribeLaunchConfigurations",
                        "autoscaling:DescribeScalingActivities",
                        "autoscaling:DescribeTags",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplateVersions",
                        "ec2:GetInstanceTypesFromInstanceRequirements",
                    ],
                    resources=["*"],
                ),
                DataAwsIamPolicyDocumentStatement(
                    sid="ReadNodeGroupLabelsAndTaints",
                    actions=["eks:DescribeNodegroup"],
                    resources=[props.account.arn("eks", f"nodegroup/{props.cluster_name}/*/*", props.region)],
                ),
                # Only Auto Scaling groups that EKS tagged as this cluster's node groups.
                DataAwsIamPolicyDocumentStatement(
                    sid="ScaleThisClustersNodeGroups",
                    actions=[
                        "autoscaling:SetDesiredCapacity",
                        "autoscaling:TerminateInstanceInAutoScalingGroup",
                    ],
                    resources=["*"],
                    condition=[
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals", variable=tag, values=["owned"]
                        ),
                        DataAwsIamPolicyDocumentStatementCondition(
                            test="StringEquals",
                            variable="aws:ResourceTag/k8s.io/cluster-autoscaler/enabled",
                            values=["true"],
                        ),
                    ],
                ),
            ],
        )
        IamRolePolicy(
            self, "scale-node-groups-policy", role=self.role.id, name="scale-node-groups", policy=policy.json
        )
        self.role_arn: str = self.role.arn
        self.namespace = CLUSTER_AUTOSCALER_NAMESPACE
        self.service_account = CLUSTER_AUTOSCALER_SERVICE_ACCOUNT

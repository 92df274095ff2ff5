"""EKS managed node groups on a hardened launch template, and the IAM role their nodes run as."""

from __future__ import annotations

from dataclasses import dataclass, field

from cdktf import TerraformResourceLifecycle
from cdktf_cdktf_provider_aws.eks_node_group import (
    EksNodeGroup,
    EksNodeGroupLaunchTemplate,
    EksNodeGroupScalingConfig,
    EksNodeGroupTaint,
    EksNodeGroupUpdateConfig,
)
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.launch_template import (
    LaunchTemplate,
    LaunchTemplateBlockDeviceMappings,
    LaunchTemplateBlockDeviceMappingsEbs,
    LaunchTemplateMetadataOptions,
    LaunchTemplateTagSpecifications,
)
from constructs import Construct

from gpufleet.node_contract import Taint
from modules.aws.account import AwsAccount
from modules.aws.iam import service_role

# What every EKS node needs: join the cluster, run the VPC CNI, pull images from ECR.
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
)
ROOT_DEVICE = "/dev/xvda"  # root volume of the Amazon Linux EKS AMIs
NODE_GROUP_NAME_MAX_LENGTH = 63
LAUNCH_TEMPLATE_NAME_MAX_LENGTH = 128


@dataclass(frozen=True)
class NodeIamRoleProps:
    name: str
    account: AwsAccount
    tags: dict[str, str]


class NodeIamRole(Construct):
    """The instance role of a cluster's nodes. Pods get their own roles through IRSA, never this one."""

    def __init__(self, scope: Construct, id_: str, props: NodeIamRoleProps) -> None:
        super().__init__(scope, id_)
        self.role, attachments = service_role(
            self,
            "role",
            name=props.name,
            service="ec2",
            account=props.account,
            managed_policies=NODE_MANAGED_POLICIES,
            tags=props.tags,
        )
        self.arn: str = self.role.arn
        # Node groups depend on these: nodes join only with the policies attached, and keep them to the end.
        self.policy_attachments: list[IamRolePolicyAttachment] = attachments


@dataclass(frozen=True)
class ManagedNodeGroupProps:
    cluster_name: str
    kubernetes_version: str
    node_group_name: str
    launch_template_name: str
    node_role: NodeIamRole
    subnet_ids: list[str]
    ami_type: str
    instance_types: list[str]
    spot: bool
    min_size: int
    max_size: int
    disk_gb: int
    tags: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Taint] = field(default_factory=list)


class ManagedNodeGroup(Construct):
    def __init__(self, scope: Construct, id_: str, props: ManagedNodeGroupProps) -> None:
        super().__init__(scope, id_)
        # EKS ignores node-group tags on instances and volumes; the launch template carries them there.
        instance_tags = [
            LaunchTemplateTagSpecifications(resource_type=kind, tags=props.tags)
            for kind in ("instance", "volume", "network-interface")
        ]
        self.launch_template = LaunchTemplate(
            self,
            "launch-template",
            name=props.launch_template_name,
            description=f"EKS nodes of {props.cluster_name} / {props.node_group_name}",
            block_device_mappings=[
                LaunchTemplateBlockDeviceMappings(
                    device_name=ROOT_DEVICE,
                    ebs=LaunchTemplateBlockDeviceMappingsEbs(
                        volume_size=props.disk_gb,
                        volume_type="gp3",
                        # Account's EBS key (aws/ebs): a customer key would need a grant for the Auto
                        # Scaling service-linked role on every key before any node could start.
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            # IMDSv2 only, one hop: pods cannot reach the node's credentials (they use IRSA); host-network
            # agents such as the VPC CNI still can.
            metadata_options=LaunchTemplateMetadataOptions(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            tag_specifications=instance_tags,
            update_default_version=True,
            tags=props.tags,
        )
        # Start at the minimum; from then on the autoscaler sets the size (see ignore_changes below).
        desired_size = props.min_size
        self.node_group = EksNodeGroup(
            self,
            "node-group",
            cluster_name=props.cluster_name,
            node_group_name=props.node_group_name,
            version=props.kubernetes_version,  # nodes follow the control plane on upgrades
            node_role_arn=props.node_role.arn,
            subnet_ids=props.subnet_ids,
            ami_type=props.ami_type,
            instance_types=props.instance_types,
            capacity_type="SPOT" if props.spot else "ON_DEMAND",
            scaling_config=EksNodeGroupScalingConfig(
                min_size=props.min_size, max_size=props.max_size, desired_size=desired_size
            ),
            update_config=EksNodeGroupUpdateConfig(max_unavailable=1),
            launch_template=EksNodeGroupLaunchTemplate(
                id=self.launch_template.id, version=f"{self.launch_template.latest_version}"
            ),
            labels=props.labels or None,
            taint=[EksNodeGroupTaint(key=t.key, value=t.value, effect=t.api_effect) for t in props.taints]
            or None,
            tags=props.tags,
            depends_on=list(props.node_role.policy_attachments),
            # The size changes at run time (an autoscaler, an operator); a deploy must not reset it.
            lifecycle=TerraformResourceLifecycle(ignore_changes=["scaling_config[0].desired_size"]),
        )
        self.name: str = self.node_group.node_group_name
        self.arn: str = self.node_group.arn

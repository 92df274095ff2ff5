"""The untainted node group for cluster services: CoreDNS, the GPU operator's controllers, monitoring.

GPU nodes carry a NoSchedule taint, so without this group nothing that does not tolerate it (CoreDNS
first of all) would have anywhere to run. It carries the node contract's `system` role label.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from gpufleet.node_contract import system_node_labels
from modules.aws.node_group import ManagedNodeGroup, ManagedNodeGroupProps, NodeIamRole

SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
SYSTEM_DISK_GB = 50


@dataclass(frozen=True)
class SystemNodeGroupProps:
    cluster_name: str
    kubernetes_version: str
    # From the environment profile (stacks/profile.py).
    min_size: int
    max_size: int
    spot: bool
    instance_types: tuple[str, ...]
    node_group_name: str
    launch_template_name: str
    node_role: NodeIamRole
    subnet_ids: list[str]
    tags: dict[str, str]


class SystemNodeGroup(Construct):
    def __init__(self, scope: Construct, id_: str, props: SystemNodeGroupProps) -> None:
        super().__init__(scope, id_)
        self.managed = ManagedNodeGroup(
            self,
            "nodes",
            ManagedNodeGroupProps(
                cluster_name=props.cluster_name,
                kubernetes_version=props.kubernetes_version,
                node_group_name=props.node_group_name,
                launch_template_name=props.launch_template_name,
                node_role=props.node_role,
                subnet_ids=props.subnet_ids,
                ami_type=SYSTEM_AMI_TYPE,
                instance_types=list(props.instance_types),
                spot=props.spot,
                min_size=props.min_size,
                max_size=props.max_size,
                disk_gb=SYSTEM_DISK_GB,
                labels=system_node_labels(props.node_group_name),
                tags=props.tags,
            ),
        )
        self.name: str = self.managed.name

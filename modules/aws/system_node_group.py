"""The untainted node group for cluster services: CoreDNS, the GPU operator's controllers, monitoring.

GPU nodes carry a NoSchedule taint, so without this group nothing that does not tolerate it (CoreDNS
first of all) would have anywhere to run.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from modules.aws.node_group import ManagedNodeGroup, ManagedNodeGroupProps, NodeIamRole

SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
# Same size (2 vCPU, 8 GiB) in three families: spot previews get capacity from whichever has it.
SYSTEM_INSTANCE_TYPES = ("m6i.large", "m6a.large", "m5.large")
SYSTEM_DISK_GB = 50
LABEL_ROLE = "gpufleet.io/node-role"


@dataclass(frozen=True)
class SystemNodeGroupSize:
    min_size: int
    max_size: int
    spot: bool


# Two nodes in different zones keep CoreDNS and the monitoring stack up through a zone or node loss.
PRODUCTION_SIZE = SystemNodeGroupSize(min_size=2, max_size=4, spot=False)
PREVIEW_SIZE = SystemNodeGroupSize(min_size=1, max_size=2, spot=True)


@dataclass(frozen=True)
class SystemNodeGroupProps:
    cluster_name: str
    kubernetes_version: str
    size: SystemNodeGroupSize
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
                instance_types=list(SYSTEM_INSTANCE_TYPES),
                spot=props.size.spot,
                min_size=props.size.min_size,
                max_size=props.size.max_size,
                disk_gb=SYSTEM_DISK_GB,
                labels={LABEL_ROLE: "system"},
                tags=props.tags,
            ),
        )
        self.name: str = self.managed.name

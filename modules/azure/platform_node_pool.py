"""The untainted CPU node pool for cluster services: the GPU operator's controllers, monitoring, routing.

The system pool only takes AKS's critical add-ons (CriticalAddonsOnly taint) and GPU nodes carry the
nvidia.com/gpu taint, so without this pool nothing that tolerates neither (Prometheus, the GPU operator,
the gateway) could be scheduled. It plays the role of the untainted system node group on EKS and GKE, so
the in-cluster layer needs no Azure-specific tolerations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct


@dataclass(frozen=True)
class PlatformNodePoolProps:
    cluster_id: str
    subnet_id: str
    # From the environment profile (stacks/profile.py). General purpose with a local temp disk, so the
    # OS disk can be ephemeral (as on the system pool).
    vm_size: str
    min_nodes: int
    max_nodes: int
    name: str = "platform"  # 1-12 lowercase letters and digits
    os_disk_size_gb: int = 64
    max_pods: int = 110
    node_labels: Mapping[str, str] = field(default_factory=dict)  # the node contract's system labels
    tags: Mapping[str, str] = field(default_factory=dict)


class PlatformNodePool(Construct):
    name: str

    def __init__(self, scope: Construct, construct_id: str, props: PlatformNodePoolProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.kubernetes_cluster_node_pool import (
            KubernetesClusterNodePool,
            KubernetesClusterNodePoolUpgradeSettings,
        )

        self.node_pool = KubernetesClusterNodePool(
            self,
            "pool",
            name=props.name,
            kubernetes_cluster_id=props.cluster_id,
            mode="User",
            vm_size=props.vm_size,
            vnet_subnet_id=props.subnet_id,
            auto_scaling_enabled=True,
            min_count=props.min_nodes,
            max_count=props.max_nodes,
            max_pods=props.max_pods,
            node_labels=dict(props.node_labels),
            os_type="Linux",
            os_sku="AzureLinux",
            os_disk_type="Ephemeral",
            os_disk_size_gb=props.os_disk_size_gb,
            host_encryption_enabled=True,
            node_public_ip_enabled=False,
            upgrade_settings=KubernetesClusterNodePoolUpgradeSettings(max_surge="33%"),
            tags=dict(props.tags),
        )
        self.name = props.name

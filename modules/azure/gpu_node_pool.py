"""A GPU node pool of an AKS cluster: one VM size from the catalog, the node contract's GPU taint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

from gpufleet.node_contract import GPU_TAINT

# AKS puts this label and taint on every spot node itself; the provider documents that a spot pool must
# declare them too (otherwise every plan shows them as drift). GPU pods on spot pools tolerate both taints.
SPOT_LABEL_KEY = "kubernetes.azure.com/scalesetpriority"
SPOT_LABEL_VALUE = "spot"
SPOT_TAINT = f"{SPOT_LABEL_KEY}={SPOT_LABEL_VALUE}:NoSchedule"


@dataclass(frozen=True)
class GpuNodePoolProps:
    name: str  # the spec's pool name: 1-12 lowercase letters and digits, starting with a letter
    cluster_id: str
    subnet_id: str
    vm_size: str  # e.g. Standard_NC4as_T4_v3
    min_nodes: int
    max_nodes: int
    spot: bool
    os_disk_size_gb: int
    node_labels: Mapping[str, str] = field(default_factory=dict)  # the node contract's GPU labels
    max_pods: int = 110
    tags: Mapping[str, str] = field(default_factory=dict)


class GpuNodePool(Construct):
    """Autoscaled (min..max from the spec), optionally spot, NVIDIA driver installed by AKS.

    AKS installs the NVIDIA driver on GPU VM sizes (gpu_driver = "Install"); the GPU operator is then
    deployed with driver.enabled=false, as on EKS and GKE.
    """

    name: str

    def __init__(self, scope: Construct, construct_id: str, props: GpuNodePoolProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.kubernetes_cluster_node_pool import (
            KubernetesClusterNodePool,
            KubernetesClusterNodePoolUpgradeSettings,
        )

        labels = dict(props.node_labels)
        # Only pods that tolerate the GPU taint (Triton, the GPU operator's daemon sets) land here.
        taints = [GPU_TAINT.kubectl_form()]
        upgrade_settings: KubernetesClusterNodePoolUpgradeSettings | None = None
        if props.spot:
            labels[SPOT_LABEL_KEY] = SPOT_LABEL_VALUE
            taints.append(SPOT_TAINT)
        else:
            # One extra node during upgrades; AKS rejects surge settings on spot pools.
            upgrade_settings = KubernetesClusterNodePoolUpgradeSettings(max_surge="1")

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
            node_labels=labels,
            node_taints=taints,
            gpu_driver="Install",
            os_type="Linux",
            os_sku="Ubuntu",
            # Managed OS disk of the size fleet.yaml asks for: GPU images (CUDA, TensorRT, Triton) and
            # engines need room, more than some VM sizes' local disk would give an ephemeral OS disk.
            os_disk_type="Managed",
            os_disk_size_gb=props.os_disk_size_gb,
            # Temp disk, caches and disk traffic encrypted on the host (subscription feature
            # Microsoft.Compute/EncryptionAtHost must be registered).
            host_encryption_enabled=True,
            node_public_ip_enabled=False,
            priority="Spot" if props.spot else "Regular",
            # Evicted nodes are deleted (a deallocated GPU VM would keep holding quota), and the price cap
            # is the on-demand price (-1): nodes are evicted for capacity only, never for price.
            eviction_policy="Delete" if props.spot else None,
            spot_max_price=-1 if props.spot else None,
            upgrade_settings=upgrade_settings,
            tags=dict(props.tags),
        )
        self.name = props.name

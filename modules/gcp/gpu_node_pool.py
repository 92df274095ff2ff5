"""GKE node pool of GPU machines: accelerators with GKE-installed drivers, the node contract's GPU taint,
pinned to the zones that offer the accelerator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cdktf import ITerraformDependable
from constructs import Construct

from gpufleet.node_contract import GPU_TAINT
from modules.gcp.node_hardening import hardened_node_settings


@dataclass(frozen=True)
class GpuNodePoolProps:
    name: str  # GKE: 1-40 lowercase letters, digits and '-' (fleet.yaml pool names always fit)
    project: str
    location: str  # the cluster's region
    # Zones of the region that offer the accelerator (catalog, or fleet.yaml `zones`): a pool spread over
    # every zone of the region would fail to create nodes in the zones without this GPU.
    node_locations: tuple[str, ...]
    cluster_id: str
    machine_type: str
    accelerator_type: str  # GKE accelerator type, e.g. nvidia-l4 (catalog `accelerator`)
    accelerator_count: int  # GPUs per machine (catalog `gpus`)
    min_nodes: int  # whole pool, not per zone
    max_nodes: int
    spot: bool
    disk_gb: int
    service_account_email: str
    labels: Mapping[str, str] = field(default_factory=dict)  # GCE labels on the VMs
    node_labels: Mapping[str, str] = field(default_factory=dict)  # Kubernetes labels: the node contract
    # LATEST: the newest driver GKE offers for the node version. Triton images are built against recent
    # CUDA releases and need a recent driver; DEFAULT can lag a major version behind. The GKE version
    # (release channel) still bounds what LATEST means, so upgrades stay tested combinations.
    gpu_driver_version: str = "LATEST"
    depends_on: tuple[ITerraformDependable, ...] = ()


class GpuNodePool(Construct):
    """Autoscaled GPU pool: scales between min and max nodes across its zones."""

    name: str

    def __init__(self, scope: Construct, construct_id: str, props: GpuNodePoolProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_google.container_node_pool import (
            ContainerNodePool,
            ContainerNodePoolNodeConfigGuestAccelerator,
            ContainerNodePoolNodeConfigTaint,
        )

        self.node_pool = ContainerNodePool(
            self,
            "pool",
            name=props.name,
            project=props.project,
            location=props.location,
            node_locations=list(props.node_locations),
            cluster=props.cluster_id,
            depends_on=list(props.depends_on) or None,
            autoscaling={
                # total_*: the spec's min/max are for the whole pool; per-zone limits would multiply them
                # by the number of zones.
                "total_min_node_count": props.min_nodes,
                "total_max_node_count": props.max_nodes,
                # ANY: take capacity in whichever zone has it (GPUs and spot are often short in one zone).
                "location_policy": "ANY",
            },
            management={"auto_repair": True, "auto_upgrade": True},
            # Surge one node at a time and never take a serving node down before its replacement is up.
            upgrade_settings={"max_surge": 1, "max_unavailable": 0, "strategy": "SURGE"},
            node_config={
                **hardened_node_settings(props.service_account_email),
                "machine_type": props.machine_type,
                "disk_size_gb": props.disk_gb,
                "disk_type": "pd-balanced",
                "spot": props.spot,
                "guest_accelerator": [
                    ContainerNodePoolNodeConfigGuestAccelerator(
                        type=props.accelerator_type,
                        count=props.accelerator_count,
                        # GKE installs the driver itself, so the GPU operator runs with driver.enabled=false.
                        gpu_driver_installation_config={"gpu_driver_version": props.gpu_driver_version},
                    )
                ],
                # Only pods that tolerate the GPU taint (Triton, the GPU operator's daemon sets) land here.
                "taint": [
                    ContainerNodePoolNodeConfigTaint(
                        key=GPU_TAINT.key, value=GPU_TAINT.value, effect=GPU_TAINT.api_effect
                    )
                ],
                "labels": dict(props.node_labels),
                "resource_labels": dict(props.labels),
            },
        )
        self.name = self.node_pool.name

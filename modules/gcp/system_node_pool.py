"""Small CPU node pool for cluster services that must not land on (tainted, costly) GPU nodes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

from modules.gcp.node_hardening import hardened_node_settings


@dataclass(frozen=True)
class SystemNodePoolProps:
    name: str
    project: str
    location: str
    cluster_id: str
    service_account_email: str
    # From the environment profile (stacks/profile.py); whole pool: kube-dns, GPU operator, Prometheus
    # and the router need a home.
    machine_type: str
    min_nodes: int
    max_nodes: int
    spot: bool
    disk_gb: int = 100
    labels: Mapping[str, str] = field(default_factory=dict)  # GCE labels on the VMs
    node_labels: Mapping[str, str] = field(default_factory=dict)  # Kubernetes labels: the node contract


class SystemNodePool(Construct):
    """CPU pool without taints. With only the GPU pool (tainted NoSchedule), kube-dns, metrics-server,
    the GPU operator's controllers and the monitoring stack would have nowhere to run."""

    name: str

    def __init__(self, scope: Construct, construct_id: str, props: SystemNodePoolProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_google.container_node_pool import ContainerNodePool

        self.node_pool = ContainerNodePool(
            self,
            "pool",
            name=props.name,
            project=props.project,
            location=props.location,
            cluster=props.cluster_id,
            # Per zone: a node in each zone at creation, so cluster services start without waiting for the
            # autoscaler; it then trims the pool towards min_nodes.
            initial_node_count=1,
            autoscaling={
                "total_min_node_count": props.min_nodes,
                "total_max_node_count": props.max_nodes,
                "location_policy": "BALANCED",  # spread system services over zones
            },
            management={"auto_repair": True, "auto_upgrade": True},
            upgrade_settings={"max_surge": 1, "max_unavailable": 0, "strategy": "SURGE"},
            node_config={
                **hardened_node_settings(props.service_account_email),
                "machine_type": props.machine_type,
                "disk_size_gb": props.disk_gb,
                "disk_type": "pd-balanced",
                "spot": props.spot,
                "labels": dict(props.node_labels),
                "resource_labels": dict(props.labels),
            },
        )
        self.name = self.node_pool.name

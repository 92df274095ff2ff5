"""Private, regional GKE Standard cluster with Workload Identity; node pools are separate constructs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct

from modules.checkov import skip_checks
from modules.gcp.node_hardening import hardened_node_settings

# GKE cluster names: 1-40 lowercase letters, digits and '-', starting with a letter.
GKE_CLUSTER_NAME_MAX_LENGTH = 40


@dataclass(frozen=True)
class AuthorizedNetwork:
    display_name: str
    cidr_block: str


@dataclass(frozen=True)
class GkeClusterProps:
    name: str
    project: str
    region: str  # regional cluster: the control plane is replicated across the region's zones
    kubernetes_version: str  # minimum control plane version; the release channel upgrades from there
    network_id: str
    subnetwork_id: str
    pods_range_name: str
    services_range_name: str
    # Networks that may reach the Kubernetes API: the VPC's own node range, plus public_access_cidrs
    # when fleet.yaml sets endpoint_public_access (see GkeCluster).
    authorized_networks: tuple[AuthorizedNetwork, ...]
    # The temporary default pool runs as this account too (see GkeCluster), never as the Compute default.
    node_service_account_email: str
    labels: Mapping[str, str] = field(default_factory=dict)
    deletion_protection: bool = True
    # /28 for the Google-managed control plane VPC; must not overlap the network's ranges.
    master_cidr: str = "172.16.0.0/28"
    release_channel: str = "REGULAR"
    # Google Groups for RBAC: gke-security-groups@<your domain>, needs a Workspace/Cloud Identity domain.
    # fleet.yaml has no such field yet, so None: access is then granted to individual IAM principals.
    rbac_security_group: str | None = None


class GkeCluster(Construct):
    """The cluster: private nodes, dataplane V2, shielded nodes, Workload Identity, release channel.

    API access: the private endpoint is off, so the control plane keeps its public IP, but master
    authorized networks allow only props.authorized_networks and no Google Cloud public ranges. With
    the VPC node range alone the API answers clients inside the VPC (or connected to it: VPN,
    Interconnect, a bastion) and nobody on the internet. Keeping the public endpoint (instead of
    enable_private_endpoint) means opening it to an operator network later is an in-place
    authorized-networks change (fleet.yaml endpoint_public_access + public_access_cidrs), not a rebuild.
    """

    name: str
    endpoint: str
    ca_certificate: str
    workload_pool: str

    def __init__(self, scope: Construct, construct_id: str, props: GkeClusterProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf import TerraformResourceLifecycle
        from cdktf_cdktf_provider_google.container_cluster import (
            ContainerCluster,
            ContainerClusterMasterAuthorizedNetworksConfigCidrBlocks,
        )

        workload_pool = f"{props.project}.svc.id.goog"
        self.cluster = ContainerCluster(
            self,
            "cluster",
            name=props.name,
            project=props.project,
            location=props.region,
            min_master_version=props.kubernetes_version,
            release_channel={"channel": props.release_channel},
            # Node pools are managed as their own resources; GKE still insists on creating a default
            # pool with the cluster, so it is created small and removed right away.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config={
                **hardened_node_settings(props.node_service_account_email),
                "labels": dict(props.labels),
                "resource_labels": dict(props.labels),
            },
            # node_config above only describes the short-lived default pool. After it is removed, GKE
            # reports another pool's settings here, which would otherwise plan a cluster replacement.
            lifecycle=TerraformResourceLifecycle(ignore_changes=["node_config"]),
            network=props.network_id,
            subnetwork=props.subnetwork_id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy={
                "cluster_secondary_range_name": props.pods_range_name,
                "services_secondary_range_name": props.services_range_name,
            },
            private_cluster_config={
                "enable_private_nodes": True,
                "enable_private_endpoint": False,
                "master_ipv4_cidr_block": props.master_cidr,
            },
            master_authorized_networks_config={
                "cidr_blocks": [
                    ContainerClusterMasterAuthorizedNetworksConfigCidrBlocks(
                        display_name=network.display_name, cidr_block=network.cidr_block
                    )
                    for network in props.authorized_networks
                ],
                "gcp_public_cidrs_access_enabled": False,
            },
            workload_identity_config={"workload_pool": workload_pool},
            # Dataplane V2 (eBPF/Cilium) enforces NetworkPolicy itself; the Calico addon must stay off
            # (GKE rejects both at once), which is what network_policy.enabled=false says here.
            datapath_provider="ADVANCED_DATAPATH",
            network_policy={"enabled": False},
            enable_shielded_nodes=True,
            enable_intranode_visibility=True,
            enable_legacy_abac=False,
            master_auth={"client_certificate_config": {"issue_client_certificate": False}},
            # Control plane logs (API server, scheduler, controller manager) for audits and debugging.
            logging_config={
                "enable_components": [
                    "SYSTEM_COMPONENTS",
                    "WORKLOADS",
                    "APISERVER",
                    "SCHEDULER",
                    "CONTROLLER_MANAGER",
                ]
            },
            monitoring_config={"enable_components": ["SYSTEM_COMPONENTS"]},
            # The Kubernetes router shifts canary traffic with Gateway API HTTPRoutes.
            gateway_api_config={"channel": "CHANNEL_STANDARD"},
            # Only images the project's Binary Authorization policy admits may run.
            binary_authorization={"evaluation_mode": "PROJECT_SINGLETON_POLICY_ENFORCE"},
            resource_labels=dict(props.labels),
            deletion_protection=props.deletion_protection,
        )
        if props.rbac_security_group:
            self.cluster.put_authenticator_groups_config(security_group=props.rbac_security_group)
        else:
            skip_checks(
                self.cluster,
                {
                    "CKV_GCP_65": "Google Groups for RBAC needs a Workspace/Cloud Identity domain group "
                    "(gke-security-groups@<domain>) and fleet.yaml names none; API access is limited to the "
                    "VPC and granted to individual IAM principals",
                },
            )
        self.name = self.cluster.name
        # Read back from the cluster, not the literal: the pool exists only once the first Workload
        # Identity cluster of the project does, so IAM bindings that name it must wait for the cluster.
        self.workload_pool = self.cluster.workload_identity_config.workload_pool
        self.endpoint = self.cluster.endpoint
        # The CA is public (every client needs it to verify the API server); the provider does not mark
        # it sensitive either.
        self.ca_certificate = self.cluster.master_auth.cluster_ca_certificate

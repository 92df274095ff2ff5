"""An AKS cluster for GPU inference: private API, Entra ID + Azure RBAC, workload identity, system pool.

GPU nodes are separate `azurerm_kubernetes_cluster_node_pool`s (gpu_node_pool.py); the default pool here
runs only cluster-critical add-ons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cdktf import ITerraformDependable
from constructs import Construct

from modules.checkov import skip_checks

AKS_CLUSTER_NAME_MAX_LENGTH = 63
AKS_DNS_PREFIX_MAX_LENGTH = 54
NODE_RESOURCE_GROUP_NAME_MAX_LENGTH = 80
NODE_POOL_NAME_MAX_LENGTH = 12  # Linux node pools: 1-12 lowercase letters and digits, starting with a letter
IDENTITY_NAME_MAX_LENGTH = 128

SKU_TIER_STANDARD = "Standard"  # financially backed API server SLA
SKU_TIER_FREE = "Free"

# Built-in role names (stable across tenants; ids would be the same, names read better).
NETWORK_CONTRIBUTOR = "Network Contributor"
AKS_RBAC_CLUSTER_ADMIN = "Azure Kubernetes Service RBAC Cluster Admin"


@dataclass(frozen=True)
class MaintenanceWindow:
    """A weekly window (UTC) for Kubernetes patch upgrades and node image updates."""

    day_of_week: str = "Sunday"
    start_time: str = "02:00"
    duration_hours: int = 4


@dataclass(frozen=True)
class SystemPoolSettings:
    # Size and VM from the environment profile (stacks/profile.py). A "d" size has a local temp disk,
    # which is what lets the OS disk be ephemeral (Standard_D4s_v5 has none); its temp disk must be at
    # least os_disk_size_gb (Standard_D4ds_v5: 150 GiB).
    vm_size: str
    min_nodes: int
    max_nodes: int
    name: str = "system"
    os_disk_size_gb: int = 64
    max_pods: int = 110


@dataclass(frozen=True)
class AksClusterProps:
    name: str  # 1-63 letters, digits, '-' and '_'
    resource_group_name: str
    location: str
    kubernetes_version: str  # "1.35": a minor version; the patch channel keeps its latest patch
    dns_prefix: str  # 1-54 letters, digits and '-', starting with a letter
    node_resource_group: str  # AKS creates it (node VMs, load balancers); <= 80 characters
    identity_name: str  # the control plane's user-assigned identity
    subnet_id: str
    log_analytics_workspace_id: str
    tenant_id: str
    system_pool: SystemPoolSettings
    # Principals granted cluster-admin through Azure RBAC (local accounts are disabled): the deployer,
    # so that the later steps (GPU operator, Triton) can reach the cluster with `kubelogin`.
    admin_principal_ids: Sequence[str] = ()
    sku_tier: str = SKU_TIER_STANDARD
    maintenance: MaintenanceWindow = MaintenanceWindow()
    # Overlay networking: pods and services get addresses outside the VNet, so they need no subnet space.
    pod_cidr: str = "192.168.0.0/16"
    service_cidr: str = "172.16.0.0/16"
    dns_service_ip: str = "172.16.0.10"
    tags: Mapping[str, str] = field(default_factory=dict)
    # Public networks allowed to reach the API server; empty keeps the cluster private (see AksCluster).
    authorized_ip_ranges: Sequence[str] = ()
    # Resources the cluster must wait for beyond its subnet (e.g. the subnet's NSG association).
    depends_on: Sequence[ITerraformDependable] = ()


class AksCluster(Construct):
    """AKS with a user-assigned control-plane identity that may manage its subnet, and nothing else.

    API access: by default a *private* cluster: the API server gets a private endpoint in the node
    subnet and no public address; operators and CI reach it from a peered network / VPN, or run
    commands through `az aks command invoke` (run command stays enabled for that). With
    props.authorized_ip_ranges (fleet.yaml endpoint_public_access + public_access_cidrs) the API server
    is public but answers only those ranges (AKS adds the cluster's own outbound IP). Switching between
    the two replaces the cluster: AKS cannot make an existing cluster private or public.
    """

    id: str
    name: str
    api_fqdn: str  # the private FQDN, or the public one when authorized_ip_ranges opens the API
    oidc_issuer_url: str
    ca_certificate: str  # base64 PEM; from kube_config, which the provider marks sensitive
    kubelet_object_id: str
    system_pool_name: str

    def __init__(self, scope: Construct, construct_id: str, props: AksClusterProps) -> None:
        super().__init__(scope, construct_id)
        from cdktf_cdktf_provider_azurerm.kubernetes_cluster import (
            KubernetesCluster,
            KubernetesClusterApiServerAccessProfile,
            KubernetesClusterAzureActiveDirectoryRoleBasedAccessControl,
            KubernetesClusterDefaultNodePool,
            KubernetesClusterDefaultNodePoolUpgradeSettings,
            KubernetesClusterIdentity,
            KubernetesClusterMaintenanceWindowAutoUpgrade,
            KubernetesClusterMaintenanceWindowNodeOs,
            KubernetesClusterNetworkProfile,
            KubernetesClusterOmsAgent,
        )
        from cdktf_cdktf_provider_azurerm.role_assignment import RoleAssignment
        from cdktf_cdktf_provider_azurerm.user_assigned_identity import UserAssignedIdentity

        tags = dict(props.tags)
        pool = props.system_pool
        public_api = bool(props.authorized_ip_ranges)

        # A user-assigned identity (not SystemAssigned) so its subnet permission exists *before* the
        # cluster is created: AKS needs it to place the API server's private endpoint and load balancers.
        self.control_plane_identity = UserAssignedIdentity(
            self,
            "control-plane-identity",
            name=props.identity_name,
            resource_group_name=props.resource_group_name,
            location=props.location,
            tags=tags,
        )
        subnet_access = RoleAssignment(
            self,
            "control-plane-subnet-access",
            scope=props.subnet_id,
            role_definition_name=NETWORK_CONTRIBUTOR,
            principal_id=self.control_plane_identity.principal_id,
            principal_type="ServicePrincipal",
        )

        window = props.maintenance
        self.cluster = KubernetesCluster(
            self,
            "cluster",
            name=props.name,
            resource_group_name=props.resource_group_name,
            location=props.location,
            kubernetes_version=props.kubernetes_version,
            dns_prefix=props.dns_prefix,
            node_resource_group=props.node_resource_group,
            sku_tier=props.sku_tier,
            # Cost analysis needs a paid tier; it splits the bill by namespace and GPU pool.
            cost_analysis_enabled=props.sku_tier != SKU_TIER_FREE,
            identity=KubernetesClusterIdentity(
                type="UserAssigned", identity_ids=[self.control_plane_identity.id]
            ),
            # API server: see the class docstring.
            private_cluster_enabled=not public_api,
            private_cluster_public_fqdn_enabled=None if public_api else False,
            private_dns_zone_id=None if public_api else "System",
            api_server_access_profile=(
                KubernetesClusterApiServerAccessProfile(authorized_ip_ranges=list(props.authorized_ip_ranges))
                if public_api
                else None
            ),
            # Entra ID sign-in, Kubernetes authorization by Azure RBAC, no static admin credentials.
            local_account_disabled=True,
            role_based_access_control_enabled=True,
            azure_active_directory_role_based_access_control=(
                KubernetesClusterAzureActiveDirectoryRoleBasedAccessControl(
                    azure_rbac_enabled=True, tenant_id=props.tenant_id
                )
            ),
            # Pods get Entra ID tokens for their service account (Triton reads the store this way).
            oidc_issuer_enabled=True,
            workload_identity_enabled=True,
            # Azure CNI in overlay mode with the Cilium data plane: VNet-routable nodes, overlay pod
            # addresses, and Kubernetes NetworkPolicy enforced by Cilium.
            network_profile=KubernetesClusterNetworkProfile(
                network_plugin="azure",
                network_plugin_mode="overlay",
                network_data_plane="cilium",
                network_policy="cilium",
                load_balancer_sku="standard",
                outbound_type="loadBalancer",
                pod_cidr=props.pod_cidr,
                service_cidr=props.service_cidr,
                dns_service_ip=props.dns_service_ip,
            ),
            default_node_pool=KubernetesClusterDefaultNodePool(
                name=pool.name,
                vm_size=pool.vm_size,
                vnet_subnet_id=props.subnet_id,
                # Only kube-system's critical add-ons here (CriticalAddonsOnly taint): GPU workloads and
                # everything else go to the user pools.
                only_critical_addons_enabled=True,
                auto_scaling_enabled=True,
                min_count=pool.min_nodes,
                max_count=pool.max_nodes,
                max_pods=pool.max_pods,
                os_sku="AzureLinux",
                # Ephemeral OS disk on the VM's local disk: nothing of the node is persisted to Azure
                # Storage, and reimaging (upgrades, scale-out) is faster.
                os_disk_type="Ephemeral",
                os_disk_size_gb=pool.os_disk_size_gb,
                # Temp disk, caches and disk traffic encrypted on the host. Needs the subscription
                # feature Microsoft.Compute/EncryptionAtHost registered once.
                host_encryption_enabled=True,
                node_public_ip_enabled=False,
                # Lets a VM size / disk change roll the system pool instead of replacing the cluster.
                temporary_name_for_rotation=f"{pool.name[:8]}tmp",
                upgrade_settings=KubernetesClusterDefaultNodePoolUpgradeSettings(max_surge="33%"),
                tags=tags,
            ),
            # Kubernetes patch releases of the pinned minor version and weekly node image updates, both
            # inside the maintenance windows below.
            automatic_upgrade_channel="patch",
            node_os_upgrade_channel="NodeImage",
            maintenance_window_auto_upgrade=KubernetesClusterMaintenanceWindowAutoUpgrade(
                frequency="Weekly",
                interval=1,
                day_of_week=window.day_of_week,
                start_time=window.start_time,
                duration=window.duration_hours,
                utc_offset="+00:00",
            ),
            maintenance_window_node_os=KubernetesClusterMaintenanceWindowNodeOs(
                frequency="Weekly",
                interval=1,
                day_of_week=window.day_of_week,
                start_time=window.start_time,
                duration=window.duration_hours,
                utc_offset="+00:00",
            ),
            # Container Insights (logs + metrics) through the agent's managed identity.
            oms_agent=KubernetesClusterOmsAgent(
                log_analytics_workspace_id=props.log_analytics_workspace_id,
                msi_auth_for_monitoring_enabled=True,
            ),
            # Azure Policy (Gatekeeper) add-on: lets the organisation's pod security policies apply.
            azure_policy_enabled=True,
            # Removes unused images from nodes: GPU images (Triton, CUDA) are large and stale ones carry CVEs.
            image_cleaner_enabled=True,
            image_cleaner_interval_hours=48,
            tags=tags,
            depends_on=[subnet_access, *props.depends_on],
        )
        skips = {
            "CKV_AZURE_117": (
                "OS disks are ephemeral on the system pool and encrypted at host on every pool (platform "
                "keys); a customer-managed disk encryption set needs a Key Vault with purge protection, "
                "whose name stays reserved for up to 90 days after a preview is destroyed, and key custody "
                "is the organisation's key management, not a per-cluster stack"
            ),
            "CKV_AZURE_172": (
                "the Key Vault Secrets Store CSI add-on is not enabled: nothing in the cluster mounts Key "
                "Vault secrets (Triton reads the model store with workload identity), so there is no "
                "secret to rotate"
            ),
        }
        if props.sku_tier == SKU_TIER_FREE:
            skips["CKV_AZURE_170"] = (
                "preview cluster: short-lived (TTL-swept) and not serving production traffic, so it does not "
                "pay for the API server uptime SLA; production environments use the Standard tier"
            )
        if public_api:
            skips["CKV_AZURE_115"] = (
                "fleet.yaml sets endpoint_public_access with an explicit public_access_cidrs allow-list "
                "(the spec refuses one without the other), applied as the API server's authorized IP ranges"
            )
        skip_checks(self.cluster, skips)

        self.admin_role_assignments = [
            RoleAssignment(
                self,
                f"cluster-admin-{index}",
                scope=self.cluster.id,
                role_definition_name=AKS_RBAC_CLUSTER_ADMIN,
                principal_id=principal_id,
            )
            for index, principal_id in enumerate(props.admin_principal_ids)
        ]

        self.id = self.cluster.id
        self.name = self.cluster.name
        self.api_fqdn = self.cluster.fqdn if public_api else self.cluster.private_fqdn
        self.oidc_issuer_url = self.cluster.oidc_issuer_url
        self.ca_certificate = self.cluster.kube_config.get(0).cluster_ca_certificate
        self.kubelet_object_id = self.cluster.kubelet_identity.object_id
        self.system_pool_name = pool.name

"""Azure stacks of an environment: one shared stack (model store, state) and one stack per AKS cluster.

Every stack owns one resource group, so destroying a stack removes exactly its resources. The shared stack's
group (model store account, state account, their audit-log workspace) is in the *home region*: the region
of the first Azure cluster in fleet.yaml. Every AKS cluster stack keeps its state in that state account and
reads models from that store, whatever its own region.

Previews add only cluster stacks: they reuse the base environment's store and state account (their names
are derived from the base environment), under their own state keys, in their own resource groups. The
stacks are composed by stacks/app.py (a cluster stack grants Triton read access on the store container,
so it depends on the shared stack); sizes and the SKU tier come from the environment profile
(stacks/profile.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from cdktf import LocalBackend, TerraformOutput, TerraformStack
from constructs import Construct

from gpufleet import catalog
from gpufleet.environments import fit_name
from gpufleet.errors import UserError
from gpufleet.node_contract import gpu_node_labels, system_node_labels
from gpufleet.spec import AzureCluster, GpuPool
from modules.azure.aks_cluster import (
    AKS_CLUSTER_NAME_MAX_LENGTH,
    AKS_DNS_PREFIX_MAX_LENGTH,
    IDENTITY_NAME_MAX_LENGTH,
    NODE_RESOURCE_GROUP_NAME_MAX_LENGTH,
    AksCluster,
    AksClusterProps,
    SystemPoolSettings,
)
from modules.azure.client_config import AzureClientConfig
from modules.azure.gpu_node_pool import GpuNodePool, GpuNodePoolProps
from modules.azure.log_analytics import (
    WORKSPACE_NAME_MAX_LENGTH,
    LogAnalyticsWorkspace,
    LogAnalyticsWorkspaceProps,
)
from modules.azure.model_store import BlobModelStore, BlobModelStoreProps
from modules.azure.network import AzureNetwork, AzureNetworkProps
from modules.azure.platform_node_pool import PlatformNodePool, PlatformNodePoolProps
from modules.azure.resource_group import RESOURCE_GROUP_NAME_MAX_LENGTH, ResourceGroup, ResourceGroupProps
from modules.azure.secure_storage_account import (
    CONTAINER_NAME_MAX_LENGTH,
    STORAGE_ACCOUNT_NAME_MAX_LENGTH,
    blob_container_resource_id,
    blob_url,
)
from modules.azure.state_backend import StateBackend, StateBackendProps, use_azurerm_state
from modules.azure.triton_identity import TritonIdentity, TritonIdentityProps
from stacks.context import StackContext

CLOUD = "azure"
PLATFORM_POOL_NAME = "platform"


def azure_clusters(ctx: StackContext) -> list[AzureCluster]:
    return [c for c in ctx.fleet.cloud_clusters() if isinstance(c, AzureCluster)]


# -- names shared by an environment and its previews (all from the *base* environment) --------------


def _storage_account_base(ctx: StackContext) -> str:
    account = ctx.fleet.model_store.azure_storage_account
    if not account:  # spec validation requires it when the fleet has an Azure cluster
        raise UserError("model_store.azure_storage_account: required with Azure clusters; add it")
    return account


def store_account_name(ctx: StackContext) -> str:
    """The model store's storage account: the name from fleet.yaml, made unique per environment."""
    return fit_name(
        _storage_account_base(ctx),
        ctx.base_environment,
        max_length=STORAGE_ACCOUNT_NAME_MAX_LENGTH,
        alnum_only=True,
    )


def state_account_name(ctx: StackContext) -> str:
    """The state account: derived from the (globally unique, user-chosen) store account name, since
    storage account names are global and a fleet-name-based one ("demoprodtfstate") would likely be taken."""
    return fit_name(
        _storage_account_base(ctx),
        ctx.base_environment,
        "tf",
        max_length=STORAGE_ACCOUNT_NAME_MAX_LENGTH,
        alnum_only=True,
    )


def store_container_name(ctx: StackContext) -> str:
    return ctx.store_bucket(CONTAINER_NAME_MAX_LENGTH)


def shared_resource_group_name(ctx: StackContext) -> str:
    return fit_name(ctx.fleet.name, ctx.base_environment, "shared", max_length=RESOURCE_GROUP_NAME_MAX_LENGTH)


def cluster_resource_group_name(ctx: StackContext, cluster: AzureCluster) -> str:
    """fleet.yaml's resource_group for the environment itself; a preview gets its own group next to it
    (a preview must never create, or destroy, the base environment's group)."""
    if cluster.resource_group and not ctx.is_preview:
        return cluster.resource_group
    if cluster.resource_group:
        return fit_name(cluster.resource_group, ctx.environment, max_length=RESOURCE_GROUP_NAME_MAX_LENGTH)
    return ctx.resource_name(cluster.name, max_length=RESOURCE_GROUP_NAME_MAX_LENGTH)


# -- stacks -------------------------------------------------------------------------------------------


def _provider(stack: TerraformStack, *, owns_resource_group_contents: bool) -> None:
    from cdktf_cdktf_provider_azurerm.provider import (
        AzurermProvider,
        AzurermProviderFeatures,
        AzurermProviderFeaturesResourceGroup,
        AzurermProviderFeaturesStorage,
    )

    # The subscription comes from the environment (ARM_SUBSCRIPTION_ID / az login), never from code.
    features = AzurermProviderFeatures(
        # The storage accounts accept Entra ID only; everything here is managed through the resource
        # manager API, so the provider must not try key-based data-plane calls (queue/website properties).
        storage=[AzurermProviderFeaturesStorage(data_plane_available=False)],
        # A cluster stack's group also holds what AKS adds to it (the Container Insights data collection
        # rule): destroying the stack must remove it too, or preview sweeps would stop at a non-empty group.
        # The shared group keeps the provider's default protection.
        resource_group=[
            AzurermProviderFeaturesResourceGroup(
                prevent_deletion_if_contains_resources=not owns_resource_group_contents
            )
        ],
    )
    AzurermProvider(stack, "azurerm", features=[features])


class SharedStack(TerraformStack):
    """Model store, state account and their audit-log workspace for one environment, in its own group."""

    stack_name: str

    def __init__(
        self, scope: Construct, stack_name: str, ctx: StackContext, clusters: Sequence[AzureCluster]
    ) -> None:
        super().__init__(scope, stack_name)
        self.stack_name = stack_name
        location = clusters[0].region  # the home region
        # Bootstrap: this stack creates the state account, so its own state cannot start there: it starts
        # on local disk, beside the fleet file (stacks/context.py BOOTSTRAP_STATE_DIR).
        LocalBackend(self, path=ctx.bootstrap_state_path(stack_name))
        _provider(self, owns_resource_group_contents=False)
        tags = ctx.tags()
        deployer = AzureClientConfig(self, "client")

        group = ResourceGroup(
            self,
            "resource-group",
            ResourceGroupProps(name=shared_resource_group_name(ctx), location=location, tags=tags),
        )
        audit_logs = LogAnalyticsWorkspace(
            self,
            "audit-logs",
            LogAnalyticsWorkspaceProps(
                name=ctx.resource_name("storage-audit", max_length=WORKSPACE_NAME_MAX_LENGTH),
                resource_group_name=group.name,
                location=location,
                # Storage access logs are audit records: kept for a year.
                retention_days=365,
                tags=tags,
            ),
        )
        store = BlobModelStore(
            self,
            "model-store",
            BlobModelStoreProps(
                account_name=store_account_name(ctx),
                container_name=store_container_name(ctx),
                prefix=ctx.fleet.model_store.prefix,
                resource_group_name=group.name,
                location=location,
                audit_log_workspace_id=audit_logs.workspace_id,
                # Only base environments have a shared stack; previews reuse this store.
                replication_type="GRS",
                # The deployer publishes engines and keeps rollout state in the store (`gpufleet push`).
                writer_principal_ids=(deployer.object_id,),
                tags=tags,
            ),
        )
        state = StateBackend(
            self,
            "state",
            StateBackendProps(
                account_name=state_account_name(ctx),
                resource_group_name=group.name,
                location=location,
                audit_log_workspace_id=audit_logs.workspace_id,
                replication_type="GRS",
                writer_principal_ids=(deployer.object_id,),
                tags=tags,
            ),
        )
        TerraformOutput(self, "resource_group", value=shared_resource_group_name(ctx))
        TerraformOutput(self, "region", value=location)
        TerraformOutput(self, "storage_account", value=store.account_name)
        TerraformOutput(self, "store_container", value=store.container_name)
        TerraformOutput(self, "store_url", value=store.url)
        TerraformOutput(self, "state_storage_account", value=state.account_name)
        TerraformOutput(self, "state_container", value=state.container_name)
        TerraformOutput(self, "audit_log_workspace_id", value=audit_logs.workspace_id)


class ClusterStack(TerraformStack):
    """One AKS cluster in its own resource group: network, logs, cluster, node pools, Triton's identity.

    Node pools: `system` (AKS critical add-ons only), `platform` (untainted: GPU operator controllers,
    monitoring, routing) and one pool per fleet.yaml GPU pool (tainted nvidia.com/gpu).
    """

    stack_name: str

    def __init__(self, scope: Construct, stack_name: str, ctx: StackContext, cluster: AzureCluster) -> None:
        super().__init__(scope, stack_name)
        self.stack_name = stack_name
        use_azurerm_state(
            self, shared_resource_group_name(ctx), state_account_name(ctx), ctx.state_key(stack_name)
        )
        _provider(self, owns_resource_group_contents=True)
        profile = ctx.profile.azure
        tags = ctx.tags()
        location = cluster.region
        cluster_name = ctx.cluster_name(cluster.name, AKS_CLUSTER_NAME_MAX_LENGTH)
        resource_group_name = cluster_resource_group_name(ctx, cluster)
        deployer = AzureClientConfig(self, "client")

        def named(*suffix: str, max_length: int) -> str:
            return fit_name(cluster_name, *suffix, max_length=max_length)

        group = ResourceGroup(
            self,
            "resource-group",
            ResourceGroupProps(name=resource_group_name, location=location, tags=tags),
        )
        network = AzureNetwork(
            self,
            "network",
            AzureNetworkProps(
                name=cluster_name, resource_group_name=group.name, location=location, tags=tags
            ),
        )
        logs = LogAnalyticsWorkspace(
            self,
            "logs",
            LogAnalyticsWorkspaceProps(
                name=named("logs", max_length=WORKSPACE_NAME_MAX_LENGTH),
                resource_group_name=group.name,
                location=location,
                daily_quota_gb=profile.log_daily_quota_gb,
                tags=tags,
            ),
        )
        aks = AksCluster(
            self,
            "aks",
            AksClusterProps(
                name=cluster_name,
                resource_group_name=group.name,
                location=location,
                kubernetes_version=cluster.kubernetes_version,
                dns_prefix=named(max_length=AKS_DNS_PREFIX_MAX_LENGTH),
                node_resource_group=fit_name(
                    resource_group_name, "nodes", max_length=NODE_RESOURCE_GROUP_NAME_MAX_LENGTH
                ),
                identity_name=named("control-plane", max_length=IDENTITY_NAME_MAX_LENGTH),
                subnet_id=network.subnet_id,
                log_analytics_workspace_id=logs.workspace_id,
                tenant_id=deployer.tenant_id,
                admin_principal_ids=(deployer.object_id,),
                # The Free tier (previews) has no uptime SLA and no cost analysis, which needs a paid tier.
                sku_tier=profile.sku_tier,
                system_pool=SystemPoolSettings(
                    vm_size=profile.node_vm_size,
                    min_nodes=profile.system_nodes.min_nodes,
                    max_nodes=profile.system_nodes.max_nodes,
                ),
                tags=tags,
                authorized_ip_ranges=tuple(cluster.public_access_cidrs),
                depends_on=(network.nsg_association,),
            ),
        )
        platform_pool = PlatformNodePool(
            self,
            "platform-pool",
            PlatformNodePoolProps(
                name=PLATFORM_POOL_NAME,
                cluster_id=aks.id,
                subnet_id=network.subnet_id,
                vm_size=profile.node_vm_size,
                min_nodes=profile.platform_nodes.min_nodes,
                max_nodes=profile.platform_nodes.max_nodes,
                # The untainted pool for cluster services: the node contract's system role.
                node_labels=system_node_labels(PLATFORM_POOL_NAME),
                tags=tags,
            ),
        )
        gpu_pools = [
            self._gpu_pool(ctx, cluster, aks, network, pool)
            for pool in cluster.gpu_pools
            if ctx.profile.gpu_pool_size(pool).max_nodes > 0  # 0: a preview without GPU pools
        ]

        store_account = store_account_name(ctx)
        store_container = store_container_name(ctx)
        triton = TritonIdentity(
            self,
            "triton-identity",
            TritonIdentityProps(
                name=named("triton", max_length=IDENTITY_NAME_MAX_LENGTH),
                resource_group_name=group.name,
                location=location,
                # The container lives in the shared stack of the base environment (same subscription).
                store_container_id=blob_container_resource_id(
                    deployer.subscription_id,
                    shared_resource_group_name(ctx),
                    store_account,
                    store_container,
                ),
                oidc_issuer_url=aks.oidc_issuer_url,
                tags=tags,
            ),
        )

        TerraformOutput(self, "cluster_name", value=aks.name)
        # kube_config (host included) is sensitive in the provider; the private API server's FQDN is not.
        TerraformOutput(self, "cluster_endpoint", value=f"https://{aks.api_fqdn}:443")
        # A CA certificate is public, but Terraform refuses to output a value read from a sensitive attribute
        # without the flag.
        TerraformOutput(self, "cluster_ca_certificate", value=aks.ca_certificate, sensitive=True)
        TerraformOutput(self, "region", value=location)
        TerraformOutput(self, "resource_group", value=resource_group_name)
        TerraformOutput(self, "oidc_issuer_url", value=aks.oidc_issuer_url)
        TerraformOutput(self, "triton_identity_client_id", value=triton.client_id)
        TerraformOutput(self, "triton_service_account_subject", value=triton.subject)
        if gpu_pools:
            TerraformOutput(self, "node_pool_name", value=gpu_pools[0].name)
        TerraformOutput(self, "node_pool_names", value=[p.name for p in gpu_pools])
        TerraformOutput(self, "system_node_pool_name", value=aks.system_pool_name)
        TerraformOutput(self, "platform_node_pool_name", value=platform_pool.name)
        TerraformOutput(self, "store_account", value=store_account)
        TerraformOutput(self, "store_container", value=store_container)
        TerraformOutput(
            self, "store_url", value=blob_url(store_account, store_container, ctx.fleet.model_store.prefix)
        )

    def _gpu_pool(
        self,
        ctx: StackContext,
        cluster: AzureCluster,
        aks: AksCluster,
        network: AzureNetwork,
        pool: GpuPool,
    ) -> GpuNodePool:
        vm = catalog.instance_type(CLOUD, pool.instance_type)
        if vm is None:  # spec validation already rejects this
            raise ValueError(f"{cluster.name}: {pool.instance_type} is not an Azure GPU VM size we know")
        size = ctx.profile.gpu_pool_size(pool)
        return GpuNodePool(
            self,
            f"gpu-pool-{pool.name}",
            GpuNodePoolProps(
                name=pool.name,
                cluster_id=aks.id,
                subnet_id=network.subnet_id,
                vm_size=vm.name,
                min_nodes=size.min_nodes,
                max_nodes=size.max_nodes,
                spot=size.spot,
                os_disk_size_gb=pool.disk_gb,
                node_labels=gpu_node_labels(pool.name, vm.gpu, vm.gpu_arch),
                tags=ctx.tags(),
            ),
        )

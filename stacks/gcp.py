"""GCP stacks of an environment: one shared stack (model store, state bucket) and one stack per GKE cluster.

Stacks only compose the constructs of modules/gcp; what each resource looks like is decided there. The
stacks themselves are composed by stacks/app.py (cluster stacks depend on the shared one: the cluster
stack grants Triton read access on the store bucket, so the bucket comes first); sizes come from the
environment profile (stacks/profile.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from cdktf import LocalBackend, TerraformOutput, TerraformStack
from constructs import Construct

from gpufleet import catalog
from gpufleet.environments import fit_name
from gpufleet.node_contract import gpu_node_labels, system_node_labels
from gpufleet.spec import GcpCluster, GpuPool
from modules.gcp.access_logs import GcsAccessLogBucket, GcsAccessLogBucketProps
from modules.gcp.gke_cluster import (
    GKE_CLUSTER_NAME_MAX_LENGTH,
    AuthorizedNetwork,
    GkeCluster,
    GkeClusterProps,
)
from modules.gcp.gpu_node_pool import GpuNodePool, GpuNodePoolProps
from modules.gcp.model_store import GCS_BUCKET_NAME_MAX_LENGTH, GcsModelStore, GcsModelStoreProps
from modules.gcp.network import GcpNetwork, GcpNetworkProps
from modules.gcp.node_service_account import (
    SERVICE_ACCOUNT_ID_MAX_LENGTH,
    GkeNodeServiceAccount,
    GkeNodeServiceAccountProps,
)
from modules.gcp.state_backend import GcsStateBucket, GcsStateBucketProps, use_gcs_state
from modules.gcp.system_node_pool import SystemNodePool, SystemNodePoolProps
from modules.gcp.triton_identity import TritonIdentity, TritonIdentityProps
from stacks.context import StackContext

CLOUD = "gcp"
SYSTEM_POOL_NAME = "system"


def _provider(stack: TerraformStack, project: str, region: str) -> None:
    from cdktf_cdktf_provider_google.provider import GoogleProvider

    GoogleProvider(stack, "google", project=project, region=region)


class SharedStack(TerraformStack):
    """Model store, state bucket and their access-log bucket for one environment.

    GCP resources need a project and a location, and fleet.yaml names them per cluster only: the shared
    stack uses the first GCP cluster's project and region (buckets in that region, next to it).
    """

    stack_name: str

    def __init__(
        self, scope: Construct, stack_name: str, ctx: StackContext, clusters: Sequence[GcpCluster]
    ) -> None:
        super().__init__(scope, stack_name)
        self.stack_name = stack_name
        home = clusters[0]
        # Bootstrap: this stack creates the state bucket, so its own state cannot start there: it starts on
        # local disk, beside the fleet file (stacks/context.py BOOTSTRAP_STATE_DIR).
        LocalBackend(self, path=ctx.bootstrap_state_path(stack_name))
        _provider(self, home.project, home.region)
        labels = ctx.tags()
        location = home.region.upper()

        access_logs = GcsAccessLogBucket(
            self,
            "access-logs",
            GcsAccessLogBucketProps(
                bucket_name=ctx.global_bucket("gcs-access-logs", max_length=GCS_BUCKET_NAME_MAX_LENGTH),
                project=home.project,
                location=location,
                labels=labels,
            ),
        )
        store = GcsModelStore(
            self,
            "model-store",
            GcsModelStoreProps(
                bucket_name=ctx.store_bucket(GCS_BUCKET_NAME_MAX_LENGTH),
                project=home.project,
                location=location,
                prefix=ctx.fleet.model_store.prefix,
                access_log_bucket=access_logs.bucket_name,
                labels=labels,
            ),
        )
        state = GcsStateBucket(
            self,
            "state",
            GcsStateBucketProps(
                bucket_name=ctx.state_bucket(GCS_BUCKET_NAME_MAX_LENGTH),
                project=home.project,
                location=location,
                access_log_bucket=access_logs.bucket_name,
                labels=labels,
            ),
        )
        TerraformOutput(self, "store_bucket", value=store.bucket_name)
        TerraformOutput(self, "store_url", value=store.url)
        TerraformOutput(self, "state_bucket", value=state.bucket_name)
        TerraformOutput(self, "access_log_bucket", value=access_logs.bucket_name)
        TerraformOutput(self, "project", value=home.project)
        TerraformOutput(self, "region", value=home.region)


class ClusterStack(TerraformStack):
    """One GKE cluster: network, cluster, system + GPU node pools, Triton's identity."""

    stack_name: str

    def __init__(self, scope: Construct, stack_name: str, ctx: StackContext, cluster: GcpCluster) -> None:
        super().__init__(scope, stack_name)
        self.stack_name = stack_name
        use_gcs_state(self, ctx.state_bucket(GCS_BUCKET_NAME_MAX_LENGTH), ctx.state_key(stack_name))
        _provider(self, cluster.project, cluster.region)
        profile = ctx.profile.gcp
        labels = ctx.tags()
        cluster_name = ctx.cluster_name(cluster.name, GKE_CLUSTER_NAME_MAX_LENGTH)

        def account_id(role: str) -> str:
            # Role first: when a long preview name is shortened, the end is what gets hashed away.
            return fit_name(role, cluster_name, max_length=SERVICE_ACCOUNT_ID_MAX_LENGTH)

        network = GcpNetwork(
            self,
            "network",
            GcpNetworkProps(name=cluster_name, project=cluster.project, region=cluster.region),
        )
        nodes = GkeNodeServiceAccount(
            self,
            "node-identity",
            GkeNodeServiceAccountProps(
                account_id=account_id("nodes"),
                project=cluster.project,
                display_name=f"GKE nodes of {cluster_name}",
            ),
        )
        gke = GkeCluster(
            self,
            "gke",
            GkeClusterProps(
                name=cluster_name,
                project=cluster.project,
                region=cluster.region,
                kubernetes_version=cluster.kubernetes_version,
                network_id=network.network.id,
                subnetwork_id=network.subnetwork.id,
                pods_range_name=network.pods_range_name,
                services_range_name=network.services_range_name,
                # The VPC always reaches the API; operator networks only when fleet.yaml opens it.
                authorized_networks=(
                    AuthorizedNetwork("vpc-nodes", network.nodes_cidr),
                    *(
                        AuthorizedNetwork(f"fleet-yaml-{i}", cidr)
                        for i, cidr in enumerate(cluster.public_access_cidrs)
                    ),
                ),
                node_service_account_email=nodes.email,
                labels=labels,
                deletion_protection=profile.deletion_protection,
            ),
        )
        system_pool = SystemNodePool(
            self,
            "system-pool",
            SystemNodePoolProps(
                name=SYSTEM_POOL_NAME,
                project=cluster.project,
                location=cluster.region,
                cluster_id=gke.cluster.id,
                service_account_email=nodes.email,
                machine_type=profile.system_machine_type,
                min_nodes=profile.system_nodes.min_nodes,
                max_nodes=profile.system_nodes.max_nodes,
                spot=profile.system_nodes.spot,
                labels=labels,
                node_labels=system_node_labels(SYSTEM_POOL_NAME),
            ),
        )
        gpu_pools = [
            self._gpu_pool(ctx, cluster, gke, nodes.email, pool, after=system_pool)
            for pool in cluster.gpu_pools
            if ctx.profile.gpu_pool_size(pool).max_nodes > 0  # 0: a preview without GPU pools
        ]
        triton = TritonIdentity(
            self,
            "triton-identity",
            TritonIdentityProps(
                account_id=account_id("triton"),
                project=cluster.project,
                store_bucket=ctx.store_bucket(GCS_BUCKET_NAME_MAX_LENGTH),
                workload_pool=gke.workload_pool,
            ),
        )

        TerraformOutput(self, "cluster_name", value=gke.name)
        TerraformOutput(self, "cluster_endpoint", value=gke.endpoint)
        TerraformOutput(self, "cluster_ca_certificate", value=gke.ca_certificate)
        TerraformOutput(self, "region", value=cluster.region)
        TerraformOutput(self, "project", value=cluster.project)
        TerraformOutput(self, "triton_service_account_email", value=triton.email)
        if gpu_pools:
            TerraformOutput(self, "node_pool_name", value=gpu_pools[0].name)
        TerraformOutput(self, "node_pool_names", value=[p.name for p in gpu_pools])
        TerraformOutput(self, "system_node_pool_name", value=system_pool.name)
        store_bucket = ctx.store_bucket(GCS_BUCKET_NAME_MAX_LENGTH)
        TerraformOutput(self, "store_url", value=f"gs://{store_bucket}/{ctx.fleet.model_store.prefix}")

    def _gpu_pool(
        self,
        ctx: StackContext,
        cluster: GcpCluster,
        gke: GkeCluster,
        service_account: str,
        pool: GpuPool,
        after: SystemNodePool,
    ) -> GpuNodePool:
        machine = catalog.instance_type(CLOUD, pool.instance_type)
        if machine is None or machine.accelerator is None:  # spec validation already rejects this
            raise ValueError(
                f"{cluster.name}: {pool.instance_type} is not a GCP GPU machine type in the catalog"
            )
        size = ctx.profile.gpu_pool_size(pool)
        return GpuNodePool(
            self,
            f"gpu-pool-{pool.name}",
            GpuNodePoolProps(
                name=pool.name,
                project=cluster.project,
                location=cluster.region,
                node_locations=tuple(cluster.gpu_pool_zones(pool)),
                cluster_id=gke.cluster.id,
                machine_type=machine.name,
                accelerator_type=machine.accelerator,
                accelerator_count=machine.gpus,
                min_nodes=size.min_nodes,
                max_nodes=size.max_nodes,
                spot=size.spot,
                disk_gb=pool.disk_gb,
                service_account_email=service_account,
                labels=ctx.tags(),
                node_labels=gpu_node_labels(pool.name, machine.gpu, machine.gpu_arch),
                # GPU nodes come up once cluster services (device plugin, DNS) have somewhere to run.
                depends_on=(after.node_pool,),
            ),
        )

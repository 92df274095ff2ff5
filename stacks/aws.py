"""AWS stacks of an environment: one shared stack (model store, remote state) and one stack per EKS cluster.

The shared stack lives in the *store region*: the region of the first AWS cluster in fleet.yaml. The model
store bucket and the state bucket are there; every AWS cluster stack keeps its state in that bucket and
reads models from that store, whatever its own region. stacks/app.py composes the stacks (cluster stacks
depend on the shared one); sizes come from the environment profile (stacks/profile.py).

Previews add only cluster stacks: they reuse the base environment's store and state bucket (ctx names them),
under their own state keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from cdktf import LocalBackend, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_aws.provider import AwsProvider
from constructs import Construct

from gpufleet.environments import fit_name
from gpufleet.spec import AwsCluster
from modules.aws.access_log_bucket import AccessLogBucket, AccessLogBucketProps
from modules.aws.account import IAM_ROLE_NAME_MAX_LENGTH, AwsAccount
from modules.aws.cluster_autoscaler_identity import ClusterAutoscalerIdentity, ClusterAutoscalerIdentityProps
from modules.aws.eks_cluster import EksCluster, EksClusterProps
from modules.aws.encryption_key import EncryptionKey, EncryptionKeyProps, alias_for
from modules.aws.gpu_node_group import GpuNodeGroup, GpuNodeGroupProps
from modules.aws.model_store import ModelStore, ModelStoreProps, store_key_alias, store_url
from modules.aws.network import Network, NetworkProps
from modules.aws.node_group import (
    LAUNCH_TEMPLATE_NAME_MAX_LENGTH,
    NODE_GROUP_NAME_MAX_LENGTH,
    NodeIamRole,
    NodeIamRoleProps,
)
from modules.aws.state_backend import StateBackend, StateBackendProps, use_s3_state
from modules.aws.system_node_group import SystemNodeGroup, SystemNodeGroupProps
from modules.aws.triton_identity import TritonIdentity, TritonIdentityProps
from stacks.context import StackContext

CLOUD = "aws"
EKS_CLUSTER_NAME_MAX_LENGTH = 100
S3_BUCKET_NAME_MAX_LENGTH = 63
# Prefix of the per-cluster resource names; suffixes are fitted to each service's own limit.
RESOURCE_BASE_MAX_LENGTH = 40
SYSTEM_NODE_GROUP_NAME = "system"
# S3 lock files (use_lockfile) and conditional import blocks (import-if-exists of the EKS log group).
TERRAFORM_REQUIRED_VERSION = ">= 1.10"


def aws_clusters(ctx: StackContext) -> list[AwsCluster]:
    return [c for c in ctx.fleet.cloud_clusters() if isinstance(c, AwsCluster)]


def store_region(ctx: StackContext) -> str:
    """Region of the shared stack: the first AWS cluster's, in fleet.yaml order."""
    return aws_clusters(ctx)[0].region


class SharedStack(TerraformStack):
    """Model store, access-log bucket and remote-state backend of one environment."""

    def __init__(
        self, scope: Construct, name: str, ctx: StackContext, clusters: Sequence[AwsCluster]
    ) -> None:
        super().__init__(scope, name)
        region = store_region(ctx)
        AwsProvider(self, "aws", region=region)
        self.add_override("terraform.required_version", TERRAFORM_REQUIRED_VERSION)
        # Bootstrap: this stack creates the bucket every other stack keeps its state in, so its own state
        # starts on local disk, beside the fleet file (stacks/context.py BOOTSTRAP_STATE_DIR).
        LocalBackend(self, path=ctx.bootstrap_state_path(name))
        tags = ctx.tags()
        account = AwsAccount(self, "account")
        access_logs = AccessLogBucket(
            self,
            "access-logs",
            AccessLogBucketProps(
                bucket=ctx.global_bucket("s3-access-logs", max_length=S3_BUCKET_NAME_MAX_LENGTH),
                account=account,
                tags=tags,
            ),
        )
        store_spec = ctx.fleet.model_store
        store = ModelStore(
            self,
            "model-store",
            ModelStoreProps(
                bucket=ctx.store_bucket(S3_BUCKET_NAME_MAX_LENGTH),
                prefix=store_spec.prefix,
                account=account,
                tags=tags,
                access_log_bucket=access_logs.bucket_name,
            ),
        )
        state = StateBackend(
            self,
            "state",
            StateBackendProps(
                bucket=ctx.state_bucket(S3_BUCKET_NAME_MAX_LENGTH),
                account=account,
                tags=tags,
                access_log_bucket=access_logs.bucket_name,
            ),
        )
        TerraformOutput(self, "store_bucket", value=store.bucket_name)
        TerraformOutput(self, "store_url", value=store.url)
        TerraformOutput(self, "store_region", value=region)
        TerraformOutput(self, "state_bucket", value=state.bucket_name)
        TerraformOutput(self, "access_log_bucket", value=access_logs.bucket_name)


class ClusterStack(TerraformStack):
    """One EKS cluster: network, control plane, system and GPU node groups, IRSA roles for Triton and
    cluster-autoscaler."""

    def __init__(self, scope: Construct, name: str, ctx: StackContext, cluster: AwsCluster) -> None:
        super().__init__(scope, name)
        shared_region = store_region(ctx)
        profile = ctx.profile.aws
        AwsProvider(self, "aws", region=cluster.region)
        self.add_override("terraform.required_version", TERRAFORM_REQUIRED_VERSION)
        use_s3_state(
            self,
            bucket=ctx.state_bucket(S3_BUCKET_NAME_MAX_LENGTH),
            key=ctx.state_key(name),
            region=shared_region,
        )
        tags = ctx.tags()
        account = AwsAccount(self, "account")
        eks_name = ctx.cluster_name(cluster.name, max_length=EKS_CLUSTER_NAME_MAX_LENGTH)
        base = ctx.resource_name(cluster.name, max_length=RESOURCE_BASE_MAX_LENGTH)

        def role_name(purpose: str) -> str:
            return fit_name(base, purpose, max_length=IAM_ROLE_NAME_MAX_LENGTH)

        logs_key = EncryptionKey(
            self,
            "logs-key",
            EncryptionKeyProps(
                alias=alias_for("logs", base),
                description=f"CloudWatch logs (VPC flow logs, EKS control plane) of {eks_name}",
                account=account,
                tags=tags,
                cloudwatch_logs_region=cluster.region,
            ),
        )
        network = Network(
            self,
            "network",
            NetworkProps(
                name=base,
                eks_cluster_name=eks_name,
                account=account,
                log_key_arn=logs_key.key_arn,
                tags=tags,
                single_nat_gateway=not profile.nat_gateway_per_zone,
            ),
        )
        eks = EksCluster(
            self,
            "eks",
            EksClusterProps(
                name=eks_name,
                role_name=role_name("eks-cluster"),
                kubernetes_version=cluster.kubernetes_version,
                subnet_ids=network.private_subnet_ids,
                account=account,
                log_key_arn=logs_key.key_arn,
                tags=tags,
                endpoint_public_access=cluster.endpoint_public_access,
                public_access_cidrs=list(cluster.public_access_cidrs),
            ),
        )
        node_role = NodeIamRole(
            self, "node-role", NodeIamRoleProps(name=role_name("eks-node"), account=account, tags=tags)
        )
        system_nodes = SystemNodeGroup(
            self,
            "system-nodes",
            SystemNodeGroupProps(
                cluster_name=eks.name,
                kubernetes_version=eks.version,
                min_size=profile.system_nodes.min_nodes,
                max_size=profile.system_nodes.max_nodes,
                spot=profile.system_nodes.spot,
                instance_types=profile.system_instance_types,
                node_group_name=SYSTEM_NODE_GROUP_NAME,
                launch_template_name=fit_name(
                    base, SYSTEM_NODE_GROUP_NAME, max_length=LAUNCH_TEMPLATE_NAME_MAX_LENGTH
                ),
                node_role=node_role,
                subnet_ids=network.private_subnet_ids,
                tags=tags,
            ),
        )
        gpu_groups: list[GpuNodeGroup] = []
        for pool in cluster.gpu_pools:
            size = ctx.profile.gpu_pool_size(pool)
            if size.max_nodes == 0:  # a preview without GPU pools
                continue
            gpu_groups.append(
                GpuNodeGroup(
                    self,
                    f"gpu-{pool.name}",
                    GpuNodeGroupProps(
                        cluster_name=eks.name,
                        kubernetes_version=eks.version,
                        pool=pool,
                        min_size=size.min_nodes,
                        max_size=size.max_nodes,
                        spot=size.spot,
                        node_group_name=fit_name("gpu", pool.name, max_length=NODE_GROUP_NAME_MAX_LENGTH),
                        launch_template_name=fit_name(
                            base, "gpu", pool.name, max_length=LAUNCH_TEMPLATE_NAME_MAX_LENGTH
                        ),
                        node_role=node_role,
                        subnet_ids=network.private_subnet_ids,
                        tags=tags,
                        discovery_cluster_name=eks_name,
                    ),
                )
            )
        store_bucket = ctx.store_bucket(S3_BUCKET_NAME_MAX_LENGTH)
        prefix = ctx.fleet.model_store.prefix
        triton = TritonIdentity(
            self,
            "triton-identity",
            TritonIdentityProps(
                role_name=role_name("triton"),
                oidc_provider_arn=eks.oidc_provider_arn,
                oidc_issuer_host=eks.oidc_issuer_host,
                store_bucket=store_bucket,
                store_prefix=prefix,
                store_region=shared_region,
                store_key_alias=store_key_alias(store_bucket),
                account=account,
                tags=tags,
            ),
        )
        autoscaler = ClusterAutoscalerIdentity(
            self,
            "cluster-autoscaler-identity",
            ClusterAutoscalerIdentityProps(
                role_name=role_name("cluster-autoscaler"),
                cluster_name=eks_name,
                region=cluster.region,
                oidc_provider_arn=eks.oidc_provider_arn,
                oidc_issuer_host=eks.oidc_issuer_host,
                account=account,
                tags=tags,
            ),
        )
        TerraformOutput(self, "cluster_name", value=eks.name)
        TerraformOutput(self, "cluster_endpoint", value=eks.endpoint)
        # The CA certificate is public (every API client gets it); the provider does not mark it sensitive.
        TerraformOutput(self, "cluster_ca_certificate", value=eks.certificate_authority_data)
        TerraformOutput(self, "region", value=cluster.region)
        TerraformOutput(self, "oidc_provider_arn", value=eks.oidc_provider_arn)
        TerraformOutput(self, "triton_role_arn", value=triton.role_arn)
        TerraformOutput(self, "triton_namespace", value=triton.namespace)
        TerraformOutput(self, "triton_service_account", value=triton.service_account)
        TerraformOutput(self, "cluster_autoscaler_role_arn", value=autoscaler.role_arn)
        TerraformOutput(self, "cluster_autoscaler_namespace", value=autoscaler.namespace)
        TerraformOutput(self, "cluster_autoscaler_service_account", value=autoscaler.service_account)
        # The first pool's group (most fleets have one pool); every GPU group in node_group_names.
        if gpu_groups:
            TerraformOutput(self, "node_group_name", value=gpu_groups[0].name)
        TerraformOutput(self, "node_group_names", value=[g.name for g in gpu_groups])
        TerraformOutput(self, "system_node_group_name", value=system_nodes.name)
        TerraformOutput(self, "store_url", value=store_url(store_bucket, prefix))
        TerraformOutput(self, "store_bucket", value=store_bucket)
        TerraformOutput(self, "store_region", value=shared_region)

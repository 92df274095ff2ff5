"""A GPU pool of fleet.yaml as an EKS managed node group: NVIDIA AMI, the node contract's taint and labels."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from gpufleet import catalog
from gpufleet.node_contract import GPU_TAINT, gpu_node_labels
from gpufleet.spec import GpuPool
from modules.aws.autoscaler_tags import AutoscalerTags, AutoscalerTagsProps
from modules.aws.node_group import ManagedNodeGroup, ManagedNodeGroupProps, NodeIamRole

# Amazon Linux 2023 with the NVIDIA driver and container toolkit preinstalled. The AL2 GPU AMI
# (AL2_x86_64_GPU) reached end of support in November 2025 and is not published for Kubernetes 1.33+.
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
# cluster-autoscaler's GPU label on AWS (cloudprovider/aws GPULabel): a node carrying it counts as a GPU
# node still starting its device plugin, so the autoscaler waits instead of adding a second node.
AWS_ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
GPU_RESOURCE = "nvidia.com/gpu"


def gpu_labels(pool: GpuPool) -> dict[str, str]:
    known = _known(pool)
    return gpu_node_labels(pool.name, known.gpu, known.gpu_arch) | {AWS_ACCELERATOR_LABEL: known.gpu}


def _known(pool: GpuPool) -> catalog.InstanceType:
    known = catalog.instance_type("aws", pool.instance_type)
    if known is None:  # fleet validation already refuses unknown types
        raise ValueError(f"{pool.instance_type} is not an AWS GPU instance type gpufleet knows")
    return known


def advertised_gpus(pool: GpuPool) -> int:
    """nvidia.com/gpu a node of the pool offers: its GPUs, each advertised once per time-slicing replica."""
    return _known(pool).gpus * pool.time_slicing_replicas


@dataclass(frozen=True)
class GpuNodeGroupProps:
    cluster_name: str
    kubernetes_version: str
    pool: GpuPool
    # Size and pricing from the environment profile (stacks/profile.py), not the pool's own fields.
    min_size: int
    max_size: int
    spot: bool
    node_group_name: str
    launch_template_name: str
    node_role: NodeIamRole
    subnet_ids: list[str]
    tags: dict[str, str]
    # The EKS cluster's name as written (cluster_name may be a reference): the autoscaler's discovery tag
    # key is spelled with it. None: cluster_name.
    discovery_cluster_name: str | None = None


class GpuNodeGroup(Construct):
    def __init__(self, scope: Construct, id_: str, props: GpuNodeGroupProps) -> None:
        super().__init__(scope, id_)
        pool = props.pool
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
                ami_type=GPU_AMI_TYPE,
                instance_types=[pool.instance_type],
                spot=props.spot,
                min_size=props.min_size,
                max_size=props.max_size,
                disk_gb=pool.disk_gb,  # engines and the Triton image live on the root volume
                labels=gpu_labels(pool),
                # Only pods that tolerate the GPU taint (Triton, GPU operator daemon sets) land here.
                taints=[GPU_TAINT],
                tags=props.tags,
            ),
        )
        self.name: str = self.managed.name
        # Scale from zero: what the autoscaler must know of a node before one exists.
        self.autoscaler_tags = AutoscalerTags(
            self,
            "autoscaler-tags",
            AutoscalerTagsProps(
                cluster_name=props.discovery_cluster_name or props.cluster_name,
                autoscaling_group_name=self.managed.node_group.resources.get(0)
                .autoscaling_groups.get(0)
                .name,
                labels=gpu_labels(pool),
                taints=[GPU_TAINT],
                resources={GPU_RESOURCE: str(advertised_gpus(pool))},
            ),
        )

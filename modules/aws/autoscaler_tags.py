"""cluster-autoscaler's tags on an EKS managed node group's Auto Scaling group: discovery and scale from zero.

EKS does not copy a managed node group's tags to its Auto Scaling group, and cluster-autoscaler reads the
group's tags, not the node group's, to know what a node of a group at zero would offer
(cluster-autoscaler/cloudprovider/aws/README.md, "Auto-Discovery Setup"):
- `k8s.io/cluster-autoscaler/enabled` and `k8s.io/cluster-autoscaler/<cluster>`: the chart's default
  auto-discovery tags, and what the autoscaler's IRSA policy conditions on (owned, true);
- `k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu`: the GPUs a pending pod can request
  (times the time-slicing replicas the device plugin advertises);
- `.../node-template/label/<key>`: each node label, so pods selecting a pool or GPU type trigger it;
- `.../node-template/taint/<key>`: `<value>:<effect>` of each taint, so only pods tolerating the GPU
  taint do.
eks:DescribeNodegroup gives labels and taints only for a group that never had a node; the tags cover a
group scaled back to zero too.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdktf_cdktf_provider_aws.autoscaling_group_tag import AutoscalingGroupTagA, AutoscalingGroupTagTag
from constructs import Construct

from gpufleet.node_contract import Taint

AUTOSCALER_TAG_PREFIX = "k8s.io/cluster-autoscaler"
NODE_TEMPLATE_PREFIX = f"{AUTOSCALER_TAG_PREFIX}/node-template"


def autoscaler_tags(
    cluster_name: str, labels: dict[str, str], taints: list[Taint], resources: dict[str, str]
) -> dict[str, str]:
    """The Auto Scaling group tags cluster-autoscaler reads for one node group (key -> value)."""
    tags = {f"{AUTOSCALER_TAG_PREFIX}/enabled": "true", f"{AUTOSCALER_TAG_PREFIX}/{cluster_name}": "owned"}
    tags |= {f"{NODE_TEMPLATE_PREFIX}/resources/{name}": amount for name, amount in resources.items()}
    tags |= {f"{NODE_TEMPLATE_PREFIX}/label/{key}": value for key, value in labels.items()}
    tags |= {f"{NODE_TEMPLATE_PREFIX}/taint/{t.key}": f"{t.value}:{t.effect}" for t in taints}
    return tags


@dataclass(frozen=True)
class AutoscalerTagsProps:
    cluster_name: str
    autoscaling_group_name: str  # the node group's resources[0].autoscaling_groups[0].name
    labels: dict[str, str]
    taints: list[Taint]
    resources: dict[str, str]


class AutoscalerTags(Construct):
    """One aws_autoscaling_group_tag per tag (the resource holds one tag each)."""

    def __init__(self, scope: Construct, id_: str, props: AutoscalerTagsProps) -> None:
        super().__init__(scope, id_)
        self.tags = autoscaler_tags(props.cluster_name, props.labels, props.taints, props.resources)
        for i, (key, value) in enumerate(sorted(self.tags.items())):
            AutoscalingGroupTagA(
                self,
                f"tag-{i}",
                autoscaling_group_name=props.autoscaling_group_name,
                # Not propagated: instances get their tags from the launch template.
                tag=AutoscalingGroupTagTag(key=key, value=value, propagate_at_launch=False),
            )

"""The node contract: how every gpufleet cluster marks its nodes, on every cloud, spelled once.

Triton, the GPU operator, the autoscaler and the monitoring stack select nodes with these keys, so one
nodeSelector / toleration fits every cluster, whichever cloud it runs on. A new cloud adopts this
contract; it never brings its own spelling.

- GPU nodes carry the taint `nvidia.com/gpu=present:NoSchedule`: only pods that tolerate it (Triton,
  the GPU operator's daemon sets) land there. GKE puts this very taint on GPU nodes itself, so the
  same key, value and effect on EKS and AKS means one toleration everywhere.
- Every node gpufleet creates for workloads carries `gpufleet.io/node-role` (`gpu` or `system`); the
  untainted pool for cluster services (EKS system group, GKE system pool, AKS platform pool) is the
  `system` one. GPU nodes also carry their pool, GPU model and GPU architecture.

Label keys are Kubernetes labels with a DNS prefix of our own. Each cloud takes them as node labels:
EKS node group `labels`, GKE node pool `node_config.labels` (its reserved prefixes are only
`kubernetes.io/` and `k8s.io/`), AKS `node_labels` (reserved: `kubernetes.azure.com/`,
`kubernetes.io/`, `k8s.io/`). They are *not* cloud resource tags (GCE labels forbid `.` and `/`);
those stay the `gpufleet-*` tags of stacks/context.py.

Plain Python: no cdktf, so the in-cluster layer and the tests read it without the provider bindings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LABEL_PREFIX: Final = "gpufleet.io/"
LABEL_POOL: Final = f"{LABEL_PREFIX}pool"  # the fleet.yaml pool name (or the system pool's name)
LABEL_GPU_TYPE: Final = f"{LABEL_PREFIX}gpu-type"  # catalog GPU model: a10g, l4, t4, a100-80gb ...
LABEL_GPU_ARCH: Final = f"{LABEL_PREFIX}gpu-arch"  # engines are built per architecture: sm75, sm86, sm89 ...
LABEL_NODE_ROLE: Final = f"{LABEL_PREFIX}node-role"
ROLE_GPU: Final = "gpu"
ROLE_SYSTEM: Final = "system"  # untainted nodes for cluster services (DNS, GPU operator, monitoring)

# Effects in the Kubernetes spelling; the EKS and GKE APIs spell them as enums (NO_SCHEDULE).
TAINT_EFFECTS: Final = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # Kubernetes spelling: NoSchedule, PreferNoSchedule, NoExecute

    @property
    def api_effect(self) -> str:
        """The effect as the EKS node group and GKE node pool APIs spell it (NO_SCHEDULE)."""
        return TAINT_EFFECTS[self.effect]

    def kubectl_form(self) -> str:
        """`key=value:Effect`, the form of `kubectl taint` and of AKS `node_taints`."""
        return f"{self.key}={self.value}:{self.effect}"


GPU_TAINT: Final = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")


def gpu_node_labels(pool: str, gpu_type: str, gpu_arch: str) -> dict[str, str]:
    """Kubernetes labels of the nodes of a GPU pool (values from the GPU catalog)."""
    return {
        LABEL_NODE_ROLE: ROLE_GPU,
        LABEL_POOL: pool,
        LABEL_GPU_TYPE: gpu_type,
        LABEL_GPU_ARCH: gpu_arch,
    }


def system_node_labels(pool: str) -> dict[str, str]:
    """Kubernetes labels of the untainted pool that runs cluster services."""
    return {LABEL_NODE_ROLE: ROLE_SYSTEM, LABEL_POOL: pool}


def contract_labels(labels: dict[str, str]) -> dict[str, str]:
    """The part of a node's labels that belongs to the contract (a cloud may add its own beside them)."""
    return {k: v for k, v in labels.items() if k.startswith(LABEL_PREFIX)}

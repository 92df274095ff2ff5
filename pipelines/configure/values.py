"""Helm values of the cluster roles (gpu_operator, cluster_autoscaler, monitoring), computed per node kind.

The playbook's roles stay thin: they install a pinned chart with the values computed here, passed as extra
vars (`gpu_operator_values`, `gpu_operator_enabled`, `cluster_autoscaler_values`, `monitoring_values`).
Keys follow the charts' own values.yaml at the pinned versions (playbooks/roles/*/defaults/main.yml):
NVIDIA gpu-operator v26.7.0, kubernetes/autoscaler cluster-autoscaler 9.59.0, prometheus-community
kube-prometheus-stack 88.5.3.

Who makes `nvidia.com/gpu` schedulable, per node kind (exactly one device plugin per GPU node, or kubelet
would see the same GPUs registered twice):
- eks: the AL2023 NVIDIA AMI has driver and container toolkit but no device plugin -> operator with
  driver and toolkit off, device plugin on.
- aks: `gpu_driver = Install` brings driver and toolkit, no device plugin -> same as eks.
- gke: GKE installs the driver and runs its own device plugin on GPU nodes -> the operator is NOT
  installed. An operator limited to DCGM exporter + GPU feature discovery would not start there: its
  operands run under the `nvidia` RuntimeClass, whose handler the NVIDIA container toolkit provides, and
  GKE nodes have no toolkit (GKE's device plugin mounts the driver into containers itself). Running the
  operator on GKE means taking over the device plugin (node pools labelled
  `gke-no-default-nvidia-gpu-device-plugin=true`), which the GKE stack does not do. GPU metrics on GKE
  come from Triton's own `nv_gpu_*` series; DCGM metrics there would be GKE's managed DCGM package.
- bare_metal: nothing is on the node -> everything on (driver, toolkit, device plugin), unless the host
  roles already installed driver or toolkit on the node (`driver_on_host` / `toolkit_on_host`).
- local: no Kubernetes API; every cluster role skips.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import yaml

from gpufleet.node_contract import GPU_TAINT, LABEL_NODE_ROLE, ROLE_SYSTEM
from gpufleet.spec import CloudCluster, Cluster, GpuPool, LocalCluster

NodeKind = Literal["eks", "gke", "aks", "bare_metal", "local"]
NODE_KINDS: Final[tuple[str, ...]] = get_args(NodeKind)
KIND_OF_CLOUD: Final = {"aws": "eks", "gcp": "gke", "azure": "aks", "local": "local"}

GPU_OPERATOR_NAMESPACE: Final = "gpu-operator"
MONITORING_NAMESPACE: Final = "monitoring"
# The ConfigMap the device plugin reads its sharing config from, and the config inside it that every GPU
# node uses (a per-node choice would need the nvidia.com/device-plugin.config node label).
DEVICE_PLUGIN_CONFIG_MAP: Final = "gpufleet-device-plugin-config"
DEVICE_PLUGIN_DEFAULT_CONFIG: Final = "gpufleet"
GPU_RESOURCE: Final = "nvidia.com/gpu"
# What the operator names its DCGM exporter objects (assets/state-dcgm-exporter of gpu-operator).
DCGM_EXPORTER_SERVICE_MONITOR: Final = "nvidia-dcgm-exporter"
# Triton's Prometheus endpoint (tritonserver --metrics-port default) and where its pods run (the IRSA /
# workload identity namespace of the stacks).
TRITON_METRICS_PORT: Final = 8002
TRITON_NAMESPACE: Final = "triton"
# Job and target labels the rollout's Prometheus queries read (pipelines/rollout/metrics/prometheus.py),
# the same as the local fleet's scrape config.
TRITON_JOB: Final = "triton"
CLUSTER_LABEL: Final = "cluster"
REPLICA_LABEL: Final = "replica"
# The rollout treats a sample older than 10 s as a stopped scrape (PrometheusMetrics.max_scrape_age_s).
TRITON_SCRAPE_INTERVAL: Final = "5s"

# cluster-autoscaler's minor must match the control plane's (its FAQ); the newest patch of each minor
# tagged in kubernetes/autoscaler (cluster-autoscaler-1.MINOR.PATCH), as of 2026-08-22.
CLUSTER_AUTOSCALER_IMAGE_TAGS: Final = {
    "1.30": "v1.30.7",
    "1.31": "v1.31.5",
    "1.32": "v1.32.7",
    "1.33": "v1.33.6",
    "1.34": "v1.34.5",
    "1.35": "v1.35.2",
    "1.36": "v1.36.1",
}
# Among the node groups that fit a pending pod, the one left with the least idle CPU and memory: with GPU
# groups of different sizes, the smallest GPU node that fits.
CLUSTER_AUTOSCALER_EXPANDER: Final = "least-waste"

SYSTEM_NODE_SELECTOR: Final = {LABEL_NODE_ROLE: ROLE_SYSTEM}
GPU_TOLERATION: Final = {"key": GPU_TAINT.key, "operator": "Exists", "effect": GPU_TAINT.effect}


@dataclass(frozen=True)
class GpuSharing:
    """A cluster's MIG strategy and time-slicing replicas (validation makes its pools agree)."""

    mig_strategy: str = "none"
    time_slicing_replicas: int = 1

    @classmethod
    def of_pools(cls, pools: Sequence[GpuPool]) -> GpuSharing:
        strategies = [p.mig_strategy for p in pools if p.mig_strategy != "none"]
        replicas = max((p.time_slicing_replicas for p in pools), default=1)
        return cls(mig_strategy=strategies[0] if strategies else "none", time_slicing_replicas=replicas)

    @property
    def time_sliced(self) -> bool:
        return self.time_slicing_replicas > 1


def node_kind(cluster: Cluster) -> NodeKind:
    """The node kind of a fleet.yaml cluster (bare-metal clusters come from the inventory, not the spec)."""
    kind: NodeKind = KIND_OF_CLOUD[cluster.cloud]  # type: ignore[assignment]
    return kind


def gpu_sharing(cluster: Cluster) -> GpuSharing:
    if isinstance(cluster, LocalCluster):
        return GpuSharing()
    return GpuSharing.of_pools(cluster.gpu_pools)


def _checked_kind(kind: str) -> NodeKind:
    if kind not in NODE_KINDS:
        raise ValueError(f"node kind {kind!r} is not one of {', '.join(NODE_KINDS)}")
    return kind  # type: ignore[return-value]


def gpu_operator_enabled(kind: str) -> bool:
    """Whether the GPU operator is installed at all (not on GKE, see the module docstring; not locally)."""
    return _checked_kind(kind) in ("eks", "aks", "bare_metal")


def device_plugin_config_map(sharing: GpuSharing) -> dict[str, Any]:
    """The device plugin's config (k8s-device-plugin api/config/v1) as a ConfigMap in the operator's
    namespace: the MIG strategy, and time slicing of nvidia.com/gpu when asked for."""
    config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": sharing.mig_strategy}}
    if sharing.time_sliced:
        config["sharing"] = {
            "timeSlicing": {
                # A pod asking for 2 slices would get no more GPU than 1: refuse it instead of misleading.
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": GPU_RESOURCE, "replicas": sharing.time_slicing_replicas}],
            }
        }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": DEVICE_PLUGIN_CONFIG_MAP,
            "namespace": GPU_OPERATOR_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "gpufleet"},
        },
        "data": {DEVICE_PLUGIN_DEFAULT_CONFIG: yaml.safe_dump(config, sort_keys=False)},
    }


def gpu_operator_values(
    kind: str,
    *,
    cluster_name: str,
    sharing: GpuSharing | None = None,
    driver_on_host: bool = False,
    toolkit_on_host: bool = False,
) -> dict[str, Any]:
    """Values of the gpu-operator chart for one cluster; {} where the operator is not installed."""
    if not gpu_operator_enabled(kind):
        return {}
    sharing = sharing or GpuSharing()
    managed_node = kind in ("eks", "aks")  # the cloud's GPU image brings driver and toolkit
    mig = sharing.mig_strategy != "none"
    return {
        "driver": {"enabled": not (managed_node or driver_on_host)},
        "toolkit": {"enabled": not (managed_node or toolkit_on_host)},
        "devicePlugin": {
            "enabled": True,
            # The ConfigMap is ours (extraObjects below), so it can be validated before the chart runs.
            "config": {
                "create": False,
                "name": DEVICE_PLUGIN_CONFIG_MAP,
                "default": DEVICE_PLUGIN_DEFAULT_CONFIG,
            },
        },
        "gfd": {"enabled": True},
        "dcgmExporter": {
            "enabled": True,
            "serviceMonitor": {
                "enabled": True,
                # Every series carries the fleet's cluster name, as Triton's do.
                "relabelings": [
                    {"action": "replace", "targetLabel": CLUSTER_LABEL, "replacement": cluster_name}
                ],
            },
        },
        "mig": {"strategy": sharing.mig_strategy if mig else "none"},
        # MIG manager only where MIG is used (it would otherwise run a pod per GPU node for nothing).
        "migManager": {"enabled": mig},
        # Operands (device plugin, DCGM exporter, GFD, validator) must land on the tainted GPU nodes.
        "daemonsets": {"tolerations": [GPU_TOLERATION]},
        # The operator itself and NFD's master run on the untainted system nodes.
        "operator": {"nodeSelector": dict(SYSTEM_NODE_SELECTOR)},
        "node-feature-discovery": {
            "master": {"nodeSelector": dict(SYSTEM_NODE_SELECTOR)},
            "gc": {"nodeSelector": dict(SYSTEM_NODE_SELECTOR)},
            "worker": {"tolerations": [GPU_TOLERATION]},
        },
        "extraObjects": [device_plugin_config_map(sharing)],
    }


def cluster_autoscaler_values(
    *,
    cluster_name: str,
    region: str,
    role_arn: str,
    kubernetes_version: str,
    service_account: str = "cluster-autoscaler",
) -> dict[str, Any]:
    """Values of the cluster-autoscaler chart on EKS, bound to the stack's IRSA role.

    cluster_name is the EKS name (stack output `cluster_name`), role_arn the output
    `cluster_autoscaler_role_arn`; the service account name must be the one the role trusts
    (`cluster_autoscaler_service_account`, in kube-system). Scale from zero: the node groups' Auto Scaling
    groups carry the node-template tags (modules/aws/autoscaler_tags.py), so nothing else is needed here.
    """
    tag = CLUSTER_AUTOSCALER_IMAGE_TAGS.get(kubernetes_version)
    if tag is None:
        raise ValueError(
            f"no cluster-autoscaler release known for Kubernetes {kubernetes_version}; add it to "
            "CLUSTER_AUTOSCALER_IMAGE_TAGS in pipelines/configure/values.py"
        )
    return {
        "cloudProvider": "aws",
        # The nodes allow one IMDS hop (modules/aws/node_group.py), so the pod cannot read its region there.
        "awsRegion": region,
        # Discovers groups tagged k8s.io/cluster-autoscaler/enabled and k8s.io/cluster-autoscaler/<name>.
        "autoDiscovery": {"clusterName": cluster_name},
        "image": {"tag": tag},
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": service_account,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            }
        },
        "extraArgs": {
            "expander": CLUSTER_AUTOSCALER_EXPANDER,
            "balance-similar-node-groups": True,
            # DaemonSet pods (device plugin, DCGM exporter) alone do not keep an idle GPU node.
            "ignore-daemonsets-utilization": True,
        },
        "nodeSelector": dict(SYSTEM_NODE_SELECTOR),
    }


def triton_scrape_config(cluster_name: str, namespace: str = TRITON_NAMESPACE) -> dict[str, Any]:
    """A Prometheus scrape job for Triton pods' :8002/metrics, labelled as the rollout queries expect."""
    return {
        "job_name": TRITON_JOB,
        "scrape_interval": TRITON_SCRAPE_INTERVAL,
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                "action": "keep",
                "regex": str(TRITON_METRICS_PORT),
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": REPLICA_LABEL},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
            {"target_label": CLUSTER_LABEL, "replacement": cluster_name},
        ],
    }


def monitoring_values(
    kind: str, *, cluster_name: str, triton_namespace: str = TRITON_NAMESPACE
) -> dict[str, Any]:
    """Values of kube-prometheus-stack: Triton scraped by a job of our own, DCGM by the operator's
    ServiceMonitor (every ServiceMonitor and PodMonitor of every namespace is selected: the operator's
    carries none of this release's labels). {} locally."""
    if _checked_kind(kind) == "local":
        return {}
    on_system_nodes = {"nodeSelector": dict(SYSTEM_NODE_SELECTOR)}
    return {
        "prometheus": {
            "prometheusSpec": {
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "serviceMonitorSelector": {},
                "serviceMonitorNamespaceSelector": {},
                "podMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelector": {},
                "podMonitorNamespaceSelector": {},
                "additionalScrapeConfigs": [triton_scrape_config(cluster_name, triton_namespace)],
                **on_system_nodes,
            }
        },
        "prometheusOperator": {**on_system_nodes, "admissionWebhooks": {"patch": on_system_nodes}},
        "alertmanager": {"alertmanagerSpec": on_system_nodes},
        "grafana": on_system_nodes,
        "kube-state-metrics": on_system_nodes,
        # Node metrics from GPU nodes too.
        "prometheus-node-exporter": {"tolerations": [GPU_TOLERATION]},
    }


@dataclass(frozen=True)
class ClusterValues:
    """Every extra var the cluster roles read, for one cluster."""

    node_kind: str
    cluster_name: str
    gpu_operator_enabled: bool
    gpu_operator_values: dict[str, Any]
    cluster_autoscaler_values: dict[str, Any]
    monitoring_values: dict[str, Any]

    def extra_vars(self) -> dict[str, Any]:
        # Through JSON: plain dicts/lists/str/int/bool only, as Ansible receives them.
        return dict(json.loads(json.dumps(self.__dict__)))


def cluster_values(cluster: CloudCluster | LocalCluster, outputs: dict[str, Any]) -> ClusterValues:
    """The roles' extra vars for a fleet.yaml cluster from its stack outputs (stacks/aws.py names):
    EKS needs `cluster_name`, `region`, `cluster_autoscaler_role_arn` (and may carry
    `cluster_autoscaler_service_account`, `triton_namespace`)."""
    kind = node_kind(cluster)
    name = str(outputs.get("cluster_name", cluster.name))
    autoscaler: dict[str, Any] = {}
    if kind == "eks" and not isinstance(cluster, LocalCluster):
        autoscaler = cluster_autoscaler_values(
            cluster_name=name,
            region=str(outputs["region"]),
            role_arn=str(outputs["cluster_autoscaler_role_arn"]),
            kubernetes_version=cluster.kubernetes_version,
            service_account=str(outputs.get("cluster_autoscaler_service_account", "cluster-autoscaler")),
        )
    return ClusterValues(
        node_kind=kind,
        cluster_name=name,
        gpu_operator_enabled=gpu_operator_enabled(kind),
        gpu_operator_values=gpu_operator_values(
            kind, cluster_name=cluster.name, sharing=gpu_sharing(cluster)
        ),
        cluster_autoscaler_values=autoscaler,
        monitoring_values=monitoring_values(
            kind,
            cluster_name=cluster.name,
            triton_namespace=str(outputs.get("triton_namespace", TRITON_NAMESPACE)),
        ),
    )

"""Helm values of the cluster roles: GPUs schedulable exactly once on EKS, GKE, AKS and bare metal, the
autoscaler bound to the stack's IRSA role, Triton and DCGM scraped; emitted Kubernetes objects valid.

Expected values come from the charts' own values.yaml at the pinned versions and from the clouds' docs,
written down below as facts (not read from pipelines/configure/values.py).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gpufleet.spec import AwsCluster, AzureCluster, GcpCluster, LocalCluster, load_fleet
from pipelines.configure import values as cv
from tests.conftest import REPO

# --- facts -------------------------------------------------------------------------------------------

# NVIDIA/gpu-operator deployments/gpu-operator/values.yaml at tag v26.7.0: the defaults of the parts
# that decide who installs what (every component on, MIG strategy single).
GPU_OPERATOR_DEFAULTS: dict[str, Any] = {
    "driver": {"enabled": True},
    "toolkit": {"enabled": True},
    "devicePlugin": {"enabled": True, "config": {"create": False, "name": "", "default": "", "data": {}}},
    "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": True, "relabelings": []}},
    "gfd": {"enabled": True},
    "mig": {"strategy": "single"},
    "migManager": {"enabled": True},
    "daemonsets": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    "operator": {"nodeSelector": {"kubernetes.io/os": "linux"}},
    "extraObjects": [],
    "node-feature-discovery": {"master": {}, "gc": {}, "worker": {"tolerations": []}},
}
# Value paths that exist in that chart (and in its node-feature-discovery 0.19.0 dependency: master, gc
# and worker take nodeSelector/tolerations). Maps under these paths are free-form (labels, selectors).
GPU_OPERATOR_PATHS = {
    "driver.enabled",
    "toolkit.enabled",
    "devicePlugin.enabled",
    "devicePlugin.config.create",
    "devicePlugin.config.name",
    "devicePlugin.config.default",
    "gfd.enabled",
    "dcgmExporter.enabled",
    "dcgmExporter.serviceMonitor.enabled",
    "dcgmExporter.serviceMonitor.relabelings",
    "mig.strategy",
    "migManager.enabled",
    "daemonsets.tolerations",
    "operator.nodeSelector",
    "extraObjects",
    "node-feature-discovery.master.nodeSelector",
    "node-feature-discovery.gc.nodeSelector",
    "node-feature-discovery.worker.tolerations",
}
# kubernetes/autoscaler charts/cluster-autoscaler/values.yaml at cluster-autoscaler-chart-9.59.0.
AUTOSCALER_DEFAULT_DISCOVERY_TAGS = [
    "k8s.io/cluster-autoscaler/enabled",
    "k8s.io/cluster-autoscaler/{{ .Values.autoDiscovery.clusterName }}",
]
AUTOSCALER_PATHS = {
    "cloudProvider",
    "awsRegion",
    "autoDiscovery.clusterName",
    "image.tag",
    "rbac.serviceAccount.create",
    "rbac.serviceAccount.name",
    "rbac.serviceAccount.annotations",
    "extraArgs",
    "nodeSelector",
}
# prometheus-community kube-prometheus-stack values.yaml at 88.5.3 (a `*SelectorNilUsesHelmValues: true`
# default selects only monitors labelled release=<release>; the operator's DCGM ServiceMonitor is not).
KPS_PATHS = {
    "prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues",
    "prometheus.prometheusSpec.serviceMonitorSelector",
    "prometheus.prometheusSpec.serviceMonitorNamespaceSelector",
    "prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues",
    "prometheus.prometheusSpec.podMonitorSelector",
    "prometheus.prometheusSpec.podMonitorNamespaceSelector",
    "prometheus.prometheusSpec.additionalScrapeConfigs",
    "prometheus.prometheusSpec.nodeSelector",
    "prometheusOperator.nodeSelector",
    "prometheusOperator.admissionWebhooks.patch.nodeSelector",
    "alertmanager.alertmanagerSpec.nodeSelector",
    "grafana.nodeSelector",
    "kube-state-metrics.nodeSelector",
    "prometheus-node-exporter.tolerations",
}
# Who brings a device plugin before the operator: GKE runs its own on GPU nodes (GKE docs, "Manage the GPU
# stack with the NVIDIA GPU Operator on GKE": the operator's plugin is used only on node pools labelled
# gke-no-default-nvidia-gpu-device-plugin=true); the EKS AL2023 NVIDIA AMI and AKS gpu_driver=Install bring
# driver and toolkit but no device plugin (docs/DESIGN.md, issue 12); bare metal brings nothing.
CLOUD_DEVICE_PLUGIN = {"eks": False, "aks": False, "gke": True, "bare_metal": False}
CLOUD_DRIVER = {"eks": True, "aks": True, "gke": True, "bare_metal": False}
# NVIDIA/k8s-device-plugin api/config/v1 (json tags): the config file's keys.
DEVICE_PLUGIN_CONFIG_KEYS = {"version", "flags", "resources", "sharing", "imex"}
TIME_SLICING_KEYS = {"renameByDefault", "failRequestsGreaterThanOne", "resources"}
REPLICATED_RESOURCE_KEYS = {"name", "rename", "devices", "replicas"}
KUBERNETES_VERSION = "1.35.0"
# The node contract: GPU nodes are tainted nvidia.com/gpu=present:NoSchedule, system nodes labelled.
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
SYSTEM_LABELS = {"gpufleet.io/node-role": "system"}


def merged(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values over chart defaults: maps merge, everything else replaces."""
    out = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def leaf_paths(values: dict[str, Any], free_maps: frozenset[str] = frozenset()) -> set[str]:
    paths: set[str] = set()
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in free_maps:
            paths |= {f"{key}.{p}" for p in leaf_paths(value, free_maps)}
        else:
            paths.add(key)
    return paths


FREE_MAPS = frozenset({"nodeSelector", "annotations", "extraArgs", "serviceMonitorSelector"})


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    """Kubernetes toleration matching (key, operator Exists/Equal, effect)."""
    for t in tolerations:
        key_ok = t.get("key") in (None, taint["key"])
        value_ok = t.get("operator") == "Exists" or t.get("value") == taint["value"]
        effect_ok = t.get("effect") in (None, "", taint["effect"])
        if key_ok and value_ok and effect_ok:
            return True
    return False


def operator_values(kind: str, **kw: Any) -> dict[str, Any]:
    return cv.gpu_operator_values(kind, cluster_name="c1", **kw)


# --- GPU operator ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["eks", "gke", "aks", "bare_metal"])
def test_gpus_are_registered_by_exactly_one_device_plugin(kind: str) -> None:
    enabled = cv.gpu_operator_enabled(kind)
    chart = merged(GPU_OPERATOR_DEFAULTS, operator_values(kind)) if enabled else None
    plugins = [name for name, on in [("cloud", CLOUD_DEVICE_PLUGIN[kind])] if on]
    if chart is not None and chart["devicePlugin"]["enabled"]:
        plugins.append("gpu-operator")
    assert len(plugins) == 1, f"{kind}: device plugins {plugins}"
    drivers = [name for name, on in [("image", CLOUD_DRIVER[kind])] if on]
    if chart is not None and chart["driver"]["enabled"]:
        drivers.append("gpu-operator")
    assert len(drivers) == 1, f"{kind}: drivers {drivers}"


def test_gke_gets_no_operator_and_bare_metal_gets_everything() -> None:
    assert not cv.gpu_operator_enabled("gke") and cv.gpu_operator_values("gke", cluster_name="g") == {}
    chart = merged(GPU_OPERATOR_DEFAULTS, operator_values("bare_metal"))
    assert chart["driver"]["enabled"] and chart["toolkit"]["enabled"] and chart["devicePlugin"]["enabled"]
    for kind in ("eks", "aks"):
        chart = merged(GPU_OPERATOR_DEFAULTS, operator_values(kind))
        assert (chart["driver"]["enabled"], chart["toolkit"]["enabled"]) == (False, False), kind


def test_bare_metal_keeps_what_the_host_roles_installed() -> None:
    chart = merged(
        GPU_OPERATOR_DEFAULTS, operator_values("bare_metal", driver_on_host=True, toolkit_on_host=True)
    )
    assert (chart["driver"]["enabled"], chart["toolkit"]["enabled"], chart["devicePlugin"]["enabled"]) == (
        False,
        False,
        True,
    )


def test_local_clusters_get_nothing_and_unknown_kinds_are_refused() -> None:
    assert not cv.gpu_operator_enabled("local")
    assert cv.gpu_operator_values("local", cluster_name="l") == {}
    assert cv.monitoring_values("local", cluster_name="l") == {}
    with pytest.raises(ValueError, match="node kind 'ec2'"):
        cv.gpu_operator_enabled("ec2")


@pytest.mark.parametrize("kind", ["eks", "aks", "bare_metal"])
def test_operator_values_use_only_the_charts_keys(kind: str) -> None:
    values = operator_values(kind, sharing=cv.GpuSharing("mixed", 4))
    assert leaf_paths(values, FREE_MAPS) <= GPU_OPERATOR_PATHS


@pytest.mark.parametrize("kind", ["eks", "aks", "bare_metal"])
def test_operands_land_on_gpu_nodes_and_the_operator_on_system_nodes(kind: str) -> None:
    chart = merged(GPU_OPERATOR_DEFAULTS, operator_values(kind))
    assert tolerates(chart["daemonsets"]["tolerations"], GPU_TAINT)
    assert tolerates(chart["node-feature-discovery"]["worker"]["tolerations"], GPU_TAINT)
    for selector in (
        chart["operator"]["nodeSelector"],
        chart["node-feature-discovery"]["master"]["nodeSelector"],
        chart["node-feature-discovery"]["gc"]["nodeSelector"],
    ):
        assert SYSTEM_LABELS.items() <= selector.items()


def test_dcgm_exporter_has_a_service_monitor_labelled_with_the_cluster() -> None:
    chart = merged(GPU_OPERATOR_DEFAULTS, cv.gpu_operator_values("eks", cluster_name="aws-use1"))
    monitor = chart["dcgmExporter"]["serviceMonitor"]
    assert chart["dcgmExporter"]["enabled"] and monitor["enabled"]
    assert {"action": "replace", "targetLabel": "cluster", "replacement": "aws-use1"} in monitor[
        "relabelings"
    ]


def objects_of(values: dict[str, Any]) -> list[dict[str, Any]]:
    return list(values.get("extraObjects", []))


@pytest.mark.parametrize(
    ("mig", "replicas"), [("none", 1), ("none", 4), ("single", 1), ("mixed", 7)], ids=str
)
def test_device_plugin_config_map_is_valid_and_carries_the_spec(mig: str, replicas: int) -> None:
    values = operator_values("eks", sharing=cv.GpuSharing(mig, replicas))
    chart = merged(GPU_OPERATOR_DEFAULTS, values)
    (config_map,) = [o for o in objects_of(values) if o["kind"] == "ConfigMap"]
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    plugin = chart["devicePlugin"]["config"]
    # The chart's own validation: create=true needs data; ours is an extra object, so create stays false.
    assert plugin["create"] is False and plugin["data"] == {}
    assert config_map["metadata"]["name"] == plugin["name"]
    assert config_map["metadata"]["namespace"] == gpu_operator_namespace()
    config = yaml.safe_load(config_map["data"][plugin["default"]])
    assert set(config) <= DEVICE_PLUGIN_CONFIG_KEYS and config["version"] == "v1"
    assert config["flags"]["migStrategy"] == mig
    assert chart["mig"]["strategy"] == mig and chart["migManager"]["enabled"] == (mig != "none")
    if replicas == 1:
        assert "sharing" not in config
    else:
        slicing = config["sharing"]["timeSlicing"]
        assert set(slicing) <= TIME_SLICING_KEYS
        (resource,) = slicing["resources"]
        assert set(resource) <= REPLICATED_RESOURCE_KEYS
        assert resource == {"name": "nvidia.com/gpu", "replicas": replicas}


def test_sharing_comes_from_the_fleet_pools() -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    aws = next(c for c in fleet.cloud_clusters() if isinstance(c, AwsCluster))
    assert cv.gpu_sharing(aws) == cv.GpuSharing("none", 1)
    pool = aws.gpu_pools[0].model_copy(update={"time_slicing_replicas": 3})
    assert cv.gpu_sharing(aws.model_copy(update={"gpu_pools": [pool]})) == cv.GpuSharing("none", 3)


# --- cluster-autoscaler ------------------------------------------------------------------------------

ROLE_ARN = "arn:aws:iam::123456789012:role/prod-aws-use1-cluster-autoscaler"


def eks_outputs(cluster: AwsCluster) -> dict[str, Any]:
    """Stack outputs as `cdktf output` gives them after deploy (names from the synthesized stack)."""
    return {
        "cluster_name": f"prod-{cluster.name}",
        "region": cluster.region,
        "cluster_autoscaler_role_arn": ROLE_ARN,
        "cluster_autoscaler_namespace": "kube-system",
        "cluster_autoscaler_service_account": "cluster-autoscaler",
        "triton_namespace": "triton",
    }


def test_autoscaler_is_bound_to_the_irsa_role_output() -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    aws = next(c for c in fleet.cloud_clusters() if isinstance(c, AwsCluster))
    outputs = eks_outputs(aws)
    found = cv.cluster_values(aws, outputs)
    values = found.cluster_autoscaler_values
    assert found.node_kind == "eks"
    assert leaf_paths(values, FREE_MAPS) <= AUTOSCALER_PATHS
    account = values["rbac"]["serviceAccount"]
    assert account["annotations"] == {"eks.amazonaws.com/role-arn": ROLE_ARN}
    # The role trusts system:serviceaccount:kube-system:cluster-autoscaler (tests/cloud/test_aws_stacks.py).
    assert account["create"] is True and account["name"] == outputs["cluster_autoscaler_service_account"]
    assert values["cloudProvider"] == "aws" and values["awsRegion"] == aws.region
    # The chart discovers the groups carrying its default tags for this cluster name: the tags the IRSA
    # policy conditions on and the node groups' Auto Scaling groups carry.
    tags = [
        t.replace("{{ .Values.autoDiscovery.clusterName }}", values["autoDiscovery"]["clusterName"])
        for t in AUTOSCALER_DEFAULT_DISCOVERY_TAGS
    ]
    assert tags == [
        "k8s.io/cluster-autoscaler/enabled",
        f"k8s.io/cluster-autoscaler/{outputs['cluster_name']}",
    ]
    # Its minor follows the control plane's (cluster-autoscaler FAQ).
    assert values["image"]["tag"].startswith(f"v{aws.kubernetes_version}.")
    assert values["extraArgs"]["expander"] in {
        "random",
        "most-pods",
        "least-waste",
        "price",
        "priority",
        "grpc",
    }
    assert SYSTEM_LABELS.items() <= values["nodeSelector"].items()


def test_every_eks_version_has_an_autoscaler_release() -> None:
    from gpufleet import catalog

    for version in catalog.kubernetes_versions().by_cloud["aws"]:
        tag = cv.cluster_autoscaler_values(
            cluster_name="c", region="us-east-1", role_arn=ROLE_ARN, kubernetes_version=version
        )["image"]["tag"]
        assert tag.startswith(f"v{version}.")


def test_only_eks_gets_autoscaler_values() -> None:
    fleet = load_fleet(REPO / "fleet.yaml")
    for cluster in fleet.clusters:
        if isinstance(cluster, AwsCluster):
            continue
        found = cv.cluster_values(cluster, {})
        assert found.cluster_autoscaler_values == {}
        expected_kind = {GcpCluster: "gke", AzureCluster: "aks", LocalCluster: "local"}[type(cluster)]
        assert found.node_kind == expected_kind
        assert found.gpu_operator_enabled == (expected_kind == "aks")


# --- monitoring --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["eks", "gke", "aks", "bare_metal"])
def test_prometheus_selects_every_monitor_and_scrapes_triton(kind: str) -> None:
    values = cv.monitoring_values(kind, cluster_name="aws-use1")
    assert leaf_paths(values, FREE_MAPS) <= KPS_PATHS
    spec = values["prometheus"]["prometheusSpec"]
    # Not the release-label default: the operator's DCGM ServiceMonitor (labelled app only) must be selected.
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False and spec["serviceMonitorSelector"] == {}
    assert spec["serviceMonitorNamespaceSelector"] == {}
    (job,) = [j for j in spec["additionalScrapeConfigs"] if j["job_name"] == "triton"]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep == [
        {"source_labels": ["__meta_kubernetes_pod_container_port_number"], "action": "keep", "regex": "8002"}
    ]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["triton"]}}]
    # The rollout reads job=triton with cluster and replica labels (pipelines/rollout/metrics/prometheus.py).
    targets = {r.get("target_label"): r for r in job["relabel_configs"]}
    assert targets["cluster"]["replacement"] == "aws-use1"
    assert targets["replica"]["source_labels"] == ["__meta_kubernetes_pod_name"]
    assert tolerates(values["prometheus-node-exporter"]["tolerations"], GPU_TAINT)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian prometheus package) not installed"
)
def test_triton_scrape_job_is_a_valid_prometheus_config(tmp_path: Path) -> None:
    spec = cv.monitoring_values("eks", cluster_name="aws-use1")["prometheus"]["prometheusSpec"]
    jobs = copy.deepcopy(spec["additionalScrapeConfigs"])
    for job in jobs:
        # Debian's promtool is built without Kubernetes service discovery: check everything else (relabel
        # rules, interval, path) with a static target in its place.
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:8002"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": jobs}))
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- roles and values agree ----------------------------------------------------------------------------


def role_defaults(role: str) -> dict[str, Any]:
    path = REPO / "playbooks" / "roles" / role / "defaults" / "main.yml"
    return dict(yaml.safe_load(path.read_text()))


def gpu_operator_namespace() -> str:
    return str(role_defaults("gpu_operator")["gpu_operator_namespace"])


def test_roles_pin_the_chart_versions_whose_keys_are_checked_here() -> None:
    assert role_defaults("gpu_operator")["gpu_operator_chart_version"] == "v26.7.0"
    assert role_defaults("cluster_autoscaler")["cluster_autoscaler_chart_version"] == "9.59.0"
    assert role_defaults("monitoring")["kube_prometheus_stack_chart_version"] == "88.5.3"
    assert role_defaults("cluster_autoscaler")["cluster_autoscaler_namespace"] == "kube-system"


CLUSTER_ROLES_PLAY = """
- name: The cluster roles alone
  hosts: all
  connection: local
  gather_facts: false
  roles:
    - role: gpu_operator
    - role: cluster_autoscaler
    - role: monitoring
"""


@pytest.mark.parametrize("kind", ["local", "gke"])
def test_cluster_roles_skip_where_there_is_nothing_to_install(tmp_path: Path, kind: str) -> None:
    """Local: no Kubernetes API, every role skips. GKE: the operator and autoscaler roles skip with their
    reasons (monitoring would install there, so the play leaves it out)."""
    play = tmp_path / "play.yml"
    play.write_text(
        CLUSTER_ROLES_PLAY if kind == "local" else CLUSTER_ROLES_PLAY.replace("    - role: monitoring\n", "")
    )
    env = {
        "ANSIBLE_ROLES_PATH": str(REPO / "playbooks" / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": "/usr/bin:/bin",
    }
    playbook = REPO / ".venv" / "bin" / "ansible-playbook"
    extra = f'{{"node_kind": "{kind}", "gpu_operator_enabled": false, "kubeconfig": "/nonexistent"}}'
    result = subprocess.run(
        [str(playbook), "-i", "localhost,", "-e", extra, str(play)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = result.stdout.rsplit("PLAY RECAP", 1)[1]
    assert "changed=0" in recap and "failed=0" in recap
    if kind == "local":
        assert "local cluster: no Kubernetes API" in result.stdout
    else:
        assert "GKE installs the driver and runs its own device plugin" in result.stdout
        assert "cluster-autoscaler is installed on eks only" in result.stdout

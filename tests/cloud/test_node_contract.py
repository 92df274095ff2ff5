"""One node contract on every cloud: the synthesized GPU and system pools of EKS, GKE and AKS carry the same
taint and the same label keys, so one Triton nodeSelector + toleration fits every cluster.

Each cloud's API spells taints its own way (EKS/GKE: an object with an enum effect; AKS: `k=v:Effect`
strings); the normalization below is written here from the providers' documentation, not taken from the
code under test. Expected label values are independent facts: the A10G of g5.xlarge is compute capability
8.6 (sm86), the L4 of g2-standard-4 8.9 (sm89), the T4 of Standard_NC4as_T4_v3 7.5 (sm75).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cloud.conftest import FLEET_DOC, Synthesized

# Every GPU node: this taint, whatever the cloud (the one GKE itself puts on GPU nodes).
EXPECTED_TAINT = ("nvidia.com/gpu", "present", "NoSchedule")
# What Triton selects on and what the in-cluster layer schedules cluster services with.
GPU_SELECTOR = {"gpufleet.io/node-role": "gpu"}
SYSTEM_SELECTOR = {"gpufleet.io/node-role": "system"}
CONTRACT_KEYS = {"gpufleet.io/node-role", "gpufleet.io/pool", "gpufleet.io/gpu-type", "gpufleet.io/gpu-arch"}
# GPU model and CUDA compute capability of the example fleet's instance types (NVIDIA / provider docs).
GPU_FACTS = {
    "g5.xlarge": ("a10g", "sm86"),
    "g2-standard-4": ("l4", "sm89"),
    "Standard_NC4as_T4_v3": ("t4", "sm75"),
}
API_EFFECTS = {
    "NO_SCHEDULE": "NoSchedule",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    "NO_EXECUTE": "NoExecute",
}
# Kubernetes label syntax: optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
LABEL_KEY = re.compile(rf"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{LABEL_NAME}")
LABEL_VALUE = re.compile(rf"{LABEL_NAME}?")
# Prefixes each cloud reserves for itself in node labels (GKE: kubernetes.io/, k8s.io/; AKS adds
# kubernetes.azure.com/); the contract must use none of them.
RESERVED_PREFIXES = ("kubernetes.io/", "k8s.io/", "kubernetes.azure.com/")


@dataclass(frozen=True)
class Pool:
    labels: dict[str, str]
    taints: set[tuple[str, str, str]]


def _object_taints(taints: list[dict[str, str]] | None) -> set[tuple[str, str, str]]:
    return {(t["key"], t["value"], API_EFFECTS[t["effect"]]) for t in taints or []}


def _string_taints(taints: list[str] | None) -> set[tuple[str, str, str]]:
    parsed = set()
    for taint in taints or []:
        match = re.fullmatch(r"([^=]+)=([^:]*):(\w+)", taint)
        assert match, taint
        parsed.add((match.group(1), match.group(2), match.group(3)))
    return parsed


def _cluster(cloud: str) -> dict[str, Any]:
    (cluster,) = [c for c in FLEET_DOC["clusters"] if c["cloud"] == cloud]
    return dict(cluster)


def _resources(synth: Synthesized, cluster: str, rtype: str, prefix: str = "prod") -> list[dict[str, Any]]:
    return list(synth.resources(f"{prefix}-{cluster}", rtype).values())


def gpu_and_system_pools(synth: Synthesized, prefix: str = "prod") -> dict[str, tuple[Pool, Pool]]:
    """cloud -> (the example's GPU pool, the untainted pool for cluster services), as synthesized."""
    found: dict[str, tuple[Pool, Pool]] = {}
    aws = _cluster("aws")
    groups = {g["node_group_name"]: g for g in _resources(synth, aws["name"], "aws_eks_node_group", prefix)}
    gpu, system = groups[f"gpu-{aws['gpu_pools'][0]['name']}"], groups["system"]
    found["aws"] = (
        Pool(gpu["labels"], _object_taints(gpu.get("taint"))),
        Pool(system["labels"], _object_taints(system.get("taint"))),
    )
    gcp = _cluster("gcp")
    pools = {p["name"]: p for p in _resources(synth, gcp["name"], "google_container_node_pool", prefix)}
    gpu, system = pools[gcp["gpu_pools"][0]["name"]]["node_config"], pools["system"]["node_config"]
    found["gcp"] = (
        Pool(gpu["labels"], _object_taints(gpu.get("taint"))),
        Pool(system["labels"], _object_taints(system.get("taint"))),
    )
    azure = _cluster("azure")
    pools = {
        p["name"]: p for p in _resources(synth, azure["name"], "azurerm_kubernetes_cluster_node_pool", prefix)
    }
    gpu, system = pools[azure["gpu_pools"][0]["name"]], pools["platform"]
    found["azure"] = (
        Pool(gpu["node_labels"], _string_taints(gpu.get("node_taints"))),
        Pool(system["node_labels"], _string_taints(system.get("node_taints"))),
    )
    return found


def contract_part(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith("gpufleet.io/")}


def test_gpu_pools_carry_the_same_taint_and_label_keys_on_every_cloud(synthesized: Synthesized) -> None:
    pools = gpu_and_system_pools(synthesized)
    assert set(pools) == {"aws", "gcp", "azure"}
    for cloud, (gpu, _) in pools.items():
        # On-demand pools carry exactly the GPU taint (spot AKS pools add AKS's own spot taint).
        assert gpu.taints == {EXPECTED_TAINT}, cloud
        assert set(contract_part(gpu.labels)) == CONTRACT_KEYS, cloud
    assert len({frozenset(contract_part(gpu.labels)) for gpu, _ in pools.values()}) == 1


def test_gpu_label_values_come_from_the_gpu_facts(synthesized: Synthesized) -> None:
    for cloud, (gpu, _) in gpu_and_system_pools(synthesized).items():
        pool = _cluster(cloud)["gpu_pools"][0]
        gpu_type, gpu_arch = GPU_FACTS[pool["instance_type"]]
        assert contract_part(gpu.labels) == {
            "gpufleet.io/node-role": "gpu",
            "gpufleet.io/pool": pool["name"],
            "gpufleet.io/gpu-type": gpu_type,
            "gpufleet.io/gpu-arch": gpu_arch,
        }, cloud


def test_system_pools_are_untainted_and_carry_the_system_role(synthesized: Synthesized) -> None:
    pools = gpu_and_system_pools(synthesized)
    for cloud, (_, system) in pools.items():
        assert system.taints == set(), cloud
        assert set(contract_part(system.labels)) == {"gpufleet.io/node-role", "gpufleet.io/pool"}, cloud
        assert contract_part(system.labels)["gpufleet.io/node-role"] == "system"


def test_one_selector_and_toleration_fit_every_cluster(synthesized: Synthesized) -> None:
    """Triton's nodeSelector + toleration (written once) match every cloud's GPU pool and no other pool;
    the system selector matches only untainted pools."""
    toleration = EXPECTED_TAINT
    for cloud, (gpu, system) in gpu_and_system_pools(synthesized).items():
        assert GPU_SELECTOR.items() <= gpu.labels.items() and toleration in gpu.taints, cloud
        assert not GPU_SELECTOR.items() <= system.labels.items(), cloud
        assert SYSTEM_SELECTOR.items() <= system.labels.items() and not system.taints, cloud
        assert not SYSTEM_SELECTOR.items() <= gpu.labels.items(), cloud


@pytest.mark.parametrize("which", ["prod", "preview"])
def test_contract_labels_are_valid_node_labels_on_every_cloud(
    which: str, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized if which == "prod" else synthesized_preview
    prefix = _preview_prefix(synth) if which == "preview" else "prod"
    for cloud, pools in gpu_and_system_pools(synth, prefix).items():
        for pool in pools:
            for key, value in contract_part(pool.labels).items():
                assert LABEL_KEY.fullmatch(key) and len(key.split("/")[0]) <= 253, (cloud, key)
                assert LABEL_VALUE.fullmatch(value), (cloud, key, value)
                assert not key.startswith(RESERVED_PREFIXES), (cloud, key)


def test_preview_pools_follow_the_same_contract(synthesized_preview: Synthesized) -> None:
    pools = gpu_and_system_pools(synthesized_preview, _preview_prefix(synthesized_preview))
    for cloud, (gpu, system) in pools.items():
        assert EXPECTED_TAINT in gpu.taints, cloud  # spot pools may add their cloud's own spot taint
        assert set(contract_part(gpu.labels)) == CONTRACT_KEYS, cloud
        assert contract_part(system.labels)["gpufleet.io/node-role"] == "system", cloud


def _preview_prefix(synth: Synthesized) -> str:
    """The preview environment name: the stack names are `<env>-<cluster>`."""
    cluster = _cluster("aws")["name"]
    (name,) = [n for n in synth.stack_names() if n.endswith(f"-{cluster}")]
    return name.removesuffix(f"-{cluster}")

"""The packaged GPU catalog: the types fleets rely on are there, and their fields are sane."""

from __future__ import annotations

import re

import pytest

from gpufleet import catalog

REQUIRED = {
    "aws": [
        "g5.xlarge",
        "g5.2xlarge",
        "g5.12xlarge",
        "g5.48xlarge",
        "g6.xlarge",
        "g6.12xlarge",
        "p4d.24xlarge",
        "p5.48xlarge",
    ],
    "gcp": [
        "g2-standard-4",
        "g2-standard-24",
        "a2-highgpu-1g",
        "a2-highgpu-8g",
        "a2-ultragpu-1g",
        "a3-highgpu-8g",
    ],
    "azure": [
        "Standard_NC4as_T4_v3",
        "Standard_NC24ads_A100_v4",
        "Standard_NC96ads_A100_v4",
        "Standard_ND96asr_v4",
        "Standard_ND96isr_H100_v5",
        "Standard_NC40ads_H100_v5",
    ],
}

# What each GPU model is, independent of the catalog file: a typo there shows up as a mismatch here.
GPU_ARCH = {
    "t4": "sm75",
    "v100": "sm70",
    "a10": "sm86",
    "a10g": "sm86",
    "l4": "sm89",
    "l40s": "sm89",
    "a100-40gb": "sm80",
    "a100-80gb": "sm80",
    "h100-80gb": "sm90",
    "h100-nvl": "sm90",
    "h200": "sm90",
}
GKE_ACCELERATOR = {
    "l4": "nvidia-l4",
    "a100-40gb": "nvidia-tesla-a100",
    "a100-80gb": "nvidia-a100-80gb",
    "h100-80gb": "nvidia-h100-80gb",
}


@pytest.mark.parametrize("cloud", sorted(REQUIRED))
def test_required_types_are_known(cloud: str) -> None:
    known = catalog.known_instance_types(cloud)
    assert set(REQUIRED[cloud]) <= set(known)
    assert [t.name for t in catalog.instance_types(cloud)] == known


@pytest.mark.parametrize("cloud", sorted(REQUIRED))
def test_entries_are_consistent(cloud: str) -> None:
    for entry in catalog.instance_types(cloud):
        assert entry.cloud == cloud
        assert GPU_ARCH[entry.gpu] == entry.gpu_arch, entry
        assert re.fullmatch(r"sm\d{2,3}", entry.gpu_arch)
        assert entry.gpus in (1, 2, 4, 8)
        assert entry.vcpus >= 4 and entry.memory_gib >= 16
        # Approximate prices, but of the right order: cents to low hundreds of dollars per hour.
        assert 0.1 < entry.on_demand_usd_per_hour < 150
        if cloud == "gcp":
            assert entry.accelerator == GKE_ACCELERATOR[entry.gpu]
        else:
            assert entry.accelerator is None


def test_known_values_of_a_few_types() -> None:
    g5 = catalog.instance_type("aws", "g5.12xlarge")
    assert g5 is not None and (g5.gpu, g5.gpus, g5.gpu_arch) == ("a10g", 4, "sm86")
    a3 = catalog.instance_type("gcp", "a3-highgpu-8g")
    assert a3 is not None and (a3.gpu, a3.gpus, a3.accelerator) == ("h100-80gb", 8, "nvidia-h100-80gb")
    nd = catalog.instance_type("azure", "Standard_ND96asr_v4")
    assert nd is not None and (nd.gpu, nd.gpus) == ("a100-40gb", 8)


def test_bigger_sizes_of_a_family_cost_more() -> None:
    def price(cloud: str, name: str) -> float:
        entry = catalog.instance_type(cloud, name)
        assert entry is not None
        return entry.on_demand_usd_per_hour

    assert price("aws", "g5.xlarge") < price("aws", "g5.12xlarge") < price("aws", "g5.48xlarge")
    assert price("gcp", "a2-highgpu-1g") < price("gcp", "a2-highgpu-8g")
    assert price("azure", "Standard_NC24ads_A100_v4") < price("azure", "Standard_NC96ads_A100_v4")


def test_unknown_lookups() -> None:
    assert catalog.instance_type("aws", "g5.xlarg") is None
    assert catalog.instance_type("gcp", "g5.xlarge") is None  # names are per cloud
    assert catalog.instance_type("local", "g5.xlarge") is None
    assert catalog.known_instance_types("local") == []

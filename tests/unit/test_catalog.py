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


# --- zones that offer each GKE accelerator ---------------------------------------------------------


def test_every_gke_accelerator_in_the_catalog_has_zones() -> None:
    for entry in catalog.instance_types("gcp"):
        assert entry.accelerator is not None
        zones = catalog.gcp_accelerator_zones(entry.accelerator)
        assert zones is not None and zones.by_region, entry.name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", zones.as_of)
        for region, region_zones in zones.by_region.items():
            assert all(re.fullmatch(rf"{region}-[a-z]", z) for z in region_zones), (region, region_zones)
            assert len(set(region_zones)) == len(region_zones)


def test_known_gpu_zones() -> None:
    # From Compute Engine's GPU regions and zones: L4 in us-central1 a/b/c (not f), A100 40GB also in
    # us-central1-f, H100 80GB in europe-west4 b/c.
    l4 = catalog.gcp_accelerator_zones("nvidia-l4")
    assert l4 is not None and l4.by_region["us-central1"] == (
        "us-central1-a",
        "us-central1-b",
        "us-central1-c",
    )
    a100 = catalog.gcp_accelerator_zones("nvidia-tesla-a100")
    assert a100 is not None and "us-central1-f" in a100.by_region["us-central1"]
    h100 = catalog.gcp_accelerator_zones("nvidia-h100-80gb")
    assert h100 is not None and h100.by_region["europe-west4"] == ("europe-west4-b", "europe-west4-c")
    assert catalog.gcp_accelerator_zones("nvidia-tesla-k80") is None


# --- Kubernetes versions that can be created --------------------------------------------------------


def test_kubernetes_version_table_is_dated_sourced_and_sorted() -> None:
    table = catalog.kubernetes_versions()
    assert table.as_of == "2026-12-02"
    for cloud in catalog.CATALOG_CLOUDS:
        versions = catalog.supported_kubernetes_versions(cloud)
        assert versions, cloud
        assert list(versions) == sorted(versions, key=lambda v: tuple(map(int, v.split("."))))
        assert table.sources[cloud] and all(s.startswith("https://") for s in table.sources[cloud])
    assert catalog.supported_kubernetes_versions("local") == ()


def test_default_kubernetes_version_is_created_by_every_cloud() -> None:
    default = catalog.default_kubernetes_version()
    assert all(default in catalog.supported_kubernetes_versions(c) for c in catalog.CATALOG_CLOUDS)


def test_versions_retired_by_december_2026_are_not_offered() -> None:
    # EKS 1.31 left extended support on 2026-11-26; GKE's Regular channel and AKS's N-2 window had moved
    # past 1.33 by then (provider calendars, independent of the table).
    assert "1.31" not in catalog.supported_kubernetes_versions("aws")
    for cloud in ("gcp", "azure"):
        assert not {"1.31", "1.32", "1.33"} & set(catalog.supported_kubernetes_versions(cloud))

"""Pricing from synthesized stacks: hand-written cdk.tf.json fixtures and a fixture price table, with the
expected totals worked out by hand below (never from the code under test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpufleet import catalog
from gpufleet.clouds import CLOUDS, CloudPrices, PricingError, price_table
from gpufleet.errors import FleetRuntimeError
from pipelines.previews.pricing import estimate_from_synth, estimate_rows

PRICES = {
    "aws": CloudPrices(
        cloud="aws",
        instance_types_usd_per_hour={"gpu.big": 2.0, "cpu.small": 0.05, "cpu.medium": 0.08},
        control_plane_usd_per_hour={"STANDARD": 0.1, "EXTENDED": 0.6},
        nat_gateway_usd_per_hour=0.04,
        public_ipv4_usd_per_hour=0.01,
        spot_fraction=0.5,
    ),
    "gcp": CloudPrices(
        cloud="gcp",
        instance_types_usd_per_hour={"gpu-4": 1.0, "cpu-4": 0.1},
        control_plane_usd_per_hour={"standard": 0.2},
        nat_gateway_usd_per_hour=0.03,
        public_ipv4_usd_per_hour=0.01,
        spot_fraction=0.25,
    ),
    "azure": CloudPrices(
        cloud="azure",
        instance_types_usd_per_hour={"Vm_Cpu": 0.2, "Vm_Gpu": 1.5},
        control_plane_usd_per_hour={"Free": 0.0, "Standard": 0.1},
        nat_gateway_usd_per_hour=0.045,
        public_ipv4_usd_per_hour=0.004,
        spot_fraction=0.2,
    ),
}


def write_synth(outdir: Path, stacks: dict[str, dict[str, Any]]) -> Path:
    """A synth output folder as cdktf writes it: manifest.json naming stacks/<name>/cdk.tf.json."""
    entries = {}
    for name, body in stacks.items():
        path = outdir / "stacks" / name / "cdk.tf.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(body))
        entries[name] = {"name": name, "synthesizedStackPath": f"stacks/{name}/cdk.tf.json"}
    (outdir / "manifest.json").write_text(json.dumps({"version": "0.21.0", "stacks": entries}))
    return outdir


AWS_STACK: dict[str, Any] = {
    "provider": {"aws": [{"region": "eu-west-1"}]},
    "resource": {
        "aws_eks_cluster": {"eks": {"name": "c-aws", "tags": {"gpufleet-environment": "pv-x"}}},
        "aws_eks_node_group": {
            "gpu": {
                "node_group_name": "gpu-a",
                "instance_types": ["gpu.big"],
                "capacity_type": "SPOT",
                "scaling_config": {"min_size": 0, "max_size": 3, "desired_size": 0},
            },
            "system": {
                "node_group_name": "system",
                "instance_types": ["cpu.small", "cpu.medium"],
                "capacity_type": "ON_DEMAND",
                "scaling_config": {"min_size": 1, "max_size": 2, "desired_size": 1},
            },
        },
        "aws_nat_gateway": {"nat-0": {}, "nat-1": {}, "nat-2": {}},
        "aws_eip": {"ip-0": {}, "ip-1": {}, "ip-2": {}},
        "aws_s3_bucket": {"b": {"bucket": "x"}},  # not billed by the hour: not priced
    },
}
# control plane 0.1; gpu 3 nodes x 2.0 x spot 0.5 = 3.0; system 2 x the dearer 0.08 = 0.16;
# 3 NAT x 0.04 = 0.12; 3 addresses x 0.01 = 0.03
AWS_HOURLY = 0.1 + 3.0 + 0.16 + 0.12 + 0.03

GCP_STACK: dict[str, Any] = {
    "provider": {"google": [{"project": "p", "region": "us-central1"}]},
    "resource": {
        "google_container_cluster": {
            "gke": {
                "name": "c-gcp",
                "location": "us-central1",
                "remove_default_node_pool": True,
                "initial_node_count": 1,
                "resource_labels": {"gpufleet-environment": "pv-x"},
            }
        },
        "google_container_node_pool": {
            # per-zone maximum in two pinned zones: 2 x 2 = 4 nodes
            "gpu": {
                "name": "gpu",
                "location": "us-central1",
                "node_locations": ["us-central1-a", "us-central1-b"],
                "autoscaling": {"min_node_count": 0, "max_node_count": 2},
                "node_config": {"machine_type": "gpu-4", "spot": True},
            },
            # whole-pool maximum: 3 nodes, whatever the zones
            "system": {
                "name": "system",
                "location": "us-central1",
                "autoscaling": {"total_min_node_count": 1, "total_max_node_count": 3},
                "node_config": {"machine_type": "cpu-4", "spot": False},
            },
            # fixed size, regional, no zones pinned: 1 per zone in GKE's default three zones = 3 nodes
            "fixed": {
                "name": "fixed",
                "location": "us-central1",
                "node_count": 1,
                "node_config": {"machine_type": "cpu-4"},
            },
            # zonal pool: a per-zone maximum is the pool's maximum, 2 nodes
            "zonal": {
                "name": "zonal",
                "location": "us-central1-f",
                "autoscaling": [{"max_node_count": 2}],
                "node_config": [{"machine_type": "cpu-4", "preemptible": True}],
            },
        },
        "google_compute_router_nat": {"nat": {"name": "n"}},
    },
}
# fee 0.2; gpu 4 x 1.0 x 0.25 = 1.0; system 3 x 0.1 = 0.3; fixed 3 x 0.1 = 0.3; zonal 2 x 0.1 x 0.25
# = 0.05; one Cloud NAT 0.03
GCP_HOURLY = 0.2 + 1.0 + 0.3 + 0.3 + 0.05 + 0.03

AZURE_STACK: dict[str, Any] = {
    "provider": {"azurerm": [{"features": [{}]}]},
    "resource": {
        "azurerm_resource_group": {"rg": {"name": "rg", "location": "westeurope"}},
        "azurerm_kubernetes_cluster": {
            "aks": {
                "name": "c-azure",
                "location": "${azurerm_resource_group.rg.location}",
                "sku_tier": "Standard",
                "tags": {"gpufleet-environment": "pv-x"},
                "default_node_pool": {
                    "name": "system",
                    "vm_size": "Vm_Cpu",
                    "auto_scaling_enabled": True,
                    "min_count": 1,
                    "max_count": 3,
                },
            }
        },
        "azurerm_kubernetes_cluster_node_pool": {
            "gpu": {
                "name": "gpu",
                "vm_size": "Vm_Gpu",
                "auto_scaling_enabled": True,
                "max_count": 2,
                "priority": "Spot",
            },
            "platform": {"name": "platform", "vm_size": "Vm_Cpu", "node_count": 2},
        },
    },
}
# Standard tier 0.1; system 3 x 0.2 = 0.6; gpu 2 x 1.5 x 0.2 = 0.6; platform 2 x 0.2 = 0.4
AZURE_HOURLY = 0.1 + 0.6 + 0.6 + 0.4


def test_each_cloud_is_priced_from_its_resources(tmp_path: Path) -> None:
    shared: dict[str, Any] = {"resource": {"aws_s3_bucket": {"state": {"bucket": "s"}}}}
    outdir = write_synth(
        tmp_path, {"s-aws": AWS_STACK, "s-gcp": GCP_STACK, "s-azure": AZURE_STACK, "shared": shared}
    )
    estimate = estimate_from_synth(outdir, PRICES)
    by_stack = {c.stack: c for c in estimate.clusters}
    assert set(by_stack) == {"s-aws", "s-gcp", "s-azure"}  # the shared stack has nothing billed hourly
    assert by_stack["s-aws"].usd_per_hour == pytest.approx(AWS_HOURLY)
    assert by_stack["s-gcp"].usd_per_hour == pytest.approx(GCP_HOURLY)
    assert by_stack["s-azure"].usd_per_hour == pytest.approx(AZURE_HOURLY)
    assert estimate.usd_per_hour == pytest.approx(AWS_HOURLY + GCP_HOURLY + AZURE_HOURLY)
    assert estimate.usd_per_day == pytest.approx(24 * (AWS_HOURLY + GCP_HOURLY + AZURE_HOURLY))
    aws = by_stack["s-aws"]
    assert (aws.cloud, aws.region, aws.cluster, aws.environment) == ("aws", "eu-west-1", "c-aws", "pv-x")
    assert by_stack["s-azure"].region == "westeurope"  # through the resource group reference
    assert estimate.cluster("gcp", "c-gcp") is by_stack["s-gcp"]


def test_node_counts_follow_the_pool_sizes(tmp_path: Path) -> None:
    estimate = estimate_from_synth(write_synth(tmp_path, {"g": GCP_STACK, "a": AWS_STACK}), PRICES)
    nodes = {(c.cloud, i.name): i.count for c in estimate.clusters for i in c.items if i.kind == "nodes"}
    assert nodes == {
        ("gcp", "node pool gpu"): 4,
        ("gcp", "node pool system"): 3,
        ("gcp", "node pool fixed"): 3,
        ("gcp", "node pool zonal"): 2,
        ("aws", "node pool gpu-a"): 3,
        ("aws", "node pool system"): 2,
    }
    [nat] = [i for c in estimate.clusters if c.cloud == "aws" for i in c.items if i.kind == "nat gateway"]
    assert nat.count == 3


def test_rows_show_every_item(tmp_path: Path) -> None:
    estimate = estimate_from_synth(write_synth(tmp_path, {"a": AWS_STACK}), PRICES)
    rows = estimate_rows(estimate)
    assert len(rows) == 5 and all(len(row) == 5 for row in rows)
    assert ("a", "aws", "node pool gpu-a", "3 x gpu.big spot (0.5 x $2)", "3.0000") in rows


def _with(stack: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(stack))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("stack", "path", "value", "named"),
    [
        (AWS_STACK, ["resource", "aws_eks_node_group", "gpu", "instance_types"], ["p9.huge"], "'p9.huge'"),
        (
            GCP_STACK,
            ["resource", "google_container_node_pool", "system", "node_config", "machine_type"],
            "n9-mystery",
            "'n9-mystery'",
        ),
        (
            AZURE_STACK,
            ["resource", "azurerm_kubernetes_cluster_node_pool", "gpu", "vm_size"],
            "Vm_X",
            "'Vm_X'",
        ),
        (
            AWS_STACK,
            ["resource", "aws_eks_node_group", "gpu", "scaling_config", "max_size"],
            "${var.n}",
            "aws_eks_node_group.gpu.scaling_config.max_size",
        ),
        (AZURE_STACK, ["resource", "azurerm_kubernetes_cluster", "aks", "sku_tier"], "Premium", "'Premium'"),
    ],
)
def test_what_cannot_be_priced_is_an_error_naming_it(
    tmp_path: Path, stack: dict[str, Any], path: list[str], value: Any, named: str
) -> None:
    outdir = write_synth(tmp_path, {"s": _with(stack, path, value)})
    with pytest.raises(PricingError) as raised:
        estimate_from_synth(outdir, PRICES)
    assert named in str(raised.value) and "\n" not in str(raised.value)
    assert isinstance(raised.value, FleetRuntimeError)  # a gpufleet bug: exit 1, not the user's input


def test_packaged_table_prices_gpu_types_from_the_catalog() -> None:
    table = price_table()
    assert set(table) == set(CLOUDS) == {"aws", "gcp", "azure"}
    for cloud, prices in table.items():
        for entry in catalog.instance_types(cloud):
            assert prices.instance(entry.name, "test") == entry.on_demand_usd_per_hour
        assert 0 < prices.spot_fraction <= 1

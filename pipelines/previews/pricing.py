"""Hourly and daily cost estimates of a fleet's cloud clusters, for preview caps and comparisons.

Prices are approximate US list prices: GPU nodes from gpufleet/data/gpu_catalog.yaml, everything else
(control plane, NAT gateway, system node, spot discount) from gpufleet/data/pricing.yaml. Estimates
are upper bounds: every GPU node they count is assumed to run all day.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml

from gpufleet import catalog
from gpufleet.catalog import CATALOG_CLOUDS
from gpufleet.spec import AwsCluster, AzureCluster, Fleet, GcpCluster
from stacks.context import PoolSize, Preview, StackContext

PRICING_FILE = "pricing.yaml"
HOURS_PER_DAY = 24

CloudCluster = AwsCluster | GcpCluster | AzureCluster
EstimateKind = Literal["preview", "environment"]
MANAGED_KUBERNETES = {"aws": "EKS", "gcp": "GKE", "azure": "AKS"}


class PricingError(Exception):
    """The packaged pricing file is malformed: a bug in gpufleet, not in the user's fleet file."""


@dataclass(frozen=True)
class CloudPricing:
    cloud: str
    control_plane_usd_per_hour: float
    preview_control_plane_usd_per_hour: float
    nat_gateway_usd_per_hour: float
    system_node_type: str
    system_node_usd_per_hour: float
    system_node_count: int
    spot_fraction: float  # fraction of the on-demand price paid for a spot node


@dataclass(frozen=True)
class CostItem:
    name: str  # "control plane", "nat gateway", "system pool", "gpu pool a10g"
    detail: str  # how the number was made, e.g. "1 x g5.xlarge spot (0.35 x $1.006)"
    usd_per_hour: float


@dataclass(frozen=True)
class ClusterCost:
    cluster: str  # the cluster's name in fleet.yaml
    cloud: str
    region: str
    items: tuple[CostItem, ...]

    @property
    def usd_per_hour(self) -> float:
        return sum(item.usd_per_hour for item in self.items)


@dataclass(frozen=True)
class CostEstimate:
    kind: EstimateKind
    clusters: tuple[ClusterCost, ...]

    @property
    def usd_per_hour(self) -> float:
        return sum(cluster.usd_per_hour for cluster in self.clusters)

    @property
    def usd_per_day(self) -> float:
        return self.usd_per_hour * HOURS_PER_DAY

    def cluster(self, name: str) -> ClusterCost | None:
        return next((c for c in self.clusters if c.cluster == name), None)


_FIELDS = {
    "control_plane_usd_per_hour",
    "preview_control_plane_usd_per_hour",
    "nat_gateway_usd_per_hour",
    "system_node",
    "spot_fraction",
}


def _cloud_pricing(cloud: str, fields: Any) -> CloudPricing:
    where = f"{PRICING_FILE}: {cloud}"
    if not isinstance(fields, dict) or set(fields) != _FIELDS:
        raise PricingError(f"{where}: expected exactly the fields {', '.join(sorted(_FIELDS))}")
    node = fields["system_node"]
    if not isinstance(node, dict) or set(node) != {"instance_type", "usd_per_hour", "count"}:
        raise PricingError(f"{where}.system_node: expected instance_type, usd_per_hour and count")
    try:
        pricing = CloudPricing(
            cloud=cloud,
            control_plane_usd_per_hour=float(fields["control_plane_usd_per_hour"]),
            preview_control_plane_usd_per_hour=float(fields["preview_control_plane_usd_per_hour"]),
            nat_gateway_usd_per_hour=float(fields["nat_gateway_usd_per_hour"]),
            system_node_type=str(node["instance_type"]),
            system_node_usd_per_hour=float(node["usd_per_hour"]),
            system_node_count=int(node["count"]),
            spot_fraction=float(fields["spot_fraction"]),
        )
    except (TypeError, ValueError) as exc:
        raise PricingError(f"{where}: {exc}") from exc
    if not 0 < pricing.spot_fraction <= 1:
        raise PricingError(f"{where}.spot_fraction: {pricing.spot_fraction} is not in (0, 1]")
    return pricing


@lru_cache(maxsize=1)
def _pricing_table() -> dict[str, CloudPricing]:
    text = resources.files("gpufleet.data").joinpath(PRICING_FILE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict) or set(raw) != set(CATALOG_CLOUDS):
        raise PricingError(f"{PRICING_FILE}: expected exactly the clouds {', '.join(CATALOG_CLOUDS)}")
    return {cloud: _cloud_pricing(cloud, raw[cloud]) for cloud in CATALOG_CLOUDS}


def cloud_pricing(cloud: str) -> CloudPricing:
    """The non-GPU prices of a cloud (aws, gcp, azure)."""
    return _pricing_table()[cloud]


def _money(usd: float) -> str:
    return f"${usd:.4f}".rstrip("0").rstrip(".") if usd else "$0"


def cluster_cost(cluster: CloudCluster, kind: EstimateKind, pool_size: dict[str, PoolSize]) -> ClusterCost:
    """One cluster's hourly cost with its GPU pools at `pool_size[pool.name].max_nodes` nodes each."""
    pricing = cloud_pricing(cluster.cloud)
    control_plane = (
        pricing.preview_control_plane_usd_per_hour
        if kind == "preview"
        else pricing.control_plane_usd_per_hour
    )
    service = MANAGED_KUBERNETES[cluster.cloud]
    nat = pricing.nat_gateway_usd_per_hour
    items = [
        CostItem(
            "control plane", f"{service} fee" if control_plane else f"{service} free tier", control_plane
        ),
        CostItem(
            "nat gateway", "1 gateway, hourly fee only" if nat else "none (egress via load balancer)", nat
        ),
        CostItem(
            "system pool",
            f"{pricing.system_node_count} x {pricing.system_node_type} on-demand",
            pricing.system_node_count * pricing.system_node_usd_per_hour,
        ),
    ]
    for pool in cluster.gpu_pools:
        size = pool_size[pool.name]
        known = catalog.instance_type(cluster.cloud, pool.instance_type)
        if known is None:  # unreachable for a validated Fleet: the spec checks every instance type
            raise PricingError(f"no catalog price for {cluster.cloud} {pool.instance_type}")
        on_demand = known.on_demand_usd_per_hour
        if size.spot:
            node_price = on_demand * pricing.spot_fraction
            how = f"spot ({pricing.spot_fraction} x {_money(on_demand)})"
        else:
            node_price, how = on_demand, f"on-demand ({_money(on_demand)})"
        items.append(
            CostItem(
                f"gpu pool {pool.name}",
                f"{size.max_nodes} x {pool.instance_type} {how}",
                size.max_nodes * node_price,
            )
        )
    return ClusterCost(cluster.name, cluster.cloud, cluster.region, tuple(items))


def preview_sizing_context(fleet: Fleet) -> StackContext:
    """A preview context used only for sizing: the pools a preview gets do not depend on the branch."""
    preview = Preview(branch="estimate", owner="estimate", ttl_hours=fleet.previews.ttl_hours, expires_at=0)
    return StackContext(fleet=fleet, environment="pv-estimate", preview=preview)


def estimate_preview(fleet: Fleet) -> CostEstimate:
    """A preview of the fleet: every cloud cluster, each GPU pool sized as the stacks size previews
    (StackContext.pool_size: at most one node, spot when previews.spot), that node running all day."""
    ctx = preview_sizing_context(fleet)
    return CostEstimate(
        "preview",
        tuple(
            cluster_cost(c, "preview", {p.name: ctx.pool_size(p) for p in c.gpu_pools})
            for c in fleet.cloud_clusters()
        ),
    )


def estimate_environment(fleet: Fleet) -> CostEstimate:
    """A normal environment of the fleet with every GPU pool at max_nodes, spot as declared."""
    ctx = StackContext(fleet=fleet)
    return CostEstimate(
        "environment",
        tuple(
            cluster_cost(c, "environment", {p.name: ctx.pool_size(p) for p in c.gpu_pools})
            for c in fleet.cloud_clusters()
        ),
    )

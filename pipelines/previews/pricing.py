"""What a preview or an environment costs per hour, priced from its synthesized stacks.

The estimate reads each stack's `cdk.tf.json` (node pools at their maximum, NAT gateways, public
addresses, control planes and their tiers; each cloud's parser in gpufleet/clouds/<cloud>.py) and
multiplies by the price table (gpufleet/data/pricing.yaml, GPU types from the GPU catalog). Whatever
the stacks build, including the preview GPU cap they apply, is what gets priced: the estimate cannot
drift from the stacks. Estimates are upper bounds: every node they count is assumed to run all day.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpufleet.clouds import CLOUDS, CloudPrices, CostItem, PricingError, price_table
from gpufleet.environments import DEFAULT_ENVIRONMENT
from gpufleet.errors import FleetRuntimeError
from gpufleet.spec import Fleet
from stacks.context import TAG_ENVIRONMENT
from stacks.synth import SynthOptions, synth_fleet

__all__ = [
    "ESTIMATE_COLUMNS",
    "ClusterCost",
    "CostEstimate",
    "CostItem",
    "PricingError",
    "estimate_from_synth",
    "estimate_preview",
    "estimate_rows",
    "price_stack",
]

HOURS_PER_DAY = 24
# A preview made only to be priced (preview list): its names do not matter, its sizes do.
SIZING_BRANCH = "gpufleet-cost-estimate"

Synth = Callable[[list[str], SynthOptions, Path], dict[str, object]]  # stacks.synth.synth_fleet


@dataclass(frozen=True)
class ClusterCost:
    """One synthesized stack's hourly cost."""

    stack: str
    cloud: str
    region: str
    cluster: str  # the cluster's name in the cloud (EKS/GKE/AKS); "" for a stack without a cluster
    environment: str  # the cluster's gpufleet-environment tag; "" without a cluster
    items: tuple[CostItem, ...]

    @property
    def usd_per_hour(self) -> float:
        return sum(item.usd_per_hour for item in self.items)


@dataclass(frozen=True)
class CostEstimate:
    clusters: tuple[ClusterCost, ...]

    @property
    def usd_per_hour(self) -> float:
        return sum(cluster.usd_per_hour for cluster in self.clusters)

    @property
    def usd_per_day(self) -> float:
        return self.usd_per_hour * HOURS_PER_DAY

    def cluster(self, cloud: str, name: str) -> ClusterCost | None:
        """The stack that builds the cluster `name` on `cloud`."""
        return next((c for c in self.clusters if c.cloud == cloud and c.cluster == name), None)


ESTIMATE_COLUMNS = ("stack", "cloud", "item", "detail", "$/h")


def estimate_rows(estimate: CostEstimate) -> list[tuple[str, str, str, str, str]]:
    """One row per cost item, in ESTIMATE_COLUMNS order (what `preview up` shows before deploying)."""
    return [
        (cluster.stack, cluster.cloud, item.name, item.detail, f"{item.usd_per_hour:.4f}")
        for cluster in estimate.clusters
        for item in cluster.items
    ]


def price_stack(
    name: str, stack: Mapping[str, object], prices: Mapping[str, CloudPrices]
) -> ClusterCost | None:
    """One stack's cost: every cloud's parser looks at its own resource types in it."""
    priced = [c.price_stack(stack, prices[c.name]) for c in CLOUDS.values() if c.name in prices]
    found = [p for p in priced if p is not None]
    if not found:
        return None
    if len(found) > 1:
        raise PricingError(f"stack {name}: resources of several clouds ({', '.join(p.cloud for p in found)})")
    [one] = found
    return ClusterCost(
        stack=name,
        cloud=one.cloud,
        region=one.region,
        cluster=one.cluster,
        environment=str(one.tags.get(TAG_ENVIRONMENT, "")),
        items=one.items,
    )


def estimate_from_synth(outdir: Path, prices: Mapping[str, CloudPrices] | None = None) -> CostEstimate:
    """The hourly cost of every stack a synth wrote into `outdir` (its manifest.json names them).

    prices: per cloud; default the packaged table. A resource gpufleet cannot price (an instance type
    missing from the table, a size that is an expression) raises PricingError naming it.
    """
    prices = price_table() if prices is None else prices
    try:
        manifest = json.loads((outdir / "manifest.json").read_text())
        entries = dict(manifest["stacks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FleetRuntimeError(f"cannot read the synthesized stacks in {outdir}: {exc}") from exc
    costs: list[ClusterCost] = []
    for name, entry in sorted(entries.items()):
        relative = entry.get("synthesizedStackPath") if isinstance(entry, dict) else None
        path = outdir / (relative or f"stacks/{name}/cdk.tf.json")
        try:
            stack = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FleetRuntimeError(f"cannot read stack {name} ({path}): {exc}") from exc
        cost = price_stack(name, stack, prices)
        if cost is not None:
            costs.append(cost)
    return CostEstimate(tuple(costs))


def estimate_preview(
    fleet_file: Path,
    fleet: Fleet,
    outdir: Path,
    *,
    synth: Synth = synth_fleet,
    base_environment: str = DEFAULT_ENVIRONMENT,
) -> CostEstimate:
    """What one preview of the fleet costs, from a synth of a preview made only for that (into outdir).

    Every preview of a fleet has the same sizes, so this prices any of them (e.g. for `preview list`).
    """
    clouds = [c for c in CLOUDS if c in fleet.clouds()]
    if not clouds:
        return CostEstimate(())
    options = SynthOptions(fleet_file, base_environment, branch=SIZING_BRANCH, owner="estimate")
    synth(clouds, options, outdir)
    return estimate_from_synth(outdir)

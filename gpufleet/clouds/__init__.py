"""Per-cloud facts behind one small interface: name rules, credential check, preview lister, prices.

Each cloud is one module here (aws.py, gcp.py, azure.py) holding one `Cloud` object; `CLOUDS` is the
registry and `cloud(name)` the lookup. Adding a cloud is one more module and one line in `_register`.
Nothing here imports a cloud SDK at import time: each lister and credential check imports its SDK inside
the call, so `gpufleet --help` and the local fleet never pay for boto3 clients or google-cloud-container.

This module also holds what every cloud shares: the DNS-label rule, the types a lister returns, and the
price table (gpufleet/data/pricing.yaml for everything but GPU instance types, whose prices come from the
GPU catalog) with the cost items a cloud's pricing parser makes of its synthesized resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import yaml

from gpufleet.errors import FleetRuntimeError

if TYPE_CHECKING:
    from gpufleet.spec import Fleet

Which = Callable[[str], str | None]  # shutil.which
# A cloud's API client factory, e.g. region -> boto3 EKS client; tests pass clients bound to fakes.
ClientFactory = Callable[..., Any]
Json = Mapping[str, Any]

# ---------------------------------------------------------------------------------------------------
# Name rules every cloud shares

# Lowercase DNS label (RFC 1123). EKS would also accept uppercase and '_', GKE and AKS would not; one
# style for every cloud means a cluster can move between clouds without a rename.
DNS_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def shown(value: object, limit: int = 40) -> str:
    """repr() of a user value, cut to limit characters so one bad value cannot flood an error line."""
    try:
        text = repr(value)
    except ValueError:  # ints beyond Python's int-to-str digit limit
        return "<a number too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dns_label_problem(name: str, max_length: int, what: str) -> str | None:
    """Lowercase DNS label of at most max_length characters."""
    if not name:
        return f"{what} is empty; use lowercase letters, digits and '-', starting with a letter"
    if len(name) > max_length:
        return (
            f"{what} {shown(name)} is {len(name)} characters, longer than the limit of {max_length}; "
            f"shorten it to {max_length} or fewer"
        )
    if not DNS_LABEL.fullmatch(name):
        return (
            f"{what} {shown(name)} is not a lowercase DNS label; use lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return None


def cluster_name_rule(cloud: Cloud, name: str) -> str | None:
    """A cluster name is a DNS label within the control plane's length limit (EKS 100, GKE 40, AKS 63)."""
    limit = cloud.cluster_name_max_length
    if len(name) > limit:
        # Name the control plane that imposes the limit: 41 characters is fine on EKS but not on GKE.
        return (
            f"cluster name {shown(name)} is {len(name)} characters, over the {cloud.service} limit of "
            f"{limit}; shorten it to {limit} or fewer"
        )
    return dns_label_problem(name, limit, "cluster name")


# ---------------------------------------------------------------------------------------------------
# What a preview lister returns


@dataclass(frozen=True)
class TaggedCluster:
    """A managed Kubernetes cluster and its tags/labels, as the cloud's API reports them."""

    cloud: str
    region: str  # GKE: the cluster's location (a region, or a zone for zonal clusters)
    name: str  # the cluster's name in the cloud
    resource_id: str  # EKS ARN, GKE self link, AKS resource ID
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Listing:
    clusters: tuple[TaggedCluster, ...] = ()
    # One line each: what could not be looked at (a cloud without a lister, zones that did not answer).
    # A place named here may hold clusters: callers must not read its silence as "none there".
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------
# Prices and cost items


class PricingError(FleetRuntimeError):
    """A synthesized resource gpufleet cannot price, or a malformed price table: a gpufleet bug (exit 1)."""


PRICING_FILE: Final = "pricing.yaml"
_PRICE_FIELDS: Final = {
    "control_plane_usd_per_hour",
    "nat_gateway_usd_per_hour",
    "public_ipv4_usd_per_hour",
    "spot_fraction",
    "instance_types_usd_per_hour",
}


@dataclass(frozen=True)
class CloudPrices:
    """One cloud's prices: per instance type (on-demand), per control-plane tier, per gateway hour."""

    cloud: str
    instance_types_usd_per_hour: Mapping[str, float]
    control_plane_usd_per_hour: Mapping[str, float]  # tier as the synthesized resource spells it -> fee
    nat_gateway_usd_per_hour: float
    public_ipv4_usd_per_hour: float
    spot_fraction: float  # fraction of the on-demand price a spot node costs (typical, not a quote)

    def instance(self, instance_type: str, where: str) -> float:
        try:
            return self.instance_types_usd_per_hour[instance_type]
        except KeyError:
            raise PricingError(
                f"{where}: no price for {self.cloud} instance type {instance_type!r}; add it to "
                f"gpufleet/data/{PRICING_FILE} ({self.cloud}.instance_types_usd_per_hour) or, for a GPU "
                "type, to gpu_catalog.yaml"
            ) from None

    def control_plane(self, tier: str, where: str) -> float:
        try:
            return self.control_plane_usd_per_hour[tier]
        except KeyError:
            known = ", ".join(sorted(self.control_plane_usd_per_hour))
            raise PricingError(
                f"{where}: no price for {self.cloud} control-plane tier {tier!r} (priced: {known}); "
                f"add it to gpufleet/data/{PRICING_FILE} ({self.cloud}.control_plane_usd_per_hour)"
            ) from None


CostKind = Literal["control plane", "nat gateway", "public ipv4", "nodes"]


@dataclass(frozen=True)
class CostItem:
    kind: CostKind
    name: str  # "control plane", "nat gateway", "node pool system", "node pool gpu-a10g" ...
    detail: str  # how the number was made, e.g. "2 x m6i.large spot (0.35 x $0.096)"
    count: int  # nodes (at the pool's maximum), gateways, addresses
    unit_usd_per_hour: float

    @property
    def usd_per_hour(self) -> float:
        return self.count * self.unit_usd_per_hour


@dataclass(frozen=True)
class PricedStack:
    """What one synthesized stack of one cloud costs per hour, as its resources say."""

    cloud: str
    region: str
    cluster: str  # the cluster's name in the cloud; "" for a stack without one (e.g. a shared stack)
    tags: Mapping[str, str]  # the cluster's tags/labels as synthesized; {} without a cluster
    items: tuple[CostItem, ...]


def money(usd: float) -> str:
    return f"${usd:.4f}".rstrip("0").rstrip(".") if usd else "$0"


def node_item(
    prices: CloudPrices, *, pool: str, instance_types: Sequence[str], nodes: int, spot: bool, where: str
) -> CostItem:
    """A node pool at `nodes` nodes; with several allowed instance types, the dearest (an upper bound)."""
    if not instance_types:
        raise PricingError(f"{where}: the pool names no instance type")
    by_price = {name: prices.instance(name, where) for name in instance_types}
    dearest = max(by_price, key=lambda name: by_price[name])
    on_demand = by_price[dearest]
    what = dearest if len(by_price) == 1 else f"{dearest} (dearest of {', '.join(instance_types)})"
    if spot:
        unit = on_demand * prices.spot_fraction
        how = f"spot ({prices.spot_fraction:g} x {money(on_demand)})"
    else:
        unit, how = on_demand, f"on-demand ({money(on_demand)})"
    return CostItem("nodes", f"node pool {pool}", f"{nodes} x {what} {how}", nodes, unit)


def count_field(value: Any, where: str) -> int:
    """A node count from the synthesized JSON: a literal whole number (an expression cannot be priced)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
        raise PricingError(f"{where}: {value!r} is not a node count gpufleet can price")
    return int(value)


def text_field(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or "${" in value:
        raise PricingError(f"{where}: {value!r} is not a literal gpufleet can price")
    return value


def resources_of(stack: Json, resource_type: str) -> list[tuple[str, Json]]:
    """The stack's resources of one Terraform type, as (construct id, body), in a stable order."""
    found = stack.get("resource", {}).get(resource_type, {})
    return sorted(found.items()) if isinstance(found, dict) else []


def _prices_for(cloud: str, fields: Any, gpu_prices: Mapping[str, float]) -> CloudPrices:
    where = f"{PRICING_FILE}: {cloud}"
    if not isinstance(fields, dict) or set(fields) != _PRICE_FIELDS:
        raise PricingError(f"{where}: expected exactly the fields {', '.join(sorted(_PRICE_FIELDS))}")
    try:
        instances = {str(k): float(v) for k, v in fields["instance_types_usd_per_hour"].items()}
        tiers = {str(k): float(v) for k, v in fields["control_plane_usd_per_hour"].items()}
        prices = CloudPrices(
            cloud=cloud,
            instance_types_usd_per_hour={**instances, **gpu_prices},
            control_plane_usd_per_hour=tiers,
            nat_gateway_usd_per_hour=float(fields["nat_gateway_usd_per_hour"]),
            public_ipv4_usd_per_hour=float(fields["public_ipv4_usd_per_hour"]),
            spot_fraction=float(fields["spot_fraction"]),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise PricingError(f"{where}: {exc}") from exc
    if overlap := sorted(set(instances) & set(gpu_prices)):
        raise PricingError(f"{where}: {', '.join(overlap)} priced twice (here and in gpu_catalog.yaml)")
    if not 0 < prices.spot_fraction <= 1:
        raise PricingError(f"{where}.spot_fraction: {prices.spot_fraction} is not in (0, 1]")
    return prices


@lru_cache(maxsize=1)
def price_table() -> dict[str, CloudPrices]:
    """Every cloud's prices: pricing.yaml, plus the GPU catalog's on-demand price per GPU instance type."""
    from gpufleet import catalog

    text = resources.files("gpufleet.data").joinpath(PRICING_FILE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict) or set(raw) != set(CLOUDS):
        raise PricingError(f"{PRICING_FILE}: expected exactly the clouds {', '.join(CLOUDS)}")
    return {
        name: _prices_for(
            name, raw[name], {t.name: t.on_demand_usd_per_hour for t in catalog.instance_types(name)}
        )
        for name in CLOUDS
    }


# ---------------------------------------------------------------------------------------------------
# The interface


class Cloud(Protocol):
    """Everything gpufleet knows about one cloud outside its cdktf constructs."""

    name: str  # "aws": the `cloud` of a fleet.yaml cluster
    service: str  # the managed Kubernetes service: "EKS"
    cluster_name_max_length: int
    # Node pools the stacks add beside the GPU pools, whose names GPU pools cannot reuse.
    reserved_pool_names: frozenset[str]

    def region_problem(self, region: str) -> str | None:
        """None for a valid region name of this cloud, else "<problem>; <fix>"."""
        ...

    def cluster_name_problem(self, name: str) -> str | None: ...

    def bucket_problem(self, bucket: str) -> str | None:
        """The model store bucket/container rules of this cloud beyond the S3 ones every fleet obeys."""
        ...

    def credentials_problem(self, environ: Mapping[str, str], which: Which) -> str | None:
        """One line naming what is missing to deploy or destroy on this cloud, or None when ready."""
        ...

    def places(self, fleet: Fleet) -> list[str]:
        """Where the fleet's clusters of this cloud live, as the lister takes them (regions, projects)."""
        ...

    def list_clusters(
        self, places: Sequence[str], tag: tuple[str, str], client: ClientFactory | None = None
    ) -> Listing:
        """The clusters in `places` whose tags/labels hold `tag` (key, value)."""
        ...

    def price_stack(self, stack: Json, prices: CloudPrices) -> PricedStack | None:
        """This cloud's billable resources in one synthesized cdk.tf.json; None when it has none."""
        ...


CLOUDS: dict[str, Cloud] = {}


def _register() -> None:
    # Imported here, not at the top: each cloud module imports the shared helpers above.
    from gpufleet.clouds import aws, azure, gcp

    for module in (aws, gcp, azure):
        CLOUDS[module.CLOUD.name] = module.CLOUD


def cloud(name: str) -> Cloud:
    """The cloud called `name` (aws, gcp, azure); KeyError for anything else (e.g. local)."""
    return CLOUDS[name]


_register()

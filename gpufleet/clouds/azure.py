"""Azure: region, Blob container and storage account rules, credentials (azurerm's), AKS stack prices.

No Azure SDK is a dependency of gpufleet, so AKS clusters are not listed: the lister says so in a note,
and callers treat Azure as not looked at (never as "nothing there").
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from gpufleet.clouds import (
    ClientFactory,
    CloudPrices,
    CostItem,
    Json,
    Listing,
    PricedStack,
    Which,
    cluster_name_rule,
    count_field,
    node_item,
    resources_of,
    shown,
    text_field,
)

if TYPE_CHECKING:
    from gpufleet.spec import Fleet

AZURE_REGION: Final = re.compile(r"^[a-z]+[a-z0-9]*$")
AZURE_STORAGE_ACCOUNT: Final = re.compile(r"^[a-z0-9]{3,24}$")
AKS_CLUSTER_NAME_MAX_LENGTH: Final = 63
_AZURE_CONTAINER_CHARS: Final = re.compile(r"^[a-z0-9-]+$")
_AZURE_CONTAINER_FIX: Final = "use 3-63 lowercase letters, digits and single '-' between them"
AKS_DEFAULT_TIER: Final = "Free"  # azurerm's default sku_tier

AZURE_NO_CREDENTIALS: Final = (
    "azure: no credentials found (set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and "
    "ARM_SUBSCRIPTION_ID for a service principal, ARM_USE_MSI=true for a managed identity, "
    "ARM_USE_OIDC=true in CI, or install the Azure CLI and run `az login`)"
)
AZURE_NO_SUBSCRIPTION: Final = (
    "azure: ARM_SUBSCRIPTION_ID is not set and the azurerm 4.x provider requires it; "
    "export ARM_SUBSCRIPTION_ID (e.g. $(az account show --query id -o tsv))"
)
# Any of these tells the azurerm provider how to authenticate without the Azure CLI.
AZURE_CREDENTIAL_ENV: Final = ("ARM_CLIENT_ID", "ARM_USE_MSI", "ARM_USE_OIDC", "ARM_USE_CLI")
AZURE_NOT_LISTED: Final = (
    "azure: not listed (no Azure SDK installed; tags are set, find them with "
    "`az resource list --tag gpufleet-preview=true`)"
)
AZURE_NOT_LISTED_WITH_SDK: Final = (
    "azure: not listed (gpufleet has no Azure lister yet; tags are set, find them with "
    "`az resource list --tag gpufleet-preview=true`)"
)
_REFERENCE: Final = re.compile(r"^\$\{([a-z0-9_]+)\.([A-Za-z0-9_-]+)\.([a-z_]+)\}$")


def azure_container_problem(container: str) -> str | None:
    """Azure Blob container naming rules."""
    what = f"{shown(container)} is not a valid Azure Blob container name"
    if not 3 <= len(container) <= 63:
        return f"{what} (it has {len(container)} characters); {_AZURE_CONTAINER_FIX}"
    if "." in container:
        return f"{what} ('.' is not allowed); {_AZURE_CONTAINER_FIX}"
    if not _AZURE_CONTAINER_CHARS.fullmatch(container):
        return f"{what} (only lowercase letters, digits and '-' are allowed); {_AZURE_CONTAINER_FIX}"
    if not (container[0].isalnum() and container[-1].isalnum()):
        return f"{what} (it must start and end with a letter or digit); {_AZURE_CONTAINER_FIX}"
    if "--" in container:
        return f"{what} (it contains '--'); {_AZURE_CONTAINER_FIX}"
    return None


def azure_storage_account_problem(account: str) -> str | None:
    if AZURE_STORAGE_ACCOUNT.fullmatch(account):
        return None
    return (
        f"{shown(account)} is not a valid Azure storage account name; use 3-24 lowercase letters and digits "
        "(no '-' or '.')"
    )


def _resolved(stack: Json, value: Any) -> str:
    """A literal, or the literal a `${type.id.attribute}` reference to another resource points at."""
    text = str(value or "")
    match = _REFERENCE.fullmatch(text)
    if match:
        rtype, rid, attribute = match.groups()
        target = stack.get("resource", {}).get(rtype, {}).get(rid, {})
        return _resolved(stack, target.get(attribute)) if isinstance(target, dict) else ""
    return "" if "${" in text else text


class Azure:
    name = "azure"
    service = "AKS"
    cluster_name_max_length = AKS_CLUSTER_NAME_MAX_LENGTH
    reserved_pool_names: frozenset[str] = frozenset({"system", "platform"})

    # -- name rules ----------------------------------------------------------------------------------
    def region_problem(self, region: str) -> str | None:
        if AZURE_REGION.fullmatch(region):
            return None
        suggestion = re.sub(r"[^a-z0-9]", "", region.lower())
        example = suggestion if AZURE_REGION.fullmatch(suggestion) else "eastus"
        return (
            f"{shown(region)} is not an Azure region name; use the programmatic name in lowercase "
            f"without spaces, such as {example}"
        )

    def cluster_name_problem(self, name: str) -> str | None:
        return cluster_name_rule(self, name)

    def bucket_problem(self, bucket: str) -> str | None:
        return azure_container_problem(bucket)

    # -- credentials ---------------------------------------------------------------------------------
    def credentials_problem(self, environ: Mapping[str, str], which: Which) -> str | None:
        if not any(environ.get(name) for name in AZURE_CREDENTIAL_ENV) and which("az") is None:
            return AZURE_NO_CREDENTIALS
        if not environ.get("ARM_SUBSCRIPTION_ID"):
            return AZURE_NO_SUBSCRIPTION
        return None

    # -- preview lister ------------------------------------------------------------------------------
    def places(self, fleet: Fleet) -> list[str]:
        return sorted({c.region for c in fleet.cloud_clusters() if c.cloud == self.name})

    def list_clusters(
        self, places: Sequence[str], tag: tuple[str, str], client: ClientFactory | None = None
    ) -> Listing:
        """Nothing listed, and a note saying so (and how to look by hand)."""
        if not places:
            return Listing()
        try:
            has_sdk = importlib.util.find_spec("azure.mgmt.containerservice") is not None
        except ModuleNotFoundError:  # no azure namespace package at all
            has_sdk = False
        return Listing(notes=(AZURE_NOT_LISTED_WITH_SDK if has_sdk else AZURE_NOT_LISTED,))

    # -- prices --------------------------------------------------------------------------------------
    def price_stack(self, stack: Json, prices: CloudPrices) -> PricedStack | None:
        """AKS tier fees, the default (system) pool and every user pool at their maximum, NAT gateways and
        public IPs declared in the stack. The outbound load balancer AKS creates itself is not priced."""
        items: list[CostItem] = []
        cluster_name, tags, region = "", {}, ""
        for rid, body in resources_of(stack, "azurerm_kubernetes_cluster"):
            where = f"azurerm_kubernetes_cluster.{rid}"
            cluster_name = text_field(body.get("name"), f"{where}.name")
            tags = dict(body.get("tags") or {})
            region = _resolved(stack, body.get("location"))
            tier = str(body.get("sku_tier") or AKS_DEFAULT_TIER)
            fee = prices.control_plane(tier, where)
            items.append(CostItem("control plane", "control plane", f"AKS {tier} tier", 1, fee))
            pool = body.get("default_node_pool")
            pool = pool[0] if isinstance(pool, list) and pool else pool
            items.append(
                self._pool(prices, pool if isinstance(pool, dict) else {}, f"{where}.default_node_pool")
            )
        for rid, body in resources_of(stack, "azurerm_kubernetes_cluster_node_pool"):
            items.append(self._pool(prices, body, f"azurerm_kubernetes_cluster_node_pool.{rid}"))
        nats = resources_of(stack, "azurerm_nat_gateway")
        if nats:
            fee = prices.nat_gateway_usd_per_hour
            items.append(CostItem("nat gateway", "nat gateway", "hourly fee only", len(nats), fee))
        addresses = resources_of(stack, "azurerm_public_ip")
        if addresses:
            fee = prices.public_ipv4_usd_per_hour
            items.append(
                CostItem("public ipv4", "public ip", "public IPv4 address hours", len(addresses), fee)
            )
        if not items:
            return None
        return PricedStack(self.name, region, cluster_name, tags, tuple(items))

    @staticmethod
    def _pool(prices: CloudPrices, body: Json, where: str) -> CostItem:
        if body.get("auto_scaling_enabled"):
            nodes = count_field(body.get("max_count"), f"{where}.max_count")
        else:
            nodes = count_field(body.get("node_count", 1), f"{where}.node_count")
        return node_item(
            prices,
            pool=str(body.get("name") or where),
            instance_types=[text_field(body.get("vm_size"), f"{where}.vm_size")],
            nodes=nodes,
            spot=body.get("priority") == "Spot",
            where=where,
        )


CLOUD = Azure()

"""Azure: region, Blob container and storage account rules, credentials (azurerm's), AKS lister, AKS prices.

No Azure SDK is a dependency of gpufleet: the lister reads Azure Resource Manager's REST API with
`requests` and a bearer token from a service principal (ARM_CLIENT_ID/ARM_CLIENT_SECRET/ARM_TENANT_ID)
or the Azure CLI (`az account get-access-token`). Where it cannot get one (managed identity, OIDC) it
says so in a note, and callers treat Azure as not looked at, never as "nothing there".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from gpufleet.clouds import (
    ClientFactory,
    CloudPrices,
    CostItem,
    Json,
    Listing,
    PricedStack,
    TaggedCluster,
    Which,
    cluster_name_rule,
    count_field,
    node_item,
    resources_of,
    shown,
    text_field,
)
from gpufleet.errors import FleetRuntimeError, UserError

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
    "azure: not listed (gpufleet's lister takes a service principal or `az login`, not {how}); tags are "
    "set, find them with `az resource list --tag gpufleet-preview=true`"
)
ARM_URL: Final = "https://management.azure.com"
ARM_SCOPE: Final = "https://management.azure.com/.default"
AUTHORITY_URL: Final = "https://login.microsoftonline.com"  # AZURE_AUTHORITY_HOST overrides it
MANAGED_CLUSTERS_API_VERSION: Final = "2024-09-01"
ARM_TIMEOUT_S: Final = 30
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


class ArmApi(Protocol):
    """What the lister needs of Azure Resource Manager: the JSON of an authenticated GET."""

    def get(self, url: str) -> dict[str, Any]: ...


class ArmClient:
    """GETs against Azure Resource Manager with a bearer token (requests, no Azure SDK)."""

    def __init__(self, token: str, base_url: str = ARM_URL) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, url: str) -> dict[str, Any]:
        """url: a path under base_url, or a full URL (ARM's nextLink)."""
        import requests

        full = url if url.startswith(("http://", "https://")) else f"{self.base_url}{url}"
        try:
            response = self.session.get(full, timeout=ARM_TIMEOUT_S)
        except requests.RequestException as exc:
            raise FleetRuntimeError(
                f"azure: Resource Manager did not answer ({exc.__class__.__name__})"
            ) from None
        if response.status_code in (401, 403):
            code = _arm_error_code(response.text) or str(response.status_code)
            raise UserError(
                f"azure: cannot list AKS clusters ({code}); check the credentials and allow "
                "Microsoft.ContainerService/managedClusters/read on the subscription"
            )
        if response.status_code != 200:
            code = _arm_error_code(response.text) or f"HTTP {response.status_code}"
            raise FleetRuntimeError(f"azure: listing AKS clusters failed ({code})")
        try:
            body = response.json()
        except ValueError:
            raise FleetRuntimeError(
                "azure: Resource Manager answered with something other than JSON"
            ) from None
        if not isinstance(body, dict):
            raise FleetRuntimeError("azure: Resource Manager answered with an unexpected JSON document")
        return body


def _arm_error_code(text: str) -> str | None:
    try:
        error = json.loads(text).get("error", {})
    except (ValueError, AttributeError):
        return None
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None


def arm_token(environ: Mapping[str, str], which: Which = shutil.which) -> str:
    """A Resource Manager token: the service principal azurerm would use, else the Azure CLI's login.

    UserError (naming what to set) when neither is there; a managed identity or OIDC setup is named too.
    """
    import requests

    client_id, secret, tenant = (
        environ.get(n) for n in ("ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_TENANT_ID")
    )
    if client_id and secret and tenant:
        authority = environ.get("AZURE_AUTHORITY_HOST", AUTHORITY_URL).rstrip("/")
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        try:
            response = requests.post(
                f"{authority}/{tenant}/oauth2/v2.0/token",
                data=form | {"scope": ARM_SCOPE},
                timeout=ARM_TIMEOUT_S,
            )
        except requests.RequestException as exc:
            raise FleetRuntimeError(
                f"azure: the token endpoint did not answer ({exc.__class__.__name__})"
            ) from None
        token = response.json().get("access_token") if response.status_code == 200 else None
        if not token:
            raise UserError(
                f"azure: the service principal ARM_CLIENT_ID={client_id} was refused a token "
                f"(HTTP {response.status_code}); check ARM_CLIENT_SECRET and ARM_TENANT_ID"
            )
        return str(token)
    if which("az") is not None and not (environ.get("ARM_USE_MSI") or environ.get("ARM_USE_OIDC")):
        cmd = [
            "az",
            "account",
            "get-access-token",
            "--resource",
            ARM_URL,
            "--query",
            "accessToken",
            "-o",
            "tsv",
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=ARM_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise UserError(f"azure: `az account get-access-token` failed ({exc}); run `az login`") from None
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
        raise UserError(
            "azure: the Azure CLI has no login (`az account get-access-token` failed); run `az login`"
        )
    raise UserError(AZURE_NO_CREDENTIALS)


def _default_arm() -> ArmApi:
    return ArmClient(arm_token(os.environ))


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
        """AKS clusters of the subscription (ARM_SUBSCRIPTION_ID) whose tags hold `tag`, all regions."""
        if not places:
            return Listing()
        if client is None and (os.environ.get("ARM_USE_MSI") or os.environ.get("ARM_USE_OIDC")):
            how = "a managed identity" if os.environ.get("ARM_USE_MSI") else "OIDC federation"
            return Listing(notes=(AZURE_NOT_LISTED.format(how=how),))
        subscription = os.environ.get("ARM_SUBSCRIPTION_ID")
        if not subscription:
            raise UserError(AZURE_NO_SUBSCRIPTION)
        arm: ArmApi = (client or _default_arm)()
        key, value = tag
        found: list[TaggedCluster] = []
        url: str | None = (
            f"/subscriptions/{subscription}/providers/Microsoft.ContainerService/managedClusters"
            f"?api-version={MANAGED_CLUSTERS_API_VERSION}"
        )
        while url:
            page = arm.get(url)
            for cluster in page.get("value", []):
                tags = dict(cluster.get("tags") or {})
                if tags.get(key) == value:
                    name = str(cluster.get("name", ""))
                    resource_id = str(cluster.get("id", name))
                    found.append(
                        TaggedCluster(self.name, str(cluster.get("location", "")), name, resource_id, tags)
                    )
            url = page.get("nextLink")
        return Listing(tuple(found))

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

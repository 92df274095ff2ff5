"""GCP: region, project and GCS bucket rules, credentials (ADC), GKE lister, GKE stack prices."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from gpufleet.clouds import (
    ClientFactory,
    CloudPrices,
    CostItem,
    Json,
    Listing,
    PricedStack,
    PricingError,
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
    from google.cloud.container_v1.types import ListClustersResponse

    from gpufleet.spec import Fleet, GcpCluster

GCP_REGION: Final = re.compile(r"^[a-z]+-[a-z]+\d{1,2}$")
GCP_ZONE: Final = re.compile(r"^([a-z]+-[a-z]+\d{1,2})-[a-z]$")
GCP_PROJECT_ID: Final = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
GKE_CLUSTER_NAME_MAX_LENGTH: Final = 40
# A regional pool without node_locations runs in three of the region's zones (GKE's default), and a
# per-zone node count (node_count, max_node_count) applies in each of them.
GKE_DEFAULT_REGIONAL_ZONES: Final = 3

GCP_NO_CREDENTIALS: Final = (
    "gcp: no application default credentials (run `gcloud auth application-default login` "
    "or set GOOGLE_APPLICATION_CREDENTIALS)"
)
GCP_NO_LIBRARY: Final = (
    "gcp: google-cloud-container is not installed; install the cloud layer with "
    "`make setup-all` or pip install -e '.[cloud]'"
)
GCP_AUTH_MISSING: Final = (
    "gcp: google-auth is not installed; install the cloud layer with "
    "`make setup-all` or pip install -e '.[cloud]'"
)


class GkeApi(Protocol):
    """The part of google.cloud.container_v1.ClusterManagerClient the lister calls."""

    def list_clusters(self, *, parent: str) -> ListClustersResponse: ...


def gcp_project_problem(project: str) -> str | None:
    if not GCP_PROJECT_ID.fullmatch(project):
        return (
            f"{shown(project)} is not a GCP project ID; use 6-30 lowercase letters, digits and '-', starting "
            "with a letter and not ending with '-' (the project ID, not the display name)"
        )
    if "google" in project:
        return (
            f"{shown(project)} contains 'google', which GCP does not allow in project IDs; choose another ID"
        )
    return None


def gcs_bucket_problem(bucket: str) -> str | None:
    """Cloud Storage rules beyond the S3 ones (the S3 rules are always checked first)."""
    if bucket.startswith("goog"):
        return f"{shown(bucket)} is not a valid GCS bucket name (it starts with 'goog'); choose another name"
    if "google" in bucket or "g00gle" in bucket:
        return (
            f"{shown(bucket)} is not a valid GCS bucket name (it contains 'google' or a look-alike); "
            "choose another name"
        )
    if any(len(part) > 63 for part in bucket.split(".")):
        return f"{shown(bucket)} is not a valid GCS bucket name (a dot-separated part is over 63 characters)"
    return None


def _default_gke() -> GkeApi:
    if importlib.util.find_spec("google.cloud.container_v1") is None:
        raise UserError(GCP_NO_LIBRARY)
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud.container_v1 import ClusterManagerClient

    try:
        return ClusterManagerClient()
    except DefaultCredentialsError:
        raise UserError(GCP_NO_CREDENTIALS) from None


def _gcp_error(project: str, exc: Exception) -> Exception:
    from google.api_core import exceptions as api

    if isinstance(exc, api.PermissionDenied | api.Unauthenticated | api.NotFound | api.Forbidden):
        return UserError(
            f"gcp: cannot list GKE clusters in project {project} ({exc.__class__.__name__}); "
            "check the project ID and allow container.clusters.list"
        )
    return FleetRuntimeError(f"gcp: listing GKE clusters in project {project} failed: {exc}")


def _block(value: Any) -> Mapping[str, Any]:
    """A nested block of the synthesized JSON: an object, or a list holding one."""
    if isinstance(value, list):
        value = value[0] if value else {}
    return value if isinstance(value, dict) else {}


class Gcp:
    name = "gcp"
    service = "GKE"
    cluster_name_max_length = GKE_CLUSTER_NAME_MAX_LENGTH
    reserved_pool_names: frozenset[str] = frozenset({"system"})

    # -- name rules ----------------------------------------------------------------------------------
    def region_problem(self, region: str) -> str | None:
        if GCP_REGION.fullmatch(region):
            return None
        zone = GCP_ZONE.fullmatch(region)
        if zone:
            return f"{shown(region)} is a zone, not a region; use the region {zone.group(1)}"
        return f"{shown(region)} is not a GCP region name; use a region such as us-central1 or europe-west4"

    def cluster_name_problem(self, name: str) -> str | None:
        return cluster_name_rule(self, name)

    def bucket_problem(self, bucket: str) -> str | None:
        return gcs_bucket_problem(bucket)

    # -- credentials ---------------------------------------------------------------------------------
    def credentials_problem(self, environ: Mapping[str, str], which: Which) -> str | None:
        if importlib.util.find_spec("google.auth") is None:
            return GCP_AUTH_MISSING
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            google.auth.default()
        except DefaultCredentialsError:
            return GCP_NO_CREDENTIALS
        return None

    # -- preview lister ------------------------------------------------------------------------------
    def places(self, fleet: Fleet) -> list[str]:
        return sorted({cast("GcpCluster", c).project for c in fleet.cloud_clusters() if c.cloud == self.name})

    def list_clusters(
        self, places: Sequence[str], tag: tuple[str, str], client: ClientFactory | None = None
    ) -> Listing:
        """GKE clusters of each project (all locations at once) whose resource labels hold `tag`."""
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

        projects = sorted(set(places))
        if not projects:
            return Listing()
        gke: GkeApi = (client or _default_gke)()
        key, value = tag
        found: list[TaggedCluster] = []
        notes: list[str] = []
        for project in projects:
            try:
                response = gke.list_clusters(parent=f"projects/{project}/locations/-")
            except DefaultCredentialsError:
                raise UserError(GCP_NO_CREDENTIALS) from None
            except GoogleAuthError as exc:  # found but refused, e.g. an expired refresh token
                raise UserError(
                    f"gcp: application default credentials rejected ({exc.__class__.__name__}); "
                    "run `gcloud auth application-default login` again"
                ) from None
            except GoogleAPIError as exc:
                raise _gcp_error(project, exc) from None
            for cluster in response.clusters:
                labels = dict(cluster.resource_labels)
                if labels.get(key) != value:
                    continue
                link = (
                    cluster.self_link
                    or f"projects/{project}/locations/{cluster.location}/clusters/{cluster.name}"
                )
                found.append(TaggedCluster(self.name, cluster.location, cluster.name, link, labels))
            if response.missing_zones:
                # A zone that did not answer may hold a cluster: say so rather than report "none".
                notes.append(
                    f"gcp: project {project}: zones did not answer, their clusters are not listed: "
                    f"{', '.join(response.missing_zones)}"
                )
        return Listing(tuple(found), tuple(notes))

    # -- prices --------------------------------------------------------------------------------------
    def price_stack(self, stack: Json, prices: CloudPrices) -> PricedStack | None:
        """GKE cluster fees, node pools at their maximum (per-zone counts times zones), Cloud NAT gateways.

        The default node pool of a cluster with remove_default_node_pool is deleted right after creation
        and is not priced.
        """
        items: list[CostItem] = []
        cluster_name, tags, region = "", {}, ""
        cluster_zones: list[str] = []
        for rid, body in resources_of(stack, "google_container_cluster"):
            where = f"google_container_cluster.{rid}"
            cluster_name = text_field(body.get("name"), f"{where}.name")
            tags = dict(body.get("resource_labels") or {})
            region = str(body.get("location", ""))
            cluster_zones = list(body.get("node_locations") or [])
            tier = "autopilot" if body.get("enable_autopilot") else "standard"
            fee = prices.control_plane(tier, where)
            items.append(CostItem("control plane", "control plane", f"GKE {tier} cluster fee", 1, fee))
            if not body.get("remove_default_node_pool") and not body.get("enable_autopilot"):
                raise PricingError(f"{where}: a default node pool that stays is not priced by gpufleet")
        for rid, body in resources_of(stack, "google_container_node_pool"):
            where = f"google_container_node_pool.{rid}"
            node_config = _block(body.get("node_config"))
            machine = text_field(node_config.get("machine_type"), f"{where}.node_config.machine_type")
            nodes, how = self._pool_nodes(body, cluster_zones, where)
            item = node_item(
                prices,
                pool=str(body.get("name") or rid),
                instance_types=[machine],
                nodes=nodes,
                spot=bool(node_config.get("spot") or node_config.get("preemptible")),
                where=where,
            )
            items.append(
                CostItem(item.kind, item.name, f"{item.detail}; {how}", item.count, item.unit_usd_per_hour)
            )
        nats = resources_of(stack, "google_compute_router_nat")
        if nats:
            fee = prices.nat_gateway_usd_per_hour
            items.append(
                CostItem(
                    "nat gateway",
                    "cloud nat",
                    "gateway hour at the >32 VM rate, data not included",
                    len(nats),
                    fee,
                )
            )
        if not items:
            return None
        if not region:
            providers = stack.get("provider", {}).get("google") or [{}]
            if isinstance(providers, list) and providers and isinstance(providers[0], dict):
                region = str(providers[0].get("region", ""))
        return PricedStack(self.name, region, cluster_name, tags, tuple(items))

    @staticmethod
    def _pool_nodes(body: Json, cluster_zones: list[str], where: str) -> tuple[int, str]:
        """The pool's most nodes, and how that number was made."""
        locations = list(body.get("node_locations") or cluster_zones)
        location = str(body.get("location", ""))
        if locations:
            zones, zone_note = len(locations), f"{len(locations)} zones ({', '.join(map(str, locations))})"
        elif GCP_ZONE.fullmatch(location):
            zones, zone_note = 1, f"zonal pool in {location}"
        else:
            zones, zone_note = (
                GKE_DEFAULT_REGIONAL_ZONES,
                f"{GKE_DEFAULT_REGIONAL_ZONES} zones (GKE's regional default)",
            )
        autoscaling = _block(body.get("autoscaling"))
        if "total_max_node_count" in autoscaling:
            total = count_field(
                autoscaling["total_max_node_count"], f"{where}.autoscaling.total_max_node_count"
            )
            return total, "total_max_node_count for the whole pool"
        if "max_node_count" in autoscaling:
            per_zone = count_field(autoscaling["max_node_count"], f"{where}.autoscaling.max_node_count")
            return per_zone * zones, f"max_node_count {per_zone} per zone x {zone_note}"
        fixed = body.get("node_count", body.get("initial_node_count"))
        if fixed is None:
            raise PricingError(f"{where}: neither autoscaling nor node_count to size the pool from")
        per_zone = count_field(fixed, f"{where}.node_count")
        return per_zone * zones, f"{per_zone} per zone x {zone_note}"


CLOUD = Gcp()

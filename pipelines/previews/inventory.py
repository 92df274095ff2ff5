"""Find preview environments by their tags: EKS clusters (boto3) and GKE clusters (google-cloud-container).

Each cluster a preview created carries the preview tags of stacks.context (gpufleet-preview=true,
gpufleet-environment, gpufleet-expires-at, ...); the cluster is what costs money, so it is what the
inventory looks for. Azure is not listed: no Azure SDK is a dependency of gpufleet.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.naming import CLUSTER_NAME_MAX_LENGTH
from gpufleet.spec import AwsCluster, Fleet, GcpCluster
from pipelines.previews.pricing import CloudCluster, ClusterCost, cluster_cost, preview_sizing_context
from stacks.context import (
    TAG_BRANCH,
    TAG_ENVIRONMENT,
    TAG_EXPIRES_AT,
    TAG_FLEET,
    TAG_OWNER,
    TAG_PREVIEW,
    TAG_TTL_HOURS,
    StackContext,
)

if TYPE_CHECKING:
    from google.cloud.container_v1.types import ListClustersResponse

AWS_NO_CREDENTIALS = (
    "aws: no credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "or run `aws sso login`)"
)
GCP_NO_CREDENTIALS = (
    "gcp: no application default credentials (run `gcloud auth application-default login` "
    "or set GOOGLE_APPLICATION_CREDENTIALS)"
)
GCP_NO_LIBRARY = (
    "gcp: google-cloud-container is not installed; install the cloud layer with "
    "`make setup-all` or pip install -e '.[cloud]'"
)
AZURE_NOT_LISTED = (
    "azure: not listed (no Azure SDK installed; tags are set, sweep with "
    "`az resource list --tag gpufleet-preview=true`)"
)
AZURE_NOT_LISTED_WITH_SDK = (
    "azure: not listed (gpufleet has no Azure lister yet; tags are set, sweep with "
    "`az resource list --tag gpufleet-preview=true`)"
)
SECONDS_PER_HOUR = 3600


# ---------------------------------------------------------------------------------------------------
# Clients


class EksApi(Protocol):
    """The part of a boto3 EKS client the inventory calls."""

    def list_clusters(self, **kwargs: Any) -> dict[str, Any]: ...

    def describe_cluster(self, *, name: str) -> dict[str, Any]: ...


class GkeApi(Protocol):
    """The part of google.cloud.container_v1.ClusterManagerClient the inventory calls."""

    def list_clusters(self, *, parent: str) -> ListClustersResponse: ...


def _default_eks(region: str) -> EksApi:
    import boto3

    client: EksApi = boto3.client("eks", region_name=region)
    return client


def _default_gke() -> GkeApi:
    if importlib.util.find_spec("google.cloud.container_v1") is None:
        raise UserError(GCP_NO_LIBRARY)
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud.container_v1 import ClusterManagerClient

    try:
        return ClusterManagerClient()
    except DefaultCredentialsError:
        raise UserError(GCP_NO_CREDENTIALS) from None


@dataclass(frozen=True)
class CloudClients:
    """Factories of the cloud API clients; tests pass clients bound to moto or a fake transport."""

    eks: Callable[[str], EksApi] = _default_eks  # region -> EKS client
    gke: Callable[[], GkeApi] = _default_gke


# ---------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class PreviewRecord:
    """One cloud cluster of a preview environment, as its tags describe it."""

    environment: str
    fleet: str
    branch: str  # the branch slug from the tag, not the branch itself
    owner: str
    cloud: str
    region: str  # GKE: the cluster's location (a region, or a zone for zonal clusters)
    cluster_name: str  # the name in the cloud, e.g. aws-use1-pv-feature-x-1a2b3c
    expires_at: int  # unix seconds
    ttl_hours: int
    resource_id: str  # EKS cluster ARN, GKE cluster self link

    @property
    def created_at(self) -> int:
        # Not a tag of its own: a re-deploy moves the expiry, and this follows it.
        return self.expires_at - self.ttl_hours * SECONDS_PER_HOUR


@dataclass(frozen=True)
class Inventory:
    records: tuple[PreviewRecord, ...]
    # One line each: clouds not listed, clusters skipped for bad tags, GKE zones that did not answer.
    notes: tuple[str, ...] = ()


def record_from_tags(
    tags: Mapping[str, str], *, cloud: str, region: str, cluster_name: str, resource_id: str
) -> PreviewRecord | str | None:
    """The preview a cluster's tags describe; None if it is no preview, a one-line note if its tags
    are unusable (such a cluster is reported, never swept: its expiry is unknown)."""
    if tags.get(TAG_PREVIEW) != "true":
        return None
    where = f"{cloud} {region} cluster {cluster_name}"
    missing = [t for t in (TAG_ENVIRONMENT, TAG_FLEET, TAG_EXPIRES_AT, TAG_TTL_HOURS) if not tags.get(t)]
    if missing:
        return f"{where}: skipped, preview tags missing: {', '.join(missing)}"
    try:
        expires_at, ttl_hours = int(tags[TAG_EXPIRES_AT]), int(tags[TAG_TTL_HOURS])
    except ValueError:
        return (
            f"{where}: skipped, {TAG_EXPIRES_AT}={tags[TAG_EXPIRES_AT]!r} or "
            f"{TAG_TTL_HOURS}={tags[TAG_TTL_HOURS]!r} is not a whole number"
        )
    return PreviewRecord(
        environment=tags[TAG_ENVIRONMENT],
        fleet=tags[TAG_FLEET],
        branch=tags.get(TAG_BRANCH, ""),
        owner=tags.get(TAG_OWNER, ""),
        cloud=cloud,
        region=region,
        cluster_name=cluster_name,
        expires_at=expires_at,
        ttl_hours=ttl_hours,
        resource_id=resource_id,
    )


@dataclass
class _Collected:
    records: list[PreviewRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, found: PreviewRecord | str | None) -> None:
        if isinstance(found, PreviewRecord):
            self.records.append(found)
        elif found is not None:
            self.notes.append(found)


# ---------------------------------------------------------------------------------------------------
# Listing per cloud


def _aws_error(region: str, exc: Exception) -> Exception:
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(exc, NoCredentialsError):
        return UserError(AWS_NO_CREDENTIALS)
    if isinstance(exc, NoRegionError):  # unreachable with a region from the fleet; kept for clarity
        return UserError(f"aws: no region for the EKS client ({region})")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        if code in {"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"}:
            return UserError(
                f"aws: cannot list EKS clusters in {region} ({code}); "
                "check the credentials and allow eks:ListClusters and eks:DescribeCluster"
            )
    return FleetRuntimeError(f"aws: listing EKS clusters in {region} failed: {exc}")


def list_aws_previews(regions: Iterable[str], clients: CloudClients) -> Inventory:
    """Preview clusters among the EKS clusters of each region (list_clusters + describe_cluster tags).

    The Resource Groups Tagging API would find them in one call per region, but moto does not index
    EKS clusters there, and a region holds few clusters.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    found = _Collected()
    for region in sorted(set(regions)):
        try:
            eks = clients.eks(region)
            names: list[str] = []
            token: str | None = None
            while True:
                page = eks.list_clusters(**({"nextToken": token} if token else {}))
                names += page.get("clusters", [])
                token = page.get("nextToken")
                if not token:
                    break
            for name in names:
                try:
                    cluster = eks.describe_cluster(name=name)["cluster"]
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                        continue  # deleted between the list and the describe
                    raise
                found.add(
                    record_from_tags(
                        cluster.get("tags") or {},
                        cloud="aws",
                        region=region,
                        cluster_name=name,
                        resource_id=str(cluster.get("arn", name)),
                    )
                )
        except (BotoCoreError, ClientError) as exc:
            raise _aws_error(region, exc) from None
    return Inventory(tuple(found.records), tuple(found.notes))


def _gcp_error(project: str, exc: Exception) -> Exception:
    from google.api_core import exceptions as api

    if isinstance(exc, api.PermissionDenied | api.Unauthenticated | api.NotFound | api.Forbidden):
        return UserError(
            f"gcp: cannot list GKE clusters in project {project} ({exc.__class__.__name__}); "
            "check the project ID and allow container.clusters.list"
        )
    return FleetRuntimeError(f"gcp: listing GKE clusters in project {project} failed: {exc}")


def list_gcp_previews(projects: Iterable[str], clients: CloudClients) -> Inventory:
    """Preview clusters among the GKE clusters of each project, all locations at once."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

    found = _Collected()
    projects = sorted(set(projects))
    if not projects:
        return Inventory(())
    gke = clients.gke()
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
            found.add(
                record_from_tags(
                    dict(cluster.resource_labels),
                    cloud="gcp",
                    region=cluster.location,
                    cluster_name=cluster.name,
                    resource_id=cluster.self_link
                    or f"projects/{project}/locations/{cluster.location}/clusters/{cluster.name}",
                )
            )
        if response.missing_zones:
            # A zone that did not answer may hold a preview: say so rather than report "none".
            found.notes.append(
                f"gcp: project {project}: zones did not answer, their clusters are not listed: "
                f"{', '.join(response.missing_zones)}"
            )
    return Inventory(tuple(found.records), tuple(found.notes))


def azure_note() -> str:
    try:
        has_sdk = importlib.util.find_spec("azure.mgmt.containerservice") is not None
    except ModuleNotFoundError:  # no azure namespace package at all
        has_sdk = False
    return AZURE_NOT_LISTED_WITH_SDK if has_sdk else AZURE_NOT_LISTED


def list_previews(
    fleet: Fleet, clients: CloudClients | None = None, clouds: Sequence[str] | None = None
) -> Inventory:
    """Previews in the places the fleet's cloud clusters live: the AWS regions and GCP projects of its
    clusters (any fleet's previews found there are returned; PreviewRecord.fleet says whose)."""
    clients = clients or CloudClients()
    wanted = set(clouds) if clouds is not None else {c.cloud for c in fleet.cloud_clusters()}
    records: list[PreviewRecord] = []
    notes: list[str] = []
    if "aws" in wanted:
        regions = [c.region for c in fleet.cloud_clusters() if isinstance(c, AwsCluster)]
        aws = list_aws_previews(regions, clients)
        records += aws.records
        notes += aws.notes
    if "gcp" in wanted:
        projects = [c.project for c in fleet.cloud_clusters() if isinstance(c, GcpCluster)]
        gcp = list_gcp_previews(projects, clients)
        records += gcp.records
        notes += gcp.notes
    if "azure" in wanted:
        notes.append(azure_note())
    return Inventory(tuple(records), tuple(notes))


# ---------------------------------------------------------------------------------------------------
# Grouping


@dataclass(frozen=True)
class PreviewSummary:
    """One preview environment: its clusters across clouds, how old it is, what it has cost."""

    environment: str
    fleet: str
    branch: str
    owner: str
    expires_at: int  # the latest expiry of its clusters: swept only when all of them have expired
    created_at: int
    records: tuple[PreviewRecord, ...]
    age_hours: float
    ttl_left_hours: float  # negative once expired
    # None when a cluster could not be matched to the fleet file (another fleet's, or renamed).
    usd_per_hour: float | None
    cost_so_far_usd: float | None

    @property
    def clouds(self) -> tuple[str, ...]:
        return tuple(sorted({r.cloud for r in self.records}))

    def expired(self, now: float) -> bool:
        return self.expires_at < now


def fleet_cluster_for(record: PreviewRecord, fleet: Fleet) -> CloudCluster | None:
    """The fleet.yaml cluster a preview cluster was made from: its cloud name is
    fit_name(<cluster>, <environment>) (StackContext.cluster_name at the cloud's limit)."""
    if record.fleet != fleet.name:
        return None
    same_cloud = [c for c in fleet.cloud_clusters() if c.cloud == record.cloud]
    ctx = StackContext(fleet=fleet, environment=record.environment)
    for cluster in same_cloud:
        if ctx.cluster_name(cluster.name, CLUSTER_NAME_MAX_LENGTH[cluster.cloud]) == record.cluster_name:
            return cluster
    # A stack that names its cluster otherwise: the one cluster of that cloud in that region (a GKE
    # location may be a zone of it) is still unambiguous.
    in_region = [
        c for c in same_cloud if record.region == c.region or record.region.startswith(f"{c.region}-")
    ]
    return in_region[0] if len(in_region) == 1 else None


def preview_cluster_cost(record: PreviewRecord, fleet: Fleet) -> ClusterCost | None:
    cluster = fleet_cluster_for(record, fleet)
    if cluster is None:
        return None
    ctx = preview_sizing_context(fleet)
    return cluster_cost(cluster, "preview", {p.name: ctx.pool_size(p) for p in cluster.gpu_pools})


def group_previews(
    records: Iterable[PreviewRecord], *, now: float | None = None, fleet: Fleet | None = None
) -> list[PreviewSummary]:
    """Records of one environment (one cluster per cloud) folded into one summary, soonest expiry first.

    Cost so far is each cluster's preview estimate (pricing.py, GPU node running all day: an upper
    bound) times the hours since it was created; unknown (None) without the fleet it was made from.
    """
    now = time.time() if now is None else now
    by_environment: dict[tuple[str, str], list[PreviewRecord]] = {}
    for record in records:
        by_environment.setdefault((record.fleet, record.environment), []).append(record)
    summaries: list[PreviewSummary] = []
    for (fleet_name, environment), group in by_environment.items():
        group.sort(key=lambda r: (r.cloud, r.region, r.cluster_name))
        expires_at = max(r.expires_at for r in group)
        created_at = min(r.created_at for r in group)
        costs = [preview_cluster_cost(r, fleet) if fleet else None for r in group]
        known = [c for c in costs if c is not None]
        usd_per_hour: float | None = None
        cost_so_far: float | None = None
        if len(known) == len(group):
            usd_per_hour = sum(c.usd_per_hour for c in known)
            cost_so_far = sum(
                c.usd_per_hour * max(0.0, now - r.created_at) / SECONDS_PER_HOUR
                for c, r in zip(known, group, strict=True)
            )
        latest = max(group, key=lambda r: r.expires_at)  # its tags are the most recent deploy's
        summaries.append(
            PreviewSummary(
                environment=environment,
                fleet=fleet_name,
                branch=latest.branch,
                owner=latest.owner,
                expires_at=expires_at,
                created_at=created_at,
                records=tuple(group),
                age_hours=max(0.0, now - created_at) / SECONDS_PER_HOUR,
                ttl_left_hours=(expires_at - now) / SECONDS_PER_HOUR,
                usd_per_hour=usd_per_hour,
                cost_so_far_usd=cost_so_far,
            )
        )
    summaries.sort(key=lambda s: (s.expires_at, s.environment))
    return summaries

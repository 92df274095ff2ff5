"""Find preview environments by their tags, through each cloud's lister (gpufleet/clouds/<cloud>.py).

Each cluster a preview created carries the preview tags of stacks.context (gpufleet-preview=true,
gpufleet-environment, gpufleet-expires-at, gpufleet-base-environment, ...); the cluster is what costs
money, so it is what the inventory looks for. What a cloud's lister could not look at comes back as a
note, never as "nothing there".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gpufleet.clouds import CLOUDS, ClientFactory, TaggedCluster
from gpufleet.spec import Fleet
from pipelines.previews.pricing import ClusterCost, CostEstimate
from stacks.context import (
    TAG_BASE_ENVIRONMENT,
    TAG_BRANCH,
    TAG_ENVIRONMENT,
    TAG_EXPIRES_AT,
    TAG_FLEET,
    TAG_OWNER,
    TAG_PREVIEW,
    TAG_TTL_HOURS,
    StackContext,
)

SECONDS_PER_HOUR = 3600

# Per cloud, the factory of its API client (aws: region -> EKS client, gcp: () -> ClusterManagerClient);
# a cloud left out uses its default client. Tests pass clients bound to moto or a fake server.
CloudClients = Mapping[str, ClientFactory]


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
    # The environment whose state bucket holds the preview's state; "" when the tag is missing (such a
    # preview is listed, but never destroyed on a guess).
    base_environment: str = ""

    @property
    def created_at(self) -> int:
        # Not a tag of its own: a re-deploy moves the expiry, and this follows it.
        return self.expires_at - self.ttl_hours * SECONDS_PER_HOUR

    def describe(self) -> str:
        return f"{self.cloud} {self.region} cluster {self.cluster_name}"


@dataclass(frozen=True)
class Inventory:
    records: tuple[PreviewRecord, ...]
    # One line each: clouds not listed, clusters skipped for bad tags, GKE zones that did not answer.
    notes: tuple[str, ...] = ()


def record_from_tags(
    tags: Mapping[str, str],
    *,
    cloud: str,
    region: str,
    cluster_name: str,
    resource_id: str,
    owner_tag: str = TAG_OWNER,
) -> PreviewRecord | str | None:
    """The preview a cluster's tags describe; None if it is no preview, a one-line note if its tags
    are unusable (such a cluster is reported, never swept: its expiry is unknown).

    owner_tag: the tag key the fleet records the owner under (previews.owner_tag), TAG_OWNER if absent.
    """
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
        owner=tags.get(owner_tag) or tags.get(TAG_OWNER, ""),
        cloud=cloud,
        region=region,
        cluster_name=cluster_name,
        expires_at=expires_at,
        ttl_hours=ttl_hours,
        resource_id=resource_id,
        base_environment=tags.get(TAG_BASE_ENVIRONMENT, ""),
    )


def list_previews(
    fleet: Fleet, clients: CloudClients | None = None, clouds: Sequence[str] | None = None
) -> Inventory:
    """Previews in the places the fleet's cloud clusters live (AWS regions, GCP projects ...): any
    fleet's previews found there are returned; PreviewRecord.fleet says whose."""
    clients = clients or {}
    wanted = set(clouds) if clouds is not None else {c.cloud for c in fleet.cloud_clusters()}
    owner_tag = fleet.previews.owner_tag  # the tag key the stacks record the owner under
    records: list[PreviewRecord] = []
    notes: list[str] = []
    for name, provider in CLOUDS.items():
        if name not in wanted:
            continue
        listing = provider.list_clusters(provider.places(fleet), (TAG_PREVIEW, "true"), clients.get(name))
        notes += listing.notes
        for cluster in listing.clusters:
            found = _record(cluster, owner_tag)
            if isinstance(found, PreviewRecord):
                records.append(found)
            elif found is not None:
                notes.append(found)
    return Inventory(tuple(records), tuple(notes))


def _record(cluster: TaggedCluster, owner_tag: str) -> PreviewRecord | str | None:
    return record_from_tags(
        cluster.tags,
        cloud=cluster.cloud,
        region=cluster.region,
        cluster_name=cluster.name,
        resource_id=cluster.resource_id,
        owner_tag=owner_tag,
    )


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
    # None without an estimate, or when a cluster could not be matched to it (another fleet's, renamed).
    usd_per_hour: float | None
    cost_so_far_usd: float | None

    @property
    def clouds(self) -> tuple[str, ...]:
        return tuple(sorted({r.cloud for r in self.records}))

    def expired(self, now: float) -> bool:
        return self.expires_at < now


def fleet_cluster_name(record: PreviewRecord, fleet: Fleet) -> str | None:
    """The fleet.yaml cluster a preview cluster was made from: its cloud name is
    fit_name(<cluster>, <environment>) (StackContext.cluster_name at the cloud's limit)."""
    if record.fleet != fleet.name or record.cloud not in CLOUDS:
        return None
    same_cloud = [c for c in fleet.cloud_clusters() if c.cloud == record.cloud]
    ctx = StackContext(fleet=fleet, environment=record.environment)
    limit = CLOUDS[record.cloud].cluster_name_max_length
    for cluster in same_cloud:
        if ctx.cluster_name(cluster.name, limit) == record.cluster_name:
            return cluster.name
    # A stack that names its cluster otherwise: the one cluster of that cloud in that region (a GKE
    # location may be a zone of it) is still unambiguous.
    in_region = [
        c for c in same_cloud if record.region == c.region or record.region.startswith(f"{c.region}-")
    ]
    return in_region[0].name if len(in_region) == 1 else None


def record_cost(record: PreviewRecord, fleet: Fleet, estimate: CostEstimate) -> ClusterCost | None:
    """The estimate's stack for the cluster of this record: the same cluster when the estimate was made
    from this preview's synth, else the same fleet.yaml cluster in the estimate's environment."""
    exact = estimate.cluster(record.cloud, record.cluster_name)
    if exact is not None:
        return exact
    name = fleet_cluster_name(record, fleet)
    if name is None:
        return None
    limit = CLOUDS[record.cloud].cluster_name_max_length
    for cost in estimate.clusters:
        if cost.cloud == record.cloud and cost.environment:
            expected = StackContext(fleet=fleet, environment=cost.environment).cluster_name(name, limit)
            if cost.cluster == expected:
                return cost
    return None


def group_previews(
    records: Iterable[PreviewRecord],
    *,
    now: float | None = None,
    fleet: Fleet | None = None,
    estimate: CostEstimate | None = None,
) -> list[PreviewSummary]:
    """Records of one environment (one cluster per cloud) folded into one summary, soonest expiry first.

    Cost so far is each cluster's hourly cost in `estimate` (priced from a synth of a preview of the
    fleet: every node at its pool's maximum, an upper bound) times the hours since it was created;
    unknown (None) without an estimate or the fleet it was made from.
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
        costs = [record_cost(r, fleet, estimate) if fleet and estimate else None for r in group]
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

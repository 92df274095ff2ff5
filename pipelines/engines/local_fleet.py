"""The engine pipeline on the local fleet: what `gpufleet up` publishes and loads, and `engine load/unload`.

`up` publishes each declared model that has no version in the store yet, the same way a user does it
(`engine build` for the cpu target, then `engine push`), so every version in the store, the first
included, has one manifest format. Then each cluster serves the versions `engine load/unload` last set
for it, or the newest published version when nothing was set (or what was set is no longer there: the
local store lives in memory and starts empty after `down`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import UserError
from gpufleet.local.fleet import FleetEndpoints, LocalFleet
from gpufleet.objectstore import ObjectStore
from gpufleet.spec import Cluster, Fleet, ModelSpec
from gpufleet.triton_admin import serving_versions
from pipelines.engines.build import build_engine, default_package_dir
from pipelines.engines.load import (
    PublishedVersion,
    Replica,
    compatibility_refusal,
    load_config_json,
    published_versions,
    read_published,
    serve_on_replicas,
    signature_refusal,
    verify_checksums,
)
from pipelines.engines.metadata import CPU_TARGET
from pipelines.engines.package import read_package
from pipelines.engines.push import git_lineage, push_package

Report = Callable[[str], None]
JOURNAL_FOLDER = "push-journal"
# HAProxy checks each replica every second and sends to it again after one good check
# (gpufleet/local/haproxy.py): wait that long, plus margin, before taking the next replica out.
PROXY_RISE_S = 1.5


@dataclass(frozen=True)
class ServeOutcome:
    cluster: str
    model: str
    versions: list[int]
    replicas: list[str]
    verified: list[int]  # versions whose stored files were checked against their manifest here
    changed: bool  # False: every replica already served exactly these versions


def publish_missing(fleet: Fleet, fleet_file: Path, store: ObjectStore, home: Path, report: Report) -> None:
    """Build and push the cpu package of every declared model the store has no version of."""
    for model in fleet.models:
        if published_versions(store, model.name):
            continue
        folder = default_package_dir(home, model.name, CPU_TARGET)
        report(f"building {model.name} for cpu into {folder}")
        build_engine(model, target=CPU_TARGET, out=folder)
        result = push_package(
            store,
            model,
            read_package(folder),
            journal_dir=home / JOURNAL_FOLDER,
            lineage=git_lineage(fleet_file.resolve().parent),
        )
        report(f"published {model.name} version {result.version} to the model store")


def cluster_spec(fleet: Fleet, name: str) -> Cluster:
    for cluster in fleet.clusters:
        if cluster.name == name:
            return cluster
    known = ", ".join(c.name for c in fleet.clusters)
    raise UserError(f"cluster '{name}' is not in the fleet file; use one of: {known}")


def replicas_of(endpoints: FleetEndpoints, cluster: str) -> list[Replica]:
    return [Replica(r.name, r.http_url) for r in endpoints.cluster(cluster).replicas]


def currently_served(local: LocalFleet, endpoints: FleetEndpoints, cluster: str, model: str) -> list[int]:
    """What the cluster is meant to serve now: the recorded set, else what its first replica serves."""
    recorded = local.served(cluster, model)
    if recorded:
        return recorded
    first = endpoints.cluster(cluster).replicas[0]
    return sorted(serving_versions(first.http_url, model))


def serve_on_cluster(
    local: LocalFleet,
    endpoints: FleetEndpoints,
    fleet: Fleet,
    cluster: str,
    model: ModelSpec,
    store: ObjectStore,
    versions: Sequence[int],
    report: Report,
) -> ServeOutcome:
    """Make every replica of `cluster` serve exactly `versions`, after every check (see load.py)."""
    spec = cluster_spec(fleet, cluster)
    replicas = replicas_of(endpoints, cluster)  # a cluster that is not running is refused here
    wanted = sorted(set(versions))
    if not wanted:
        raise UserError(f"{model.name} on {cluster}: no version left to serve; load another version first")
    published = [read_published(store, model.name, v) for v in wanted]
    for version in published:
        refusal = compatibility_refusal(spec, version)
        if refusal:
            raise UserError(refusal)
    new = [v for v in wanted if v not in (local.served(cluster, model.name) or [])]
    refusal = signature_refusal(model, published, new[-1] if new else wanted[-1], cluster)
    if refusal:
        raise UserError(refusal)
    already = [set(serving_versions(r.url, model.name)) == set(wanted) for r in replicas]
    if all(already):
        local.record_served(cluster, model.name, wanted)
        return ServeOutcome(cluster, model.name, wanted, [r.name for r in replicas], [], changed=False)
    served_everywhere = set.intersection(*(set(serving_versions(r.url, model.name)) for r in replicas))
    fresh = [v for v in published if v.version not in served_everywhere]
    for version in fresh:
        report(f"checking the stored files of {model.name} version {version.version} against its manifest")
        verify_checksums(store, version)
    config = load_config_json(model, published)
    serve_on_replicas(replicas, model.name, config, wanted, report, settle_s=PROXY_RISE_S)
    local.record_served(cluster, model.name, wanted)
    return ServeOutcome(
        cluster, model.name, wanted, [r.name for r in replicas], [v.version for v in fresh], changed=True
    )


def serve_recorded(
    fleet: Fleet, local: LocalFleet, endpoints: FleetEndpoints, store: ObjectStore, report: Report
) -> None:
    """For `up`: each cluster serves its recorded versions (if all still published), else the newest."""
    for cluster in endpoints.clusters:
        for model in fleet.models:
            available = published_versions(store, model.name)
            if not available:
                continue
            recorded = local.served(cluster.name, model.name)
            wanted = recorded if recorded and set(recorded) <= set(available) else [available[-1]]
            serve_on_cluster(local, endpoints, fleet, cluster.name, model, store, wanted, report)


def describe(published: PublishedVersion) -> str:
    meta = published.metadata
    return f"{meta.target} {meta.format} ({meta.runtime}, {meta.precision})"

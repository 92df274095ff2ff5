"""Dated cloud facts gpufleet checks fleets against: GPU instance types per cloud, the zones that offer
each GKE accelerator (gpufleet/data/gpu_catalog.yaml), and the Kubernetes versions each cloud creates
clusters with (gpufleet/data/kubernetes_versions.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

CATALOG_FILE = "gpu_catalog.yaml"
KUBERNETES_VERSIONS_FILE = "kubernetes_versions.yaml"
CATALOG_CLOUDS = ("aws", "gcp", "azure")
GCP_ZONES_SECTION = "gcp_accelerator_zones"


@dataclass(frozen=True)
class InstanceType:
    cloud: str
    name: str
    gpu: str  # lowercase GPU model: a10g, l4, a100-80gb ...
    gpus: int  # GPUs per instance
    gpu_arch: str  # sm75, sm80, sm86, sm89, sm90: what TensorRT engines are built for
    vcpus: int
    memory_gib: float
    on_demand_usd_per_hour: float  # approximate list price, for cost estimates only
    accelerator: str | None = None  # GKE accelerator type (gcp only), e.g. nvidia-l4


class CatalogError(Exception):
    """The packaged catalog file is malformed: a bug in gpufleet, not in the user's fleet file."""


def _entry(cloud: str, name: str, fields: Any) -> InstanceType:
    where = f"{CATALOG_FILE}: {cloud}.{name}"
    if not isinstance(fields, dict):
        raise CatalogError(f"{where}: expected a mapping of fields")
    expected = {"gpu", "gpus", "gpu_arch", "vcpus", "memory_gib", "on_demand_usd_per_hour"}
    allowed = expected | ({"accelerator"} if cloud == "gcp" else set())
    missing, unknown = expected - fields.keys(), fields.keys() - allowed
    if missing or unknown:
        raise CatalogError(f"{where}: missing {sorted(missing)}, unknown {sorted(map(str, unknown))}")
    if cloud == "gcp" and not isinstance(fields.get("accelerator"), str):
        raise CatalogError(f"{where}: gcp entries need an accelerator")
    try:
        return InstanceType(
            cloud=cloud,
            name=name,
            gpu=str(fields["gpu"]),
            gpus=int(fields["gpus"]),
            gpu_arch=str(fields["gpu_arch"]),
            vcpus=int(fields["vcpus"]),
            memory_gib=float(fields["memory_gib"]),
            on_demand_usd_per_hour=float(fields["on_demand_usd_per_hour"]),
            accelerator=fields.get("accelerator"),
        )
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: {exc}") from exc


def _data_file(name: str) -> Any:
    return yaml.safe_load(resources.files("gpufleet.data").joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _raw_catalog() -> dict[str, Any]:
    raw = _data_file(CATALOG_FILE)
    if not isinstance(raw, dict) or set(raw) != {*CATALOG_CLOUDS, GCP_ZONES_SECTION}:
        raise CatalogError(
            f"{CATALOG_FILE}: expected exactly the sections {', '.join(CATALOG_CLOUDS)}, {GCP_ZONES_SECTION}"
        )
    return raw


@lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, InstanceType]]:
    raw = _raw_catalog()
    catalog: dict[str, dict[str, InstanceType]] = {}
    for cloud in CATALOG_CLOUDS:
        entries = raw[cloud]
        if not isinstance(entries, dict) or not entries:
            raise CatalogError(f"{CATALOG_FILE}: {cloud} must map instance type names to fields")
        catalog[cloud] = {str(name): _entry(cloud, str(name), fields) for name, fields in entries.items()}
    return catalog


def instance_type(cloud: str, name: str) -> InstanceType | None:
    """The catalog entry for an instance/machine type, or None if gpufleet does not know it."""
    return _catalog().get(cloud, {}).get(name)


def known_instance_types(cloud: str) -> list[str]:
    """Names of the known types for a cloud, in catalog order (smallest first per family); [] if none."""
    return list(_catalog().get(cloud, {}))


def instance_types(cloud: str) -> list[InstanceType]:
    """All catalog entries for a cloud, in catalog order."""
    return list(_catalog().get(cloud, {}).values())


# -- zones that offer a GKE accelerator --------------------------------------------------------------


@dataclass(frozen=True)
class AcceleratorZones:
    as_of: str  # when the zone lists were last checked
    by_region: dict[str, tuple[str, ...]]  # region -> zones that offer the accelerator


@lru_cache(maxsize=1)
def _gcp_accelerator_zones() -> dict[str, AcceleratorZones]:
    section = _raw_catalog()[GCP_ZONES_SECTION]
    where = f"{CATALOG_FILE}: {GCP_ZONES_SECTION}"
    if not isinstance(section, dict) or not isinstance(section.get("as_of"), str):
        raise CatalogError(f"{where}: expected a mapping with an as_of date")
    as_of = section["as_of"]
    zones: dict[str, AcceleratorZones] = {}
    for accelerator, regions in section.items():
        if accelerator == "as_of":
            continue
        if not isinstance(regions, dict) or not regions:
            raise CatalogError(f"{where}.{accelerator}: expected region -> list of zones")
        by_region: dict[str, tuple[str, ...]] = {}
        for region, region_zones in regions.items():
            if (
                not isinstance(region_zones, list)
                or not region_zones
                or not all(isinstance(z, str) and z.startswith(f"{region}-") for z in region_zones)
            ):
                raise CatalogError(f"{where}.{accelerator}.{region}: expected zones of {region}")
            by_region[str(region)] = tuple(region_zones)
        zones[str(accelerator)] = AcceleratorZones(as_of=as_of, by_region=by_region)
    known = {t.accelerator for t in _catalog()["gcp"].values()}
    if known - set(zones):
        raise CatalogError(f"{where}: no zones for {', '.join(sorted(str(a) for a in known - set(zones)))}")
    return zones


def gcp_accelerator_zones(accelerator: str) -> AcceleratorZones | None:
    """Where a GKE accelerator type (e.g. nvidia-l4) is offered, per region; None if not in the catalog."""
    return _gcp_accelerator_zones().get(accelerator)


# -- Kubernetes versions that can be created ---------------------------------------------------------


@dataclass(frozen=True)
class KubernetesVersions:
    as_of: str  # the date the table describes
    default: str  # a version every cloud creates: the spec default
    by_cloud: dict[str, tuple[str, ...]]  # cloud -> minor versions a new cluster can have, oldest first
    sources: dict[str, tuple[str, ...]]  # cloud -> where the facts come from


def _minor_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@lru_cache(maxsize=1)
def kubernetes_versions() -> KubernetesVersions:
    """The per-cloud table of Kubernetes versions that new clusters can be created with."""
    raw = _data_file(KUBERNETES_VERSIONS_FILE)
    where = KUBERNETES_VERSIONS_FILE
    if not isinstance(raw, dict) or set(raw) != {"as_of", "default", *CATALOG_CLOUDS}:
        raise CatalogError(f"{where}: expected as_of, default and the clouds {', '.join(CATALOG_CLOUDS)}")
    by_cloud: dict[str, tuple[str, ...]] = {}
    sources: dict[str, tuple[str, ...]] = {}
    for cloud in CATALOG_CLOUDS:
        entry = raw[cloud]
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("versions"), dict)
            or not entry["versions"]
        ):
            raise CatalogError(f"{where}: {cloud}.versions must map versions to their dates")
        versions = [str(v) for v in entry["versions"]]
        if not all(re.fullmatch(r"1\.\d+", v) for v in versions):
            raise CatalogError(f'{where}: {cloud}.versions must be quoted minor versions such as "1.35"')
        by_cloud[cloud] = tuple(sorted(versions, key=_minor_key))
        sources[cloud] = tuple(str(s) for s in entry.get("sources") or ())
        if not sources[cloud]:
            raise CatalogError(f"{where}: {cloud} needs the sources of its versions")
    default = str(raw["default"])
    missing = [cloud for cloud in CATALOG_CLOUDS if default not in by_cloud[cloud]]
    if missing:
        raise CatalogError(f"{where}: the default {default} cannot be created on {', '.join(missing)}")
    return KubernetesVersions(as_of=str(raw["as_of"]), default=default, by_cloud=by_cloud, sources=sources)


def supported_kubernetes_versions(cloud: str) -> tuple[str, ...]:
    """Minor versions a new cluster on `cloud` can be created with (as of the table's date)."""
    return kubernetes_versions().by_cloud.get(cloud, ())


def default_kubernetes_version() -> str:
    return kubernetes_versions().default


TRITON_RELEASES_FILE = "triton_releases.yaml"


@dataclass(frozen=True)
class TritonRelease:
    release: str  # NGC container tag, "25.10"
    tensorrt: str  # the TensorRT it ships, "10.13.3"
    cuda: str


@dataclass(frozen=True)
class TritonReleases:
    as_of: str
    default: str
    by_release: dict[str, TritonRelease]


@lru_cache(maxsize=1)
def triton_releases() -> TritonReleases:
    """The Triton container releases gpufleet knows, with the TensorRT and CUDA each ships."""
    raw = _data_file(TRITON_RELEASES_FILE)
    where = TRITON_RELEASES_FILE
    if not isinstance(raw, dict) or not isinstance(raw.get("releases"), dict) or not raw["releases"]:
        raise CatalogError(f"{where}: expected as_of, default and releases")
    releases: dict[str, TritonRelease] = {}
    for name, entry in raw["releases"].items():
        if not re.fullmatch(r"\d{2}\.\d{2}", str(name)) or not isinstance(entry, dict):
            raise CatalogError(f'{where}: releases.{name}: expected "YY.MM": {{tensorrt, cuda}}')
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(entry.get("tensorrt"))):
            raise CatalogError(f"{where}: releases.{name}.tensorrt must be a version such as 10.13.3")
        releases[str(name)] = TritonRelease(str(name), str(entry["tensorrt"]), str(entry.get("cuda")))
    default = str(raw.get("default"))
    if default not in releases:
        raise CatalogError(f"{where}: default {default} is not among the releases")
    return TritonReleases(as_of=str(raw.get("as_of")), default=default, by_release=releases)

"""The GPU instance types gpufleet knows per cloud (gpufleet/data/gpu_catalog.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

CATALOG_FILE = "gpu_catalog.yaml"
CATALOG_CLOUDS = ("aws", "gcp", "azure")


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


@lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, InstanceType]]:
    text = resources.files("gpufleet.data").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict) or set(raw) != set(CATALOG_CLOUDS):
        raise CatalogError(f"{CATALOG_FILE}: expected exactly the clouds {', '.join(CATALOG_CLOUDS)}")
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

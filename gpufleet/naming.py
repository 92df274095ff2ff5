"""Name rules, as data and pure checkers: the fleet's own (fleet, pool, version, CIDR) here, each cloud's
(regions, cluster names, buckets, projects) in gpufleet/clouds/<cloud>.py, reached through the functions
below so that gpufleet/spec.py has one place to call.

Every checker returns None when the name is fine, or one line "<problem>; <fix>" that the spec layer
prefixes with the field path. Keeping the rules here (not in the pydantic models) lets the cloud stacks
reuse them and keeps each rule next to the documentation it comes from.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from gpufleet.clouds import CLOUDS as _CLOUDS
from gpufleet.clouds import DNS_LABEL, cloud, dns_label_problem, shown
from gpufleet.clouds.aws import AWS_REGION, s3_bucket_problem
from gpufleet.clouds.azure import AZURE_REGION, AZURE_STORAGE_ACCOUNT, azure_container_problem
from gpufleet.clouds.azure import azure_storage_account_problem as azure_storage_account_problem
from gpufleet.clouds.gcp import GCP_PROJECT_ID, GCP_REGION, GCP_ZONE, gcp_project_problem, gcs_bucket_problem

__all__ = [
    "AWS_REGION",
    "AZURE_REGION",
    "AZURE_STORAGE_ACCOUNT",
    "DNS_LABEL",
    "GCP_PROJECT_ID",
    "GCP_REGION",
    "GCP_ZONE",
    "azure_container_problem",
    "azure_storage_account_problem",
    "dns_label_problem",
    "gcp_project_problem",
    "gcs_bucket_problem",
    "s3_bucket_problem",
    "shown",
]

# Patterns are applied with fullmatch: "$" alone would accept a trailing newline.

CLOUDS: Final = ("local", *_CLOUDS)

# Longest cluster name each control plane accepts (EKS 100, GKE 40, AKS 63); local names become
# process and file names, so they keep to the DNS limit.
LOCAL_CLUSTER_NAME_MAX_LENGTH: Final = 63
CLUSTER_NAME_MAX_LENGTH: Final[dict[str, int]] = {
    "local": LOCAL_CLUSTER_NAME_MAX_LENGTH,
    **{name: c.cluster_name_max_length for name, c in _CLOUDS.items()},
}

FLEET_NAME_MAX_LENGTH: Final = 40

# AKS node pool names are 1-12 lowercase letters and digits starting with a letter (Linux pools);
# the strictest of the three clouds, applied everywhere so pool names are portable.
GPU_POOL_NAME: Final = re.compile(r"^[a-z][a-z0-9]{0,11}$")

KUBERNETES_VERSION: Final = re.compile(r"^1\.\d{2}$")


def fleet_name_problem(name: str) -> str | None:
    return dns_label_problem(name, FLEET_NAME_MAX_LENGTH, "fleet name")


def cluster_name_problem(cloud_name: str, name: str) -> str | None:
    if cloud_name in _CLOUDS:
        return cloud(cloud_name).cluster_name_problem(name)
    if len(name) > LOCAL_CLUSTER_NAME_MAX_LENGTH:
        return (
            f"cluster name {shown(name)} is {len(name)} characters, over the local cluster limit of "
            f"{LOCAL_CLUSTER_NAME_MAX_LENGTH}; shorten it to {LOCAL_CLUSTER_NAME_MAX_LENGTH} or fewer"
        )
    return dns_label_problem(name, LOCAL_CLUSTER_NAME_MAX_LENGTH, "cluster name")


def gpu_pool_name_problem(name: str) -> str | None:
    if GPU_POOL_NAME.fullmatch(name):
        return None
    return (
        f"pool name {shown(name)} is not allowed; use 1-12 lowercase letters and digits starting with "
        "a letter (the AKS node pool rule, applied on every cloud)"
    )


# Node pools the stacks add beside the GPU pools on each cloud, whose names GPU pools cannot reuse.
RESERVED_POOL_NAMES: dict[str, frozenset[str]] = {name: c.reserved_pool_names for name, c in _CLOUDS.items()}


def reserved_pool_name_problem(cloud_name: str, name: str) -> str | None:
    if name not in RESERVED_POOL_NAMES[cloud_name]:
        return None
    return (
        f"pool name {shown(name)} is taken by the {name} node pool gpufleet adds to every {cloud_name} "
        "cluster; give the GPU pool another name"
    )


def region_problem(cloud_name: str, region: str) -> str | None:
    if cloud_name in _CLOUDS:
        return cloud(cloud_name).region_problem(region)
    return f"no regions for cloud {cloud_name!r}; regions apply to aws, gcp and azure clusters"


def kubernetes_version_problem(version: str) -> str | None:
    if KUBERNETES_VERSION.fullmatch(version):
        return None
    return f'{shown(version)} is not a Kubernetes minor version; use the form 1.NN, such as "1.35"'


def ipv4_cidr_problem(cidr: str) -> str | None:
    try:
        ipaddress.IPv4Network(cidr, strict=True)
    except ipaddress.AddressValueError:
        return f"{shown(cidr)} is not an IPv4 CIDR; use the form 203.0.113.0/24"
    except ipaddress.NetmaskValueError:
        return f"{shown(cidr)} has an invalid prefix length; use /0 to /32, as in 203.0.113.0/24"
    except ValueError:
        # Host bits set: suggest the network the user most likely meant.
        network = ipaddress.IPv4Network(cidr, strict=False)
        return f"{shown(cidr)} has host bits set; use {network}"
    if "/" not in cidr:
        return f"{shown(cidr)} has no prefix length; use {cidr}/32 for a single address"
    return None

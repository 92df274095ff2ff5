"""Name rules of each cloud, as data and pure checkers.

Every checker returns None when the name is fine, or one line "<problem>; <fix>" that the spec layer
prefixes with the field path. Keeping the rules here (not in the pydantic models) lets the cloud stacks
reuse them and keeps each rule next to the documentation it comes from.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

# Patterns are applied with fullmatch: "$" alone would accept a trailing newline.

CLOUDS: Final = ("local", "aws", "gcp", "azure")

# Lowercase DNS label (RFC 1123). EKS would also accept uppercase and '_', GKE and AKS would not; one
# style for every cloud means a cluster can move between clouds without a rename.
DNS_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# Longest cluster name each control plane accepts: EKS 100, GKE 40, AKS 63; local names become
# process and file names, so they keep to the DNS limit.
CLUSTER_NAME_MAX_LENGTH: Final[dict[str, int]] = {"local": 63, "aws": 100, "gcp": 40, "azure": 63}

FLEET_NAME_MAX_LENGTH: Final = 40

# AKS node pool names are 1-12 lowercase letters and digits starting with a letter (Linux pools);
# the strictest of the three clouds, applied everywhere so pool names are portable.
GPU_POOL_NAME: Final = re.compile(r"^[a-z][a-z0-9]{0,11}$")

AWS_REGION: Final = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
GCP_REGION: Final = re.compile(r"^[a-z]+-[a-z]+\d{1,2}$")
GCP_ZONE: Final = re.compile(r"^([a-z]+-[a-z]+\d{1,2})-[a-z]$")
AZURE_REGION: Final = re.compile(r"^[a-z]+[a-z0-9]*$")

GCP_PROJECT_ID: Final = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
AZURE_STORAGE_ACCOUNT: Final = re.compile(r"^[a-z0-9]{3,24}$")
KUBERNETES_VERSION: Final = re.compile(r"^1\.\d{2}$")

_S3_BUCKET_CHARS: Final = re.compile(r"^[a-z0-9.-]+$")
_AZURE_CONTAINER_CHARS: Final = re.compile(r"^[a-z0-9-]+$")
_IPV4_LIKE: Final = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")

# Reserved by S3 for access points, Object Lambda, directory buckets and its own documentation.
_S3_RESERVED_PREFIXES: Final = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES: Final = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")


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


def fleet_name_problem(name: str) -> str | None:
    return dns_label_problem(name, FLEET_NAME_MAX_LENGTH, "fleet name")


def _reserved_s3_prefix(base: str) -> str | None:
    """The reserved S3 prefix a name, or any name built as `<base>-<suffix>`, would start with."""
    for prefix in _S3_RESERVED_PREFIXES:
        if base.startswith(prefix) or f"{base}-".startswith(prefix):
            return prefix
    return None


def cluster_name_problem(cloud: str, name: str) -> str | None:
    limit = CLUSTER_NAME_MAX_LENGTH.get(cloud, 63)
    if len(name) > limit:
        # Name the control plane that imposes the limit: 41 characters is fine on EKS but not on GKE.
        owner = {"aws": "EKS", "gcp": "GKE", "azure": "AKS"}.get(cloud, "local cluster")
        return (
            f"cluster name {shown(name)} is {len(name)} characters, over the {owner} limit of {limit}; "
            f"shorten it to {limit} or fewer"
        )
    return dns_label_problem(name, limit, "cluster name")


def gpu_pool_name_problem(name: str) -> str | None:
    if GPU_POOL_NAME.fullmatch(name):
        return None
    return (
        f"pool name {shown(name)} is not allowed; use 1-12 lowercase letters and digits starting with "
        "a letter (the AKS node pool rule, applied on every cloud)"
    )


# Node pools the stacks add beside the GPU pools on each cloud, whose names GPU pools cannot reuse
# (EKS GPU node groups are named gpu-<pool>, so nothing collides there).
RESERVED_POOL_NAMES: dict[str, frozenset[str]] = {
    "aws": frozenset(),
    "gcp": frozenset({"system"}),
    "azure": frozenset({"system", "platform"}),
}


def reserved_pool_name_problem(cloud: str, name: str) -> str | None:
    if name not in RESERVED_POOL_NAMES[cloud]:
        return None
    return (
        f"pool name {shown(name)} is taken by the {name} node pool gpufleet adds to every {cloud} cluster; "
        "give the GPU pool another name"
    )


def region_problem(cloud: str, region: str) -> str | None:
    if cloud == "aws":
        if AWS_REGION.fullmatch(region):
            return None
        return f"{shown(region)} is not an AWS region name; use a region such as us-east-1 or eu-west-2"
    if cloud == "gcp":
        if GCP_REGION.fullmatch(region):
            return None
        zone = GCP_ZONE.fullmatch(region)
        if zone:
            return f"{shown(region)} is a zone, not a region; use the region {zone.group(1)}"
        return f"{shown(region)} is not a GCP region name; use a region such as us-central1 or europe-west4"
    if cloud == "azure":
        if AZURE_REGION.fullmatch(region):
            return None
        suggestion = re.sub(r"[^a-z0-9]", "", region.lower())
        example = suggestion if AZURE_REGION.fullmatch(suggestion) else "eastus"
        return (
            f"{shown(region)} is not an Azure region name; use the programmatic name in lowercase "
            f"without spaces, such as {example}"
        )
    return f"no regions for cloud {cloud!r}; regions apply to aws, gcp and azure clusters"


def kubernetes_version_problem(version: str) -> str | None:
    if KUBERNETES_VERSION.fullmatch(version):
        return None
    return f'{shown(version)} is not a Kubernetes minor version; use the form 1.NN, such as "1.31"'


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


_S3_FIX: Final = "use 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"


def s3_bucket_problem(bucket: str) -> str | None:
    """S3 general purpose bucket naming rules (also what the local S3-compatible store enforces)."""
    what = f"{shown(bucket)} is not a valid S3 bucket name"
    if not 3 <= len(bucket) <= 63:
        return f"{what} (it has {len(bucket)} characters); {_S3_FIX}"
    if not _S3_BUCKET_CHARS.fullmatch(bucket):
        return f"{what} (only lowercase letters, digits, '.' and '-' are allowed); {_S3_FIX}"
    if not (bucket[0].isalnum() and bucket[-1].isalnum()):
        return f"{what} (it must start and end with a letter or digit); {_S3_FIX}"
    if ".." in bucket:
        return f"{what} (it contains '..'); use single dots between parts"
    if _IPV4_LIKE.fullmatch(bucket):
        return f"{what} (it looks like an IP address); use a name such as my-fleet-models"
    # Also `sthree` alone: every environment's bucket is `<bucket>-<env>`, which would start with `sthree-`.
    if prefix := _reserved_s3_prefix(bucket):
        return f"{what} (the prefix {prefix!r} is reserved by AWS); choose a name without it"
    for suffix in _S3_RESERVED_SUFFIXES:
        if bucket.endswith(suffix):
            return f"{what} (the suffix {suffix!r} is reserved by AWS); choose a name without it"
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


_AZURE_CONTAINER_FIX: Final = "use 3-63 lowercase letters, digits and single '-' between them"


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

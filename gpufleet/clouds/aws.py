"""AWS: region and S3 bucket rules, credentials (boto3's chain), EKS lister, EKS stack prices."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

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
    from gpufleet.spec import Fleet

AWS_REGION: Final = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
EKS_CLUSTER_NAME_MAX_LENGTH: Final = 100

_S3_BUCKET_CHARS: Final = re.compile(r"^[a-z0-9.-]+$")
_IPV4_LIKE: Final = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
# Reserved by S3 for access points, Object Lambda, directory buckets and its own documentation.
_S3_RESERVED_PREFIXES: Final = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES: Final = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")
_S3_FIX: Final = "use 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"

AWS_NO_CREDENTIALS: Final = (
    "aws: no credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "or run `aws sso login`)"
)
# EKS support tiers (upgrade_policy.support_type); a cluster without the block is priced as STANDARD:
# the extended-support fee applies only once its version leaves standard support.
EKS_DEFAULT_TIER: Final = "STANDARD"


class EksApi(Protocol):
    """The part of a boto3 EKS client the lister calls."""

    def list_clusters(self, **kwargs: Any) -> dict[str, Any]: ...

    def describe_cluster(self, *, name: str) -> dict[str, Any]: ...


def _reserved_s3_prefix(base: str) -> str | None:
    """The reserved S3 prefix a name, or any name built as `<base>-<suffix>`, would start with."""
    for prefix in _S3_RESERVED_PREFIXES:
        if base.startswith(prefix) or f"{base}-".startswith(prefix):
            return prefix
    return None


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


def _default_eks(region: str) -> EksApi:
    import boto3

    client: EksApi = boto3.client("eks", region_name=region)
    return client


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


class Aws:
    name = "aws"
    service = "EKS"
    cluster_name_max_length = EKS_CLUSTER_NAME_MAX_LENGTH
    # EKS GPU node groups are named gpu-<pool>, so no GPU pool name collides with the system group.
    reserved_pool_names: frozenset[str] = frozenset()

    # -- name rules ----------------------------------------------------------------------------------
    def region_problem(self, region: str) -> str | None:
        if AWS_REGION.fullmatch(region):
            return None
        return f"{shown(region)} is not an AWS region name; use a region such as us-east-1 or eu-west-2"

    def cluster_name_problem(self, name: str) -> str | None:
        return cluster_name_rule(self, name)

    def bucket_problem(self, bucket: str) -> str | None:
        return s3_bucket_problem(bucket)

    # -- credentials ---------------------------------------------------------------------------------
    def credentials_problem(self, environ: Mapping[str, str], which: Which) -> str | None:
        import boto3
        from botocore.exceptions import BotoCoreError

        try:
            found = boto3.Session().get_credentials()
        except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
            return f"aws: cannot read credentials ({exc}); fix AWS_PROFILE or ~/.aws/config"
        return AWS_NO_CREDENTIALS if found is None else None

    # -- preview lister ------------------------------------------------------------------------------
    def places(self, fleet: Fleet) -> list[str]:
        return sorted({c.region for c in fleet.cloud_clusters() if c.cloud == self.name})

    def list_clusters(
        self, places: Sequence[str], tag: tuple[str, str], client: ClientFactory | None = None
    ) -> Listing:
        """EKS clusters of each region carrying `tag` (list_clusters + describe_cluster for the tags).

        The Resource Groups Tagging API would find them in one call per region, but moto does not index
        EKS clusters there, and a region holds few clusters.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        factory = client or _default_eks
        key, value = tag
        found: list[TaggedCluster] = []
        for region in sorted(set(places)):
            try:
                eks: EksApi = factory(region)
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
                    tags = dict(cluster.get("tags") or {})
                    if tags.get(key) == value:
                        arn = str(cluster.get("arn", name))
                        found.append(TaggedCluster(self.name, region, name, arn, tags))
            except (BotoCoreError, ClientError) as exc:
                raise _aws_error(region, exc) from None
        return Listing(tuple(found))

    # -- prices --------------------------------------------------------------------------------------
    def price_stack(self, stack: Json, prices: CloudPrices) -> PricedStack | None:
        """EKS control planes, managed node groups at max_size, NAT gateways and Elastic IPs."""
        items: list[CostItem] = []
        cluster_name, tags = "", {}
        for rid, body in resources_of(stack, "aws_eks_cluster"):
            where = f"aws_eks_cluster.{rid}"
            cluster_name = text_field(body.get("name"), f"{where}.name")
            tags = dict(body.get("tags") or {})
            policy = body.get("upgrade_policy") or {}
            tier = str(policy.get("support_type", EKS_DEFAULT_TIER)).upper()
            fee = prices.control_plane(tier, where)
            items.append(CostItem("control plane", "control plane", f"EKS {tier.lower()} support", 1, fee))
        for rid, body in resources_of(stack, "aws_eks_node_group"):
            where = f"aws_eks_node_group.{rid}"
            scaling = body.get("scaling_config")
            if not isinstance(scaling, dict):
                raise PricingError(f"{where}: no scaling_config to size the node group from")
            types = body.get("instance_types") or []
            items.append(
                node_item(
                    prices,
                    pool=str(body.get("node_group_name") or rid),
                    instance_types=[text_field(t, f"{where}.instance_types") for t in types],
                    nodes=count_field(scaling.get("max_size"), f"{where}.scaling_config.max_size"),
                    spot=body.get("capacity_type") == "SPOT",
                    where=where,
                )
            )
        nats = resources_of(stack, "aws_nat_gateway")
        if nats:
            fee = prices.nat_gateway_usd_per_hour
            items.append(
                CostItem(
                    "nat gateway",
                    "nat gateway",
                    "hourly fee only (data processed not included)",
                    len(nats),
                    fee,
                )
            )
        addresses = resources_of(stack, "aws_eip")
        if addresses:
            fee = prices.public_ipv4_usd_per_hour
            items.append(
                CostItem("public ipv4", "elastic ip", "public IPv4 address hours", len(addresses), fee)
            )
        if not items:
            return None
        region = ""
        providers = stack.get("provider", {}).get("aws") or [{}]
        if isinstance(providers, list) and providers and isinstance(providers[0], dict):
            region = str(providers[0].get("region", ""))
        return PricedStack(self.name, region, cluster_name, tags, tuple(items))


CLOUD = Aws()

"""AWS stacks synthesized from the example fleet.yaml: structure, security settings, tags, names, checkov.

Structural assertions on cdk.tf.json (no golden files). The session fixtures synthesize every cloud once;
the variant-fleet test synthesizes its own small AWS-only fleet.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from gpufleet.environments import preview_environment
from gpufleet.spec import AwsCluster, Fleet, load_fleet
from stacks.context import PREVIEW_TAGS, Preview, StackContext
from tests.cloud.checkov_support import CHECKOV, assert_checkov_clean
from tests.cloud.conftest import (
    PREVIEW_BRANCH,
    PREVIEW_EXPIRES_AT,
    Synthesized,
    expected_gpu_pools,
    synth_one_cloud,
)
from tests.conftest import REPO

CLUSTER_OUTPUTS = {
    "cluster_name",
    "cluster_endpoint",
    "cluster_ca_certificate",
    "region",
    "oidc_provider_arn",
    "triton_role_arn",
    "node_group_name",
    "store_url",
}
SHARED_OUTPUTS = {"store_bucket", "store_url", "state_bucket"}

# --- contexts the fixtures were synthesized with ---------------------------------------------------


@functools.cache
def example_fleet() -> Fleet:
    return load_fleet(REPO / "fleet.yaml")


def prod_ctx() -> StackContext:
    return StackContext(fleet=example_fleet(), environment="prod", base_environment="prod")


def preview_ctx() -> StackContext:
    fleet = example_fleet()
    preview = Preview(PREVIEW_BRANCH, "dev@example.com", fleet.previews.ttl_hours, PREVIEW_EXPIRES_AT)
    return StackContext(
        fleet=fleet, environment=preview_environment(PREVIEW_BRANCH), preview=preview, base_environment="prod"
    )


def aws_clusters(ctx: StackContext) -> list[AwsCluster]:
    return [c for c in ctx.fleet.cloud_clusters() if isinstance(c, AwsCluster)]


def aws_stack_names(synth: Synthesized) -> list[str]:
    return [name for name in synth.stack_names() if "aws" in synth.stack(name).get("provider", {})]


def resources(stack: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return list(stack.get("resource", {}).get(rtype, {}).values())


def only(stack: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = resources(stack, rtype)
    assert len(found) == 1, f"expected one {rtype}, found {len(found)}"
    return found[0]


def policy_documents(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(stack.get("data", {}).get("aws_iam_policy_document", {}))


def referenced_document(stack: dict[str, Any], reference: str) -> dict[str, Any]:
    """The aws_iam_policy_document a `${data.aws_iam_policy_document.<id>.json}` reference points at."""
    match = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.([^.]+)\.json\}", reference)
    assert match, f"not a policy document reference: {reference}"
    return policy_documents(stack)[match.group(1)]


# --- stacks and backends ---------------------------------------------------------------------------


def test_prod_has_one_shared_stack_and_one_stack_per_aws_cluster(synthesized: Synthesized) -> None:
    ctx = prod_ctx()
    expected = [ctx.stack_name("shared", "aws")] + [ctx.stack_name(c.name) for c in aws_clusters(ctx)]
    assert sorted(aws_stack_names(synthesized)) == sorted(expected)


def test_preview_has_only_cluster_stacks(synthesized_preview: Synthesized) -> None:
    ctx = preview_ctx()
    assert sorted(aws_stack_names(synthesized_preview)) == sorted(
        ctx.stack_name(c.name) for c in aws_clusters(ctx)
    )
    assert not any("shared" in name for name in aws_stack_names(synthesized_preview))


def test_shared_stack_keeps_its_state_locally(synthesized: Synthesized) -> None:
    stack = synthesized.stack(prod_ctx().stack_name("shared", "aws"))
    assert list(stack["terraform"]["backend"]) == ["local"]


@pytest.mark.parametrize("preview", [False, True], ids=["prod", "preview"])
def test_cluster_stacks_keep_state_in_the_base_environment_bucket(
    synthesized: Synthesized, synthesized_preview: Synthesized, preview: bool
) -> None:
    ctx = preview_ctx() if preview else prod_ctx()
    synth = synthesized_preview if preview else synthesized
    store_region = aws_clusters(ctx)[0].region
    for cluster in aws_clusters(ctx):
        name = ctx.stack_name(cluster.name)
        backend = synth.stack(name)["terraform"]["backend"]
        assert list(backend) == ["s3"]
        s3 = backend["s3"]
        assert s3["bucket"] == ctx.state_bucket() == "gpufleet-demo-models-prod-tfstate"
        assert s3["key"] == ctx.state_key(name)
        if preview:
            assert s3["key"] == f"previews/{ctx.environment}/{name}.tfstate"
        assert s3["region"] == store_region
        # Locked by an S3 lock object (Terraform 1.10+); the DynamoDB table is deprecated since 1.11.
        assert s3["use_lockfile"] is True and "dynamodb_table" not in s3
        assert s3["encrypt"] is True


def test_each_stack_configures_the_aws_provider_in_its_region(synthesized: Synthesized) -> None:
    ctx = prod_ctx()
    clusters = aws_clusters(ctx)
    shared = synthesized.stack(ctx.stack_name("shared", "aws"))
    assert [p["region"] for p in shared["provider"]["aws"]] == [clusters[0].region]
    for cluster in clusters:
        stack = synthesized.stack(ctx.stack_name(cluster.name))
        assert [p["region"] for p in stack["provider"]["aws"]] == [cluster.region]


# --- shared stack: model store and state backend ---------------------------------------------------


def bucket_parts(stack: dict[str, Any], bucket_name: str) -> dict[str, dict[str, Any]]:
    """The bucket's companion resources (versioning, encryption, ...), found through its reference."""
    address = next(
        key for key, value in stack["resource"]["aws_s3_bucket"].items() if value["bucket"] == bucket_name
    )
    reference = f"${{aws_s3_bucket.{address}.id}}"
    parts: dict[str, dict[str, Any]] = {"aws_s3_bucket": stack["resource"]["aws_s3_bucket"][address]}
    for rtype, entries in stack["resource"].items():
        for value in entries.values():
            if value.get("bucket") == reference:
                assert rtype not in parts, f"two {rtype} for {bucket_name}"
                parts[rtype] = value
    return parts


@pytest.mark.parametrize("which", ["store", "state"])
def test_shared_buckets_are_private_versioned_encrypted_and_tls_only(
    synthesized: Synthesized, which: str
) -> None:
    ctx = prod_ctx()
    stack = synthesized.stack(ctx.stack_name("shared", "aws"))
    name = ctx.store_bucket() if which == "store" else ctx.state_bucket()
    parts = bucket_parts(stack, name)

    block = parts["aws_s3_bucket_public_access_block"]
    for setting in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[setting] is True
    assert parts["aws_s3_bucket_versioning"]["versioning_configuration"]["status"] == "Enabled"
    assert parts["aws_s3_bucket_ownership_controls"]["rule"]["object_ownership"] == "BucketOwnerEnforced"
    (rule,) = parts["aws_s3_bucket_server_side_encryption_configuration"]["rule"]
    default = rule["apply_server_side_encryption_by_default"]
    assert default["sse_algorithm"] == "aws:kms"
    assert default["kms_master_key_id"].startswith("${aws_kms_key.")
    assert rule["bucket_key_enabled"] is True

    (lifecycle,) = parts["aws_s3_bucket_lifecycle_configuration"]["rule"]
    assert lifecycle["status"] == "Enabled"
    noncurrent_days = lifecycle["noncurrent_version_expiration"][0]["noncurrent_days"]
    assert noncurrent_days == (30 if which == "store" else 90)
    assert lifecycle["abort_incomplete_multipart_upload"][0]["days_after_initiation"] >= 1

    statements = referenced_document(stack, parts["aws_s3_bucket_policy"]["policy"])["statement"]
    deny_http = [s for s in statements if s.get("effect") == "Deny"]
    assert deny_http and deny_http[0]["condition"] == [
        {"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}
    ]
    assert parts["aws_s3_bucket_logging"]["target_prefix"] == f"s3/{name}/"


def test_kms_keys_rotate(synthesized: Synthesized) -> None:
    for name in aws_stack_names(synthesized):
        keys = resources(synthesized.stack(name), "aws_kms_key")
        assert keys
        assert all(k["enable_key_rotation"] is True for k in keys)
        assert all(k["deletion_window_in_days"] == 30 for k in keys)


def test_state_needs_no_lock_table(synthesized: Synthesized) -> None:
    for name in aws_stack_names(synthesized):
        assert "aws_dynamodb_table" not in synthesized.stack(name).get("resource", {}), name
        assert synthesized.stack(name)["terraform"]["required_version"] == ">= 1.10"  # S3 lock files


def test_shared_outputs(synthesized: Synthesized) -> None:
    ctx = prod_ctx()
    outputs = synthesized.stack(ctx.stack_name("shared", "aws"))["output"]
    assert set(outputs) >= SHARED_OUTPUTS
    prefix = ctx.fleet.model_store.prefix
    assert outputs["store_url"]["value"] == f"s3://{ctx.store_bucket()}/{prefix}"
    assert outputs["store_bucket"]["value"].startswith("${aws_s3_bucket.")
    assert "lock_table" not in outputs


# --- cluster stacks --------------------------------------------------------------------------------


def cluster_stacks(synth: Synthesized, ctx: StackContext) -> list[tuple[AwsCluster, dict[str, Any]]]:
    return [(c, synth.stack(ctx.stack_name(c.name))) for c in aws_clusters(ctx)]


def test_network_spans_zones_with_private_nodes_and_nat(synthesized: Synthesized) -> None:
    for _, stack in cluster_stacks(synthesized, prod_ctx()):
        eks_name = only(stack, "aws_eks_cluster")["name"]
        subnets = resources(stack, "aws_subnet")
        private = [s for s in subnets if "kubernetes.io/role/internal-elb" in s["tags"]]
        public = [s for s in subnets if "kubernetes.io/role/elb" in s["tags"]]
        assert len(private) == len(public) >= 2
        assert len({s["availability_zone"] for s in private}) == len(private)  # one per zone (element index)
        for subnet in subnets:
            assert subnet["tags"][f"kubernetes.io/cluster/{eks_name}"] == "shared"
            assert subnet.get("map_public_ip_on_launch") in (None, False)
        cidrs = [ipaddress.ip_network(s["cidr_block"]) for s in subnets]
        assert all(a == b or not a.overlaps(b) for a in cidrs for b in cidrs)
        # Production: one NAT gateway per zone, each private subnet routed through one.
        assert len(resources(stack, "aws_nat_gateway")) == len(public)
        assert len(resources(stack, "aws_internet_gateway")) == 1
        private_routes = [
            r for r in resources(stack, "aws_route_table") if r["route"][0].get("nat_gateway_id")
        ]
        assert len(private_routes) == len(private)
        assert len({r["route"][0]["nat_gateway_id"] for r in private_routes}) == len(private)
        # The default security group has no rules at all.
        default_group = only(stack, "aws_default_security_group")
        assert not default_group.get("ingress") and not default_group.get("egress")


def test_preview_network_has_a_single_nat_gateway(synthesized_preview: Synthesized) -> None:
    for _, stack in cluster_stacks(synthesized_preview, preview_ctx()):
        assert len(resources(stack, "aws_nat_gateway")) == 1


def test_vpc_flow_logs_go_to_an_encrypted_log_group_kept_a_year(synthesized: Synthesized) -> None:
    for _, stack in cluster_stacks(synthesized, prod_ctx()):
        flow_log = only(stack, "aws_flow_log")
        assert flow_log["traffic_type"] == "ALL"
        assert flow_log["vpc_id"].startswith("${aws_vpc.")
        log_groups = resources(stack, "aws_cloudwatch_log_group")
        assert len(log_groups) == 2  # flow logs, EKS control plane
        for group in log_groups:
            assert group["retention_in_days"] >= 365
            assert group["kms_key_id"].startswith("${aws_kms_key.")


def test_eks_control_plane_is_private_encrypted_and_logged(synthesized: Synthesized) -> None:
    ctx = prod_ctx()
    for cluster, stack in cluster_stacks(synthesized, ctx):
        eks = only(stack, "aws_eks_cluster")
        assert eks["name"] == ctx.cluster_name(cluster.name, max_length=100)
        assert eks["version"] == cluster.kubernetes_version
        vpc = eks["vpc_config"]
        assert vpc["endpoint_private_access"] is True
        assert vpc["endpoint_public_access"] is cluster.endpoint_public_access is False
        assert "public_access_cidrs" not in vpc
        assert all(s.startswith("${aws_subnet.network_private-") for s in vpc["subnet_ids"])
        assert eks["encryption_config"]["resources"] == ["secrets"]
        assert eks["encryption_config"]["provider"]["key_arn"].startswith("${aws_kms_key.")
        assert set(eks["enabled_cluster_log_types"]) == {
            "api",
            "audit",
            "authenticator",
            "controllerManager",
            "scheduler",
        }
        control_plane_logs = [
            g
            for g in resources(stack, "aws_cloudwatch_log_group")
            if g["name"] == f"/aws/eks/{eks['name']}/cluster"
        ]
        assert len(control_plane_logs) == 1
        oidc = only(stack, "aws_iam_openid_connect_provider")
        assert oidc["client_id_list"] == ["sts.amazonaws.com"]
        assert oidc["url"].endswith(".identity[0].oidc[0].issuer}")
        assert all(re.fullmatch(r"[0-9a-f]{40}", t) for t in oidc["thumbprint_list"])


@pytest.mark.parametrize("preview", [False, True], ids=["prod", "preview"])
def test_control_plane_log_group_survives_down_then_up(
    synthesized: Synthesized, synthesized_preview: Synthesized, preview: bool
) -> None:
    """EKS recreates /aws/eks/<name>/cluster while the cluster is deleted (terraform-aws-eks #920, #2486),
    so the next deploy of the same name (`preview up` after `preview down`) must adopt it, not fail.

    Destroy: the cluster depends on the group, so Terraform deletes the cluster first and the group last.
    Up again: a data source lists the group if it exists and an import block adopts exactly that name
    (tests/cloud/test_terraform.py runs this sequence through Terraform itself)."""
    ctx = preview_ctx() if preview else prod_ctx()
    synth = synthesized_preview if preview else synthesized
    for _, stack in cluster_stacks(synth, ctx):
        eks = only(stack, "aws_eks_cluster")
        name = f"/aws/eks/{eks['name']}/cluster"
        (group_logical,) = [
            k for k, g in stack["resource"]["aws_cloudwatch_log_group"].items() if g["name"] == name
        ]
        assert f"aws_cloudwatch_log_group.{group_logical}" in eks["depends_on"]
        ((lookup_logical, lookup),) = stack["data"]["aws_cloudwatch_log_groups"].items()
        assert lookup["log_group_name_prefix"] == name
        adopt = stack["import"]
        assert adopt["to"] == f"aws_cloudwatch_log_group.{group_logical}"
        assert adopt["id"] == "${each.value}"
        names = f"data.aws_cloudwatch_log_groups.{lookup_logical}.log_group_names"
        assert adopt["for_each"] == f'${{toset([for found in {names} : found if found == "{name}"])}}'


@pytest.mark.parametrize("preview", [False, True], ids=["prod", "preview"])
def test_gpu_node_groups_follow_the_pools(
    synthesized: Synthesized, synthesized_preview: Synthesized, preview: bool
) -> None:
    ctx = preview_ctx() if preview else prod_ctx()
    synth = synthesized_preview if preview else synthesized
    for cluster, stack in cluster_stacks(synth, ctx):
        groups = {g["node_group_name"]: g for g in resources(stack, "aws_eks_node_group")}
        templates = stack["resource"]["aws_launch_template"]
        expected = {e.name: e for e in expected_gpu_pools(cluster.name, preview)}
        assert set(groups) - {"system"} == {f"gpu-{name}" for name in expected}
        for pool in cluster.gpu_pools:
            group = groups[f"gpu-{pool.name}"]
            size = expected[pool.name]
            assert group["ami_type"] == "AL2023_x86_64_NVIDIA"
            assert group["instance_types"] == [pool.instance_type]
            assert group["capacity_type"] == ("SPOT" if size.spot else "ON_DEMAND")
            scaling = group["scaling_config"]
            assert (scaling["min_size"], scaling["max_size"]) == (size.min_nodes, size.max_nodes)
            assert scaling["min_size"] <= scaling["desired_size"] <= scaling["max_size"]
            # The node contract (same on every cloud: tests/cloud/test_node_contract.py).
            assert group["taint"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
            assert group["labels"]["gpufleet.io/pool"] == pool.name
            assert "scaling_config[0].desired_size" in group["lifecycle"]["ignore_changes"]
            assert all(d.startswith("aws_iam_role_policy_attachment.") for d in group["depends_on"])
            template_id = re.fullmatch(
                r"\$\{aws_launch_template\.([^.]+)\.id\}", group["launch_template"]["id"]
            )
            assert template_id
            template = templates[template_id.group(1)]
            (root,) = template["block_device_mappings"]
            assert root["ebs"]["encrypted"] == "true"
            assert root["ebs"]["volume_size"] == pool.disk_gb
            assert template["metadata_options"]["http_tokens"] == "required"
            assert template["metadata_options"]["http_put_response_hop_limit"] == 1
            assert "disk_size" not in group  # set by the launch template


def test_an_untainted_system_node_group_runs_cluster_services(
    synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    for synth, ctx, spot in ((synthesized, prod_ctx(), False), (synthesized_preview, preview_ctx(), True)):
        for _, stack in cluster_stacks(synth, ctx):
            (system,) = [
                g for g in resources(stack, "aws_eks_node_group") if g["node_group_name"] == "system"
            ]
            assert "taint" not in system
            assert system["capacity_type"] == ("SPOT" if spot else "ON_DEMAND")
            assert system["scaling_config"]["min_size"] >= 1


def test_node_role_has_the_worker_policies(synthesized: Synthesized) -> None:
    for _, stack in cluster_stacks(synthesized, prod_ctx()):
        attached = {
            a["policy_arn"].rsplit("/", 1)[-1] for a in resources(stack, "aws_iam_role_policy_attachment")
        }
        assert {
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonEC2ContainerRegistryReadOnly",
            "AmazonEKSClusterPolicy",
        } <= attached


def test_triton_role_reads_only_the_model_prefix_through_irsa(synthesized: Synthesized) -> None:
    ctx = prod_ctx()
    bucket, prefix = ctx.store_bucket(), ctx.fleet.model_store.prefix
    for _, stack in cluster_stacks(synthesized, ctx):
        (role,) = [r for r in resources(stack, "aws_iam_role") if r["name"].endswith("-triton")]
        (trust,) = referenced_document(stack, role["assume_role_policy"])["statement"]
        assert trust["actions"] == ["sts:AssumeRoleWithWebIdentity"]
        assert trust["principals"][0]["type"] == "Federated"
        assert trust["principals"][0]["identifiers"][0].startswith("${aws_iam_openid_connect_provider.")
        conditions = {c["variable"].rsplit(":", 1)[-1]: c["values"] for c in trust["condition"]}
        assert conditions == {"sub": ["system:serviceaccount:triton:triton"], "aud": ["sts.amazonaws.com"]}

        (inline,) = [
            p for p in resources(stack, "aws_iam_role_policy") if p.get("name") == "read-model-store"
        ]
        statements = referenced_document(stack, inline["policy"])["statement"]
        actions = {a for s in statements for a in s["actions"]}
        assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "kms:Decrypt"}
        assert all(s.get("effect", "Allow") == "Allow" for s in statements)
        for statement in statements:
            for resource in statement["resources"]:
                if statement["actions"][0].startswith("s3:"):
                    assert resource.endswith(f":s3:::{bucket}") or resource.endswith(
                        f":s3:::{bucket}/{prefix}/*"
                    )
                else:
                    assert resource.endswith(":key/*")
                    aliases = [c for c in statement["condition"] if c["variable"] == "kms:ResourceAliases"]
                    assert aliases[0]["values"] == [f"alias/gpufleet/model-store/{bucket}"]


def test_cluster_autoscaler_role_scales_only_this_clusters_node_groups(synthesized: Synthesized) -> None:
    # GPU pools start at zero nodes; on EKS only cluster-autoscaler brings the first one.
    for _, stack in cluster_stacks(synthesized, prod_ctx()):
        eks_name = only(stack, "aws_eks_cluster")["name"]
        (role,) = [r for r in resources(stack, "aws_iam_role") if r["name"].endswith("-cluster-autoscaler")]
        (trust,) = referenced_document(stack, role["assume_role_policy"])["statement"]
        conditions = {c["variable"].rsplit(":", 1)[-1]: c["values"] for c in trust["condition"]}
        assert conditions == {
            "sub": ["system:serviceaccount:kube-system:cluster-autoscaler"],
            "aud": ["sts.amazonaws.com"],
        }
        (inline,) = [
            p for p in resources(stack, "aws_iam_role_policy") if p.get("name") == "scale-node-groups"
        ]
        statements = {s["sid"]: s for s in referenced_document(stack, inline["policy"])["statement"]}
        scale = statements["ScaleThisClustersNodeGroups"]
        assert set(scale["actions"]) == {
            "autoscaling:SetDesiredCapacity",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
        }
        # EKS tags each managed node group's Auto Scaling group with these; other groups are out of reach.
        assert {(c["variable"], tuple(c["values"])) for c in scale["condition"]} == {
            (f"aws:ResourceTag/k8s.io/cluster-autoscaler/{eks_name}", ("owned",)),
            ("aws:ResourceTag/k8s.io/cluster-autoscaler/enabled", ("true",)),
        }
        (nodegroups,) = statements["ReadNodeGroupLabelsAndTaints"]["resources"]
        assert nodegroups.endswith(f":nodegroup/{eks_name}/*/*")
        assert all(
            a.split(":")[1].startswith("Describe") or a.startswith("ec2:Get")
            for a in statements["DiscoverNodeGroups"]["actions"]
        )
        assert stack["output"]["cluster_autoscaler_role_arn"]["value"].endswith(".arn}")
        assert stack["output"]["cluster_autoscaler_service_account"]["value"] == "cluster-autoscaler"


def test_model_store_key_alias_matches_what_cluster_stacks_trust(synthesized: Synthesized) -> None:
    ctx = prod_ctx()
    shared = synthesized.stack(ctx.stack_name("shared", "aws"))
    aliases = {a["name"] for a in resources(shared, "aws_kms_alias")}
    assert f"alias/gpufleet/model-store/{ctx.store_bucket()}" in aliases


@pytest.mark.parametrize("preview", [False, True], ids=["prod", "preview"])
def test_cluster_outputs(synthesized: Synthesized, synthesized_preview: Synthesized, preview: bool) -> None:
    ctx = preview_ctx() if preview else prod_ctx()
    synth = synthesized_preview if preview else synthesized
    for cluster, stack in cluster_stacks(synth, ctx):
        outputs = stack["output"]
        assert set(outputs) >= CLUSTER_OUTPUTS
        assert outputs["region"]["value"] == cluster.region
        assert outputs["store_url"]["value"] == f"s3://{ctx.store_bucket()}/{ctx.fleet.model_store.prefix}"
        assert outputs["cluster_endpoint"]["value"].endswith(".endpoint}")
        assert outputs["cluster_ca_certificate"]["value"].endswith(".certificate_authority[0].data}")
        assert not outputs["cluster_ca_certificate"].get("sensitive")
        assert outputs["triton_role_arn"]["value"].startswith("${aws_iam_role.triton-identity")
        assert outputs["node_group_name"]["value"].startswith("${aws_eks_node_group.")


# --- tags and names --------------------------------------------------------------------------------


@functools.cache
def taggable(rtype: str) -> bool:
    """Whether the provider binding of `rtype` takes a `tags` argument, read from the binding's source.

    Parsing the generated module (not importing it) answers without starting the jsii runtime.
    """
    package = importlib.util.find_spec("cdktf_cdktf_provider_aws")
    assert package and package.submodule_search_locations
    source = Path(package.submodule_search_locations[0], rtype.removeprefix("aws_"), "__init__.py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(base, ast.Attribute) and base.attr == "TerraformResource" for base in node.bases
        ):
            init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            return any(arg.arg == "tags" for arg in init.args.kwonlyargs)
    raise AssertionError(f"no resource class in {source}")


def test_taggable_is_read_from_the_bindings() -> None:
    assert taggable("aws_s3_bucket") and taggable("aws_eks_node_group")
    assert not taggable("aws_kms_alias") and not taggable("aws_s3_bucket_versioning")


@pytest.mark.parametrize("preview", [False, True], ids=["prod", "preview"])
def test_every_taggable_resource_carries_the_environment_tags(
    synthesized: Synthesized, synthesized_preview: Synthesized, preview: bool
) -> None:
    ctx = preview_ctx() if preview else prod_ctx()
    synth = synthesized_preview if preview else synthesized
    expected = ctx.tags()
    if preview:
        assert set(PREVIEW_TAGS) <= set(expected)
    checked = 0
    for name in aws_stack_names(synth):
        for rtype, entries in synth.stack(name)["resource"].items():
            if not taggable(rtype):
                continue
            for address, resource in entries.items():
                tags = resource.get("tags", {})
                missing = {k for k, v in expected.items() if tags.get(k) != v}
                assert not missing, f"{name}: {rtype}.{address} lacks tags {sorted(missing)}"
                checked += 1
    assert checked > 20


# Naming rules from the AWS API references; (field, max length, pattern).
NAME_RULES: dict[str, tuple[str, int, str]] = {
    "aws_eks_cluster": ("name", 100, r"[0-9A-Za-z][A-Za-z0-9_-]*"),
    "aws_eks_node_group": ("node_group_name", 63, r"[0-9A-Za-z][A-Za-z0-9_-]*"),
    "aws_iam_role": ("name", 64, r"[\w+=,.@-]+"),
    "aws_launch_template": ("name", 128, r"[a-zA-Z0-9().\-/_]+"),
    "aws_s3_bucket": ("bucket", 63, r"(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?<!-s3alias)"),
    "aws_kms_alias": ("name", 256, r"alias/(?!aws/)[a-zA-Z0-9/_-]+"),
    "aws_cloudwatch_log_group": ("name", 512, r"[.\-_/#A-Za-z0-9]+"),
}
TAG_KEY = re.compile(r"[\w .:/=+\-@]{1,128}")
TAG_VALUE = re.compile(r"[\w .:/=+\-@]{0,256}")


@pytest.mark.parametrize("preview", [False, True], ids=["prod", "preview"])
def test_names_and_tags_fit_aws_rules(
    synthesized: Synthesized, synthesized_preview: Synthesized, preview: bool
) -> None:
    synth = synthesized_preview if preview else synthesized
    for name in aws_stack_names(synth):
        for rtype, entries in synth.stack(name)["resource"].items():
            for resource in entries.values():
                if rtype in NAME_RULES:
                    field, limit, pattern = NAME_RULES[rtype]
                    value = resource[field]
                    if "${" not in value:
                        assert len(value) <= limit and re.fullmatch(pattern, value), (
                            f"{rtype} {field}={value}"
                        )
                        assert rtype != "aws_s3_bucket" or ".." not in value
                for key, value in resource.get("tags", {}).items():
                    assert TAG_KEY.fullmatch(key) and TAG_VALUE.fullmatch(value), f"{rtype} tag {key}={value}"


# --- a variant fleet: two AWS clusters, public endpoint, two pools ----------------------------------

VARIANT_FLEET = """
name: variant
clusters:
  - name: eks-east
    cloud: aws
    region: us-east-1
    kubernetes_version: "1.32"
    endpoint_public_access: true
    public_access_cidrs: [203.0.113.0/24]
    gpu_pools:
      - {name: l4, instance_type: g6.xlarge, min_nodes: 1, max_nodes: 3, spot: true, disk_gb: 200}
      - {name: h100, instance_type: p5.48xlarge, min_nodes: 0, max_nodes: 1}
  - name: eks-west
    cloud: aws
    wave: 2
    region: eu-west-1
    gpu_pools:
      - {name: a10g, instance_type: g5.2xlarge}
model_store: {bucket: variant.models, prefix: team/models}
"""


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_one_cloud(tmp_path_factory.mktemp("aws-variant"), VARIANT_FLEET, "aws")


def test_variant_fleet_shares_the_first_clusters_region_and_opens_only_listed_networks(
    variant: Synthesized,
) -> None:
    assert sorted(variant.stack_names()) == ["prod-eks-east", "prod-eks-west", "prod-shared-aws"]
    assert variant.stack("prod-shared-aws")["provider"]["aws"][0]["region"] == "us-east-1"
    west = variant.stack("prod-eks-west")
    assert west["provider"]["aws"][0]["region"] == "eu-west-1"
    assert west["terraform"]["backend"]["s3"]["region"] == "us-east-1"
    assert west["output"]["store_url"]["value"] == "s3://variant.models-prod/team/models"
    # The store's key lives in the store region; bucket dots are not allowed in KMS aliases.
    (read,) = [d for k, d in policy_documents(west).items() if k.startswith("triton-identity_read-models")]
    (decrypt,) = [s for s in read["statement"] if s["actions"] == ["kms:Decrypt"]]
    assert ":kms:us-east-1:" in decrypt["resources"][0]
    assert {
        "test": "StringEquals",
        "variable": "kms:ViaService",
        "values": ["s3.us-east-1.amazonaws.com"],
    } in (decrypt["condition"])
    assert any(
        c["values"] == ["alias/gpufleet/model-store/variant-models-prod"] for c in decrypt["condition"]
    )

    east = variant.stack("prod-eks-east")
    vpc = only(east, "aws_eks_cluster")["vpc_config"]
    assert vpc["endpoint_public_access"] is True and vpc["endpoint_private_access"] is True
    assert vpc["public_access_cidrs"] == ["203.0.113.0/24"]
    assert only(east, "aws_eks_cluster")["version"] == "1.32"
    groups = {g["node_group_name"]: g for g in resources(east, "aws_eks_node_group")}
    assert set(groups) == {"system", "gpu-l4", "gpu-h100"}
    assert groups["gpu-l4"]["capacity_type"] == "SPOT"
    assert groups["gpu-l4"]["scaling_config"] == {"min_size": 1, "max_size": 3, "desired_size": 1}
    assert groups["gpu-h100"]["labels"]["gpufleet.io/gpu-arch"] == "sm90"
    group_outputs = east["output"]["node_group_names"]["value"]
    assert [re.sub(r"_[0-9A-F]{8}\.", ".", ref) for ref in group_outputs] == [
        "${aws_eks_node_group.gpu-l4_nodes_node-group.node_group_name}",
        "${aws_eks_node_group.gpu-h100_nodes_node-group.node_group_name}",
    ]


def test_gpu_node_groups_tag_their_auto_scaling_groups_for_scale_from_zero(variant: Synthesized) -> None:
    """EKS does not copy node-group tags to the Auto Scaling group; cluster-autoscaler reads the group's
    (cloudprovider/aws/README.md): discovery tags, and node-template resources, labels and taints."""
    east = variant.stack("prod-eks-east")
    eks_name = only(east, "aws_eks_cluster")["name"]
    groups = {
        g["node_group_name"]: (address, g) for address, g in east["resource"]["aws_eks_node_group"].items()
    }
    by_group: dict[str, dict[str, str]] = {}
    for tag in resources(east, "aws_autoscaling_group_tag"):
        match = re.fullmatch(
            r"\$\{aws_eks_node_group\.([^.]+)\.resources\[0\]\.autoscaling_groups\[0\]\.name\}",
            tag["autoscaling_group_name"],
        )
        assert match, tag["autoscaling_group_name"]
        assert tag["tag"]["propagate_at_launch"] is False
        by_group.setdefault(match.group(1), {})[tag["tag"]["key"]] = tag["tag"]["value"]
    # From VARIANT_FLEET: l4 = g6.xlarge (1 x L4), h100 = p5.48xlarge (8 x H100); the system group scales
    # by its own minimum and gets none.
    expected_gpus = {"gpu-l4": "1", "gpu-h100": "8"}
    assert set(by_group) == {groups[name][0] for name in expected_gpus}
    prefix = "k8s.io/cluster-autoscaler"
    for name, gpus in expected_gpus.items():
        address, group = groups[name]
        tags = by_group[address]
        assert tags[f"{prefix}/enabled"] == "true" and tags[f"{prefix}/{eks_name}"] == "owned"
        assert tags[f"{prefix}/node-template/resources/nvidia.com/gpu"] == gpus
        assert tags[f"{prefix}/node-template/taint/nvidia.com/gpu"] == "present:NoSchedule"
        labels = {
            k.removeprefix(f"{prefix}/node-template/label/"): v for k, v in tags.items() if "/label/" in k
        }
        assert labels == group["labels"]
        assert labels["k8s.amazonaws.com/accelerator"] == {"gpu-l4": "l4", "gpu-h100": "h100-80gb"}[name]
        assert all(TAG_KEY.fullmatch(k) and TAG_VALUE.fullmatch(v) for k, v in tags.items())


# --- checkov ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is not installed in .venv-tools (make setup-all)")
@pytest.mark.parametrize("which", ["prod", "preview", "variant"])
def test_checkov_finds_nothing_unjustified(
    synthesized: Synthesized, synthesized_preview: Synthesized, variant: Synthesized, which: str
) -> None:
    """Zero failed checks, except those suppressed on the resource with a reason; no stale suppressions.

    Checkov 3.3's terraform_json runner ignores inline suppressions (see modules/checkov.py), so it
    reports suppressed checks as failed; tests/cloud/checkov_support.py applies them.
    """
    synth = {"prod": synthesized, "preview": synthesized_preview, "variant": variant}[which]
    for name in aws_stack_names(synth):
        assert_checkov_clean(name, synth.stack(name), synth.outdir / "stacks" / name / "cdk.tf.json")

"""GCP stacks synthesized from the example fleet.yaml: structure, security settings, labels, names, checkov.

Structural assertions on cdk.tf.json (no golden files). Expected values come from the fleet file, the
GPU catalog and StackContext, the same sources the stacks are built from.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from gpufleet import catalog, naming
from gpufleet.spec import GcpCluster
from stacks.__main__ import context_for, parse_args
from stacks.context import PREVIEW_TAGS, StackContext
from tests.cloud.checkov_support import CHECKOV, assert_checkov_clean
from tests.cloud.conftest import (
    PREVIEW_BRANCH,
    PREVIEW_EXPIRES_AT,
    Synthesized,
    expected_gpu_pools,
    synth_one_cloud,
)
from tests.conftest import REPO

PREVIEW_OWNER = "dev@example.com"  # what tests/cloud/conftest.py passes


def _context(preview: bool) -> StackContext:
    args = ["--file", str(REPO / "fleet.yaml"), "--env", "prod"]
    if preview:
        args += [
            "--branch",
            PREVIEW_BRANCH,
            "--owner",
            PREVIEW_OWNER,
            "--expires-at",
            str(PREVIEW_EXPIRES_AT),
        ]
    return context_for(parse_args(args))


PROD = _context(preview=False)
PREVIEW = _context(preview=True)
CLUSTERS = [c for c in PROD.fleet.cloud_clusters() if isinstance(c, GcpCluster)]
SHARED_STACK = PROD.stack_name("shared", "gcp")


def cluster_stack_names(ctx: StackContext) -> list[str]:
    return [ctx.stack_name(c.name) for c in CLUSTERS]


def one(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.values()))


def ref_to(rtype: str, logical: str, attribute: str) -> str:
    return f"${{{rtype}.{logical}.{attribute}}}"


def logical_name(resources: dict[str, dict[str, Any]], **match: Any) -> str:
    found = [name for name, r in resources.items() if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, sorted(resources))
    return found[0]


def test_example_fleet_has_a_gcp_cluster() -> None:
    assert CLUSTERS, "the example fleet.yaml should keep a gcp cluster for these tests"


# -- stacks and backends -------------------------------------------------------------------------


def _google_stacks(synth: Synthesized) -> set[str]:
    return {name for name in synth.stack_names() if "google" in synth.stack(name).get("provider", {})}


def test_prod_has_shared_stack_and_one_stack_per_cluster(synthesized: Synthesized) -> None:
    assert _google_stacks(synthesized) == {SHARED_STACK, *cluster_stack_names(PROD)}


def test_preview_has_only_cluster_stacks(synthesized_preview: Synthesized) -> None:
    assert _google_stacks(synthesized_preview) == set(cluster_stack_names(PREVIEW))
    assert not any("shared" in name for name in _google_stacks(synthesized_preview))


def test_shared_stack_keeps_its_state_locally(synthesized: Synthesized) -> None:
    backend = synthesized.stack(SHARED_STACK)["terraform"]["backend"]
    assert list(backend) == ["local"]
    path = Path(backend["local"]["path"])
    assert path.name == f"terraform.{SHARED_STACK}.tfstate"
    assert "cdktf.out" not in path.parts, "synth replaces cdktf.out: state must live elsewhere"


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_cluster_stacks_use_the_gcs_backend_with_their_state_key(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized_preview if ctx.is_preview else synthesized
    for name in cluster_stack_names(ctx):
        backend = synth.stack(name)["terraform"]["backend"]
        # GCS takes a folder prefix; the state object is <prefix>/default.tfstate.
        assert backend == {
            "gcs": {"bucket": PROD.state_bucket(), "prefix": ctx.state_key(name).removesuffix(".tfstate")}
        }
        if ctx.is_preview:
            assert backend["gcs"]["prefix"] == f"previews/{ctx.environment}/{name}"


def test_providers_use_the_cluster_project_and_region(synthesized: Synthesized) -> None:
    for cluster, name in zip(CLUSTERS, cluster_stack_names(PROD), strict=True):
        provider = synthesized.stack(name)["provider"]["google"]
        assert provider == [{"project": cluster.project, "region": cluster.region}]
    # The shared stack lives in the first GCP cluster's project and region.
    shared = synthesized.stack(SHARED_STACK)["provider"]["google"]
    assert shared == [{"project": CLUSTERS[0].project, "region": CLUSTERS[0].region}]


def test_resource_types_per_stack(synthesized: Synthesized) -> None:
    shared = synthesized.stack(SHARED_STACK)["resource"]
    assert set(shared) == {"google_storage_bucket", "google_storage_bucket_iam_member"}
    assert len(shared["google_storage_bucket"]) == 3  # model store, state, access logs
    for cluster, name in zip(CLUSTERS, cluster_stack_names(PROD), strict=True):
        resources = synthesized.stack(name)["resource"]
        assert set(resources) == {
            "google_compute_network",
            "google_compute_subnetwork",
            "google_compute_firewall",
            "google_compute_router",
            "google_compute_router_nat",
            "google_container_cluster",
            "google_container_node_pool",
            "google_service_account",
            "google_project_iam_member",
            "google_service_account_iam_member",
            "google_storage_bucket_iam_member",
        }
        assert len(resources["google_container_node_pool"]) == len(cluster.gpu_pools) + 1  # + system pool
        assert len(resources["google_service_account"]) == 2  # nodes, triton


# -- network ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cluster_stack_names(PROD))
def test_network_is_custom_mode_vpc_native_with_nat_and_flow_logs(
    synthesized: Synthesized, name: str
) -> None:
    stack = synthesized.stack(name)["resource"]
    network_name, network = next(iter(stack["google_compute_network"].items()))
    assert network["auto_create_subnetworks"] is False
    subnet = one(stack["google_compute_subnetwork"])
    assert subnet["network"] == ref_to("google_compute_network", network_name, "id")
    assert subnet["private_ip_google_access"] is True
    assert subnet["log_config"]["aggregation_interval"]
    ranges = {r["range_name"] for r in subnet["secondary_ip_range"]}
    cluster = one(stack["google_container_cluster"])
    policy = cluster["ip_allocation_policy"]
    assert {policy["cluster_secondary_range_name"], policy["services_secondary_range_name"]} == ranges
    assert cluster["networking_mode"] == "VPC_NATIVE"
    router_name, router = next(iter(stack["google_compute_router"].items()))
    assert router["network"] == ref_to("google_compute_network", network_name, "id")
    nat = one(stack["google_compute_router_nat"])
    assert nat["router"] == ref_to("google_compute_router", router_name, "name")
    assert nat["source_subnetwork_ip_ranges_to_nat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    assert nat["log_config"]["enable"] is True
    firewall = one(stack["google_compute_firewall"])
    assert firewall["direction"] == "INGRESS" and firewall["deny"] == [{"protocol": "all"}]


# -- cluster ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_cluster_is_private_hardened_and_uses_workload_identity(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized_preview if ctx.is_preview else synthesized
    for spec, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        stack = synth.stack(name)["resource"]
        cluster = one(stack["google_container_cluster"])
        assert cluster["name"] == ctx.cluster_name(spec.name, 40)
        assert cluster["location"] == spec.region
        assert cluster["min_master_version"] == spec.kubernetes_version
        assert cluster["release_channel"] == {"channel": "REGULAR"}
        assert cluster["remove_default_node_pool"] is True and cluster["initial_node_count"] == 1
        private = cluster["private_cluster_config"]
        assert private["enable_private_nodes"] is True
        assert private["enable_private_endpoint"] is False
        # The API answers the VPC only: no internet CIDRs, no Google Cloud public ranges.
        authorized = cluster["master_authorized_networks_config"]
        subnet = one(stack["google_compute_subnetwork"])
        assert [b["cidr_block"] for b in authorized["cidr_blocks"]] == [subnet["ip_cidr_range"]]
        assert authorized["gcp_public_cidrs_access_enabled"] is False
        assert cluster["workload_identity_config"] == {"workload_pool": f"{spec.project}.svc.id.goog"}
        assert cluster["enable_shielded_nodes"] is True
        assert cluster["datapath_provider"] == "ADVANCED_DATAPATH"
        assert cluster["enable_legacy_abac"] is False
        assert cluster["master_auth"]["client_certificate_config"]["issue_client_certificate"] is False
        assert {"SYSTEM_COMPONENTS", "WORKLOADS", "APISERVER"} <= set(
            cluster["logging_config"]["enable_components"]
        )
        assert "SYSTEM_COMPONENTS" in cluster["monitoring_config"]["enable_components"]
        assert cluster["binary_authorization"]["evaluation_mode"] == "PROJECT_SINGLETON_POLICY_ENFORCE"
        assert cluster["resource_labels"] == ctx.tags()
        # Previews must be destroyable by the sweeper.
        assert cluster["deletion_protection"] is (not ctx.is_preview)
        # Even the short-lived default pool never runs as the Compute Engine default account.
        node_sa = ref_to("google_service_account", _node_service_account(stack), "email")
        assert cluster["node_config"]["service_account"] == node_sa


# -- node pools ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_gpu_node_pools_follow_spec_and_catalog(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized_preview if ctx.is_preview else synthesized
    for spec, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        stack = synth.stack(name)["resource"]
        pools = {p["name"]: p for p in stack["google_container_node_pool"].values()}
        cluster_logical = next(iter(stack["google_container_cluster"]))
        node_sa = ref_to("google_service_account", _node_service_account(stack), "email")
        expected = {e.name: e for e in expected_gpu_pools(spec.name, ctx.is_preview)}
        assert set(pools) - {"system"} == set(expected)
        for pool in spec.gpu_pools:
            machine = catalog.instance_type("gcp", pool.instance_type)
            assert machine is not None
            size = expected[pool.name]
            node_pool = pools[pool.name]
            assert node_pool["cluster"] == ref_to("google_container_cluster", cluster_logical, "id")
            assert node_pool["location"] == spec.region
            assert node_pool["autoscaling"]["total_min_node_count"] == size.min_nodes
            assert node_pool["autoscaling"]["total_max_node_count"] == size.max_nodes
            assert node_pool["management"] == {"auto_repair": True, "auto_upgrade": True}
            config = node_pool["node_config"]
            assert config["machine_type"] == pool.instance_type
            assert config["spot"] is size.spot
            assert config["disk_size_gb"] == pool.disk_gb
            assert config["guest_accelerator"] == [
                {
                    "type": machine.accelerator,
                    "count": machine.gpus,
                    "gpu_driver_installation_config": {"gpu_driver_version": "LATEST"},
                }
            ]
            # The node contract (same on every cloud: tests/cloud/test_node_contract.py).
            assert config["taint"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
            assert config["labels"]["gpufleet.io/pool"] == pool.name
            _assert_hardened_node_config(config, node_sa)
        system = pools["system"]
        assert "taint" not in system["node_config"]
        assert system["autoscaling"]["total_min_node_count"] >= 1
        _assert_hardened_node_config(system["node_config"], node_sa)


def _node_service_account(stack: dict[str, Any]) -> str:
    return next(
        n for n, sa in stack["google_service_account"].items() if sa["account_id"].startswith("nodes-")
    )


def _assert_hardened_node_config(config: dict[str, Any], service_account: str) -> None:
    assert config["service_account"] == service_account
    assert config["shielded_instance_config"] == {
        "enable_secure_boot": True,
        "enable_integrity_monitoring": True,
    }
    assert config["workload_metadata_config"] == {"mode": "GKE_METADATA"}
    assert config["metadata"]["disable-legacy-endpoints"] == "true"
    assert config["image_type"] == "COS_CONTAINERD"


@pytest.mark.parametrize("name", cluster_stack_names(PROD))
def test_node_service_account_has_only_node_roles(synthesized: Synthesized, name: str) -> None:
    stack = synthesized.stack(name)["resource"]
    member = "serviceAccount:" + ref_to("google_service_account", _node_service_account(stack), "email")
    roles = {b["role"] for b in stack["google_project_iam_member"].values() if b["member"] == member}
    assert roles == {
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/monitoring.viewer",
        "roles/artifactregistry.reader",
    }
    # No other project-wide grants in a cluster stack.
    assert len(stack["google_project_iam_member"]) == len(roles)


# -- model store, state, identity -----------------------------------------------------------------


def test_model_store_bucket(synthesized: Synthesized) -> None:
    buckets = synthesized.resources(SHARED_STACK, "google_storage_bucket")
    by_name = {b["name"]: b for b in buckets.values()}
    store = by_name[PROD.store_bucket()]
    assert store["location"] == CLUSTERS[0].region.upper()
    assert store["versioning"] == {"enabled": True}
    assert store["uniform_bucket_level_access"] is True
    assert store["public_access_prevention"] == "enforced"
    assert {"action": {"type": "Delete"}, "condition": {"days_since_noncurrent_time": 30}} in store[
        "lifecycle_rule"
    ]
    state = by_name[PROD.state_bucket()]
    access_logs = logical_name(buckets, name=PROD.global_bucket("gcs-access-logs"))
    for bucket in (store, state):
        assert bucket["versioning"] == {"enabled": True}
        assert bucket["uniform_bucket_level_access"] is True
        assert bucket["public_access_prevention"] == "enforced"
        # Access logs go to the third bucket (by reference, so it is created first), never to itself.
        assert bucket["logging"]["log_bucket"] == ref_to("google_storage_bucket", access_logs, "name")
    writers = synthesized.resources(SHARED_STACK, "google_storage_bucket_iam_member").values()
    assert [w["member"] for w in writers] == ["group:cloud-storage-analytics@google.com"]


def test_shared_stack_outputs(synthesized: Synthesized) -> None:
    outputs = synthesized.stack(SHARED_STACK)["output"]
    assert outputs["store_bucket"]["value"] == PROD.store_bucket()
    assert outputs["store_url"]["value"] == f"gs://{PROD.store_bucket()}/{PROD.fleet.model_store.prefix}"
    assert outputs["state_bucket"]["value"] == PROD.state_bucket()


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_triton_reads_only_the_store_through_workload_identity(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized_preview if ctx.is_preview else synthesized
    for spec, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        stack = synth.stack(name)["resource"]
        triton = next(
            n for n, sa in stack["google_service_account"].items() if sa["account_id"].startswith("triton-")
        )
        reader = one(stack["google_storage_bucket_iam_member"])
        # Previews read the base environment's store.
        assert reader["bucket"] == PROD.store_bucket()
        assert reader["role"] == "roles/storage.objectViewer"
        assert reader["member"] == "serviceAccount:" + ref_to("google_service_account", triton, "email")
        binding = one(stack["google_service_account_iam_member"])
        assert binding["service_account_id"] == ref_to("google_service_account", triton, "name")
        assert binding["role"] == "roles/iam.workloadIdentityUser"
        # The pool is read from the cluster (it exists only once the cluster does): <project>.svc.id.goog.
        cluster = next(iter(stack["google_container_cluster"]))
        pool = ref_to("google_container_cluster", cluster, "workload_identity_config[0].workload_pool")
        assert binding["member"] == f"serviceAccount:{pool}[triton/triton]"
        workload_pool = stack["google_container_cluster"][cluster]["workload_identity_config"][
            "workload_pool"
        ]
        assert workload_pool == f"{spec.project}.svc.id.goog"


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_cluster_stack_outputs(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized_preview if ctx.is_preview else synthesized
    for spec, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        stack = synth.stack(name)
        outputs = stack["output"]
        cluster = next(iter(stack["resource"]["google_container_cluster"]))
        assert outputs["cluster_name"]["value"] == ref_to("google_container_cluster", cluster, "name")
        assert outputs["cluster_endpoint"]["value"] == ref_to("google_container_cluster", cluster, "endpoint")
        assert outputs["cluster_ca_certificate"]["value"] == ref_to(
            "google_container_cluster", cluster, "master_auth[0].cluster_ca_certificate"
        )
        assert "sensitive" not in outputs["cluster_ca_certificate"]  # a CA certificate is public
        assert outputs["region"]["value"] == spec.region
        assert outputs["project"]["value"] == spec.project
        assert outputs["triton_service_account_email"]["value"].endswith(".email}")
        first_pool = logical_name(
            stack["resource"]["google_container_node_pool"], name=spec.gpu_pools[0].name
        )
        assert outputs["node_pool_name"]["value"] == ref_to("google_container_node_pool", first_pool, "name")
        assert outputs["store_url"]["value"] == f"gs://{PROD.store_bucket()}/{PROD.fleet.model_store.prefix}"


# -- labels: every resource the provider lets us label carries all of ctx.tags() --------------------


@cache
def _binding_label_arguments(module: str) -> dict[str, frozenset[str]]:
    """Per class of a provider binding module: the keyword arguments that take a string map of labels
    (GCP `tags` are network tags, a list, so they do not count). Read from the binding's source with
    ast, because importing it would load the whole provider (~20 s)."""
    spec = find_spec("cdktf_cdktf_provider_google")
    assert spec is not None and spec.submodule_search_locations, (
        "cdktf-cdktf-provider-google is not installed"
    )
    source = Path(next(iter(spec.submodule_search_locations))) / module / "__init__.py"
    if not source.exists():
        return {}
    classes: dict[str, frozenset[str]] = {}
    for node in ast.parse(source.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        if init is None:
            continue
        classes[node.name] = frozenset(
            arg.arg
            for arg in init.args.kwonlyargs
            if arg.arg in ("labels", "resource_labels", "tags")
            and arg.annotation is not None
            and "Mapping[builtins.str, builtins.str]" in ast.unparse(arg.annotation)
        )
    return classes


def _label_arguments(module: str, class_name: str) -> frozenset[str] | None:
    """None when the binding has no such class."""
    return _binding_label_arguments(module).get(class_name)


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


# node_config.labels are Kubernetes labels on the nodes (the node contract), not GCP resource labels.
KUBERNETES_NODE_LABELS = {"node_config": frozenset({"labels"})}


def _unlabelled(rtype: str, resource: dict[str, Any], tags: dict[str, str]) -> list[str]:
    """Where a resource (or one of its nested blocks) could carry labels but lacks some of `tags`."""
    module = rtype.removeprefix("google_")
    class_name = _camel(module)
    top = _label_arguments(module, class_name)
    assert top is not None, f"no binding class {class_name} for {rtype}"
    problems: list[str] = []
    for key in sorted(top):
        missing = set(tags) - set(resource.get(key, {}))
        if missing:
            problems.append(f"{key} missing {sorted(missing)}")
    # Nested blocks (node_config ...): their struct class is <Resource><Block> in the same module.
    for block, value in resource.items():
        if not isinstance(value, dict) or block == "//":
            continue
        nested = _label_arguments(module, class_name + _camel(block)) or frozenset()
        for key in sorted(nested - KUBERNETES_NODE_LABELS.get(block, frozenset())):
            missing = set(tags) - set(value.get(key, {}))
            if missing:
                problems.append(f"{block}.{key} missing {sorted(missing)}")
    return problems


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_every_labelable_resource_carries_all_tags(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized_preview if ctx.is_preview else synthesized
    tags = ctx.tags()
    if ctx.is_preview:
        assert set(PREVIEW_TAGS) <= set(tags)
    labelled = 0
    problems: list[str] = []
    for name in _google_stacks(synth):
        for rtype, resources in synth.stack(name).get("resource", {}).items():
            for logical, resource in resources.items():
                found = _unlabelled(rtype, resource, tags)
                problems += [f"{name}: {rtype}.{logical}: {p}" for p in found]
                module = rtype.removeprefix("google_")
                labelled += bool(_label_arguments(module, _camel(module)))
    assert not problems, "\n".join(problems)
    assert labelled, "expected some labelable resources (buckets, clusters)"


def test_node_pools_label_their_vms(synthesized: Synthesized) -> None:
    """Node pools take labels only inside node_config; make sure the nested check above saw them. The
    VMs' GCE labels (resource_labels) carry the tags; node_config.labels are Kubernetes node labels, which
    hold the node contract only, as on EKS and AKS."""
    for name in cluster_stack_names(PROD):
        for pool in synthesized.resources(name, "google_container_node_pool").values():
            assert set(PROD.tags()) <= set(pool["node_config"]["resource_labels"])
            assert all(key.startswith("gpufleet.io/") for key in pool["node_config"]["labels"])


# -- names -----------------------------------------------------------------------------------------

GCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # networks, subnets, routers, NATs, firewalls
GKE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")  # clusters and node pools: 40
SERVICE_ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]{4,28}[a-z0-9])$")  # 6-30
GCS_BUCKET = re.compile(r"^[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9]$")
LABEL_KEY = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
LABEL_VALUE = re.compile(r"^[-_a-z0-9]{0,63}$")


@pytest.mark.parametrize("which", ["prod", "preview"])
def test_names_fit_gcp_rules(which: str, synthesized: Synthesized, synthesized_preview: Synthesized) -> None:
    synth = synthesized_preview if which == "preview" else synthesized
    for name in _google_stacks(synth):
        assert len(name) <= 63
        resources = synth.stack(name).get("resource", {})
        for rtype in ("network", "subnetwork", "router", "router_nat", "firewall"):
            for r in resources.get(f"google_compute_{rtype}", {}).values():
                assert GCE_NAME.fullmatch(r["name"]), r["name"]
        for rtype in ("google_container_cluster", "google_container_node_pool"):
            for r in resources.get(rtype, {}).values():
                assert GKE_NAME.fullmatch(r["name"]), r["name"]
        for r in resources.get("google_service_account", {}).values():
            assert SERVICE_ACCOUNT_ID.fullmatch(r["account_id"]), r["account_id"]
        for r in resources.get("google_storage_bucket", {}).values():
            bucket = r["name"]
            assert GCS_BUCKET.fullmatch(bucket) and not bucket.startswith("goog") and "google" not in bucket
        labels = [r.get("labels", {}) for r in resources.get("google_storage_bucket", {}).values()]
        labels += [r["resource_labels"] for r in resources.get("google_container_cluster", {}).values()]
        for label_set in labels:
            for key, value in label_set.items():
                assert LABEL_KEY.fullmatch(key) and LABEL_VALUE.fullmatch(value), (key, value)


def test_preview_names_differ_from_prod(synthesized: Synthesized, synthesized_preview: Synthesized) -> None:
    """A preview in the same project must not collide with prod (GKE, VPC and service account names)."""

    def names(synth: Synthesized) -> set[str]:
        found: set[str] = set()
        for stack in _google_stacks(synth):
            for resources in synth.stack(stack).get("resource", {}).values():
                for r in resources.values():
                    if "account_id" in r:
                        found.add(r["account_id"])
                    elif "name" in r and "cluster" not in r:  # node pool names are per cluster
                        found.add(r["name"])
        return found

    assert not names(synthesized) & names(synthesized_preview)


# -- checkov ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not CHECKOV.exists(), reason=f"checkov is not installed at {CHECKOV}")
@pytest.mark.parametrize("which", ["prod", "preview", "public-api"])
def test_checkov_passes(
    which: str, synthesized: Synthesized, synthesized_preview: Synthesized, public_api: Synthesized
) -> None:
    synth = {"prod": synthesized, "preview": synthesized_preview, "public-api": public_api}[which]
    for name in sorted(_google_stacks(synth)):
        assert_checkov_clean(name, synth.stack(name), synth.outdir / "stacks" / name / "cdk.tf.json")


# -- a variant fleet: the API opened to an operator network ------------------------------------------

PUBLIC_API_FLEET = """
name: variant
clusters:
  - name: gke-open
    cloud: gcp
    region: europe-west4
    project: variant-project
    endpoint_public_access: true
    public_access_cidrs: [203.0.113.0/24, 198.51.100.16/28]
    gpu_pools:
      - {name: l4, instance_type: g2-standard-4}
      - {name: h100, instance_type: a3-highgpu-8g, max_nodes: 1, zones: [europe-west4-c]}
model_store: {bucket: variant-models}
"""


@pytest.fixture(scope="module")
def public_api(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_one_cloud(tmp_path_factory.mktemp("gcp-public-api"), PUBLIC_API_FLEET, "gcp")


def test_public_access_cidrs_join_the_vpc_in_master_authorized_networks(public_api: Synthesized) -> None:
    resources = public_api.stack("prod-gke-open")["resource"]
    cluster = one(resources["google_container_cluster"])
    authorized = cluster["master_authorized_networks_config"]
    subnet = one(resources["google_compute_subnetwork"])
    assert [b["cidr_block"] for b in authorized["cidr_blocks"]] == [
        subnet["ip_cidr_range"],
        "203.0.113.0/24",
        "198.51.100.16/28",
    ]
    assert authorized["gcp_public_cidrs_access_enabled"] is False
    assert cluster["private_cluster_config"]["enable_private_nodes"] is True


def test_gpu_pools_are_pinned_to_the_zones_that_offer_their_gpu(
    synthesized: Synthesized, public_api: Synthesized
) -> None:
    # Compute Engine GPU zones: L4 (G2) in us-central1-a/b/c and europe-west4-a/b/c; a regional pool
    # without node_locations would also try us-central1-f, which has no L4.
    (stack_name,) = cluster_stack_names(PROD)
    pools = {p["name"]: p for p in synthesized.resources(stack_name, "google_container_node_pool").values()}
    assert pools["l4"]["node_locations"] == ["us-central1-a", "us-central1-b", "us-central1-c"]
    assert "node_locations" not in pools["system"]  # every zone of the region: no GPU needed
    variant = {
        p["name"]: p
        for p in public_api.stack("prod-gke-open")["resource"]["google_container_node_pool"].values()
    }
    assert variant["l4"]["node_locations"] == ["europe-west4-a", "europe-west4-b", "europe-west4-c"]
    assert variant["h100"]["node_locations"] == ["europe-west4-c"]  # fleet.yaml `zones` wins


def test_spec_reserves_exactly_the_pool_names_the_stacks_add(synthesized: Synthesized) -> None:
    # fleet.yaml validation rejects GPU pools named like the pools the stack adds; keep both in step.
    for cluster, name in zip(CLUSTERS, cluster_stack_names(_context(preview=False)), strict=True):
        pools = synthesized.stack(name)["resource"]["google_container_node_pool"].values()
        added = {p["name"] for p in pools} - {pool.name for pool in cluster.gpu_pools}
        assert added == naming.RESERVED_POOL_NAMES["gcp"]

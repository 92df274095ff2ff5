"""Azure stacks synthesized from the example fleet.yaml: structure, security settings, tags, names, checkov.

Structural assertions on cdk.tf.json (no golden files). Expected values come from the fleet file, the
GPU catalog and StackContext, the same sources the stacks are built from.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet import catalog, naming
from gpufleet.environments import fit_name
from gpufleet.spec import AzureCluster
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
PROVIDER_PACKAGE = "cdktf_cdktf_provider_azurerm"


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
CLUSTERS = [c for c in PROD.fleet.cloud_clusters() if isinstance(c, AzureCluster)]
SHARED_STACK = PROD.stack_name("shared", "azure")
ACCOUNT = PROD.fleet.model_store.azure_storage_account or ""
# Names derived from the *base* environment: the same for prod and its previews.
STORE_ACCOUNT = re.sub(r"[^a-z0-9]", "", f"{ACCOUNT}prod")
STORE_CONTAINER = PROD.store_bucket()
SHARED_RESOURCE_GROUP = f"{PROD.fleet.name}-prod-shared"


def cluster_stack_names(ctx: StackContext) -> list[str]:
    return [ctx.stack_name(c.name) for c in CLUSTERS]


def synth_for(ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized) -> Synthesized:
    return synthesized_preview if ctx.is_preview else synthesized


def one(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.values()))


def ref(rtype: str, resources: dict[str, dict[str, Any]], attribute: str) -> str:
    """The Terraform reference to the only resource of `rtype` in `resources`."""
    assert len(resources) == 1, sorted(resources)
    return f"${{{rtype}.{next(iter(resources))}.{attribute}}}"


def _azure_stacks(synth: Synthesized) -> set[str]:
    return {name for name in synth.stack_names() if "azurerm" in synth.stack(name).get("provider", {})}


def test_example_fleet_has_an_azure_cluster() -> None:
    assert CLUSTERS, "the example fleet.yaml should keep an azure cluster for these tests"
    assert ACCOUNT, "the example fleet.yaml should name model_store.azure_storage_account"


# -- stacks, backends, providers ----------------------------------------------------------------------


def test_prod_has_shared_stack_and_one_stack_per_cluster(synthesized: Synthesized) -> None:
    assert _azure_stacks(synthesized) == {SHARED_STACK, *cluster_stack_names(PROD)}


def test_preview_has_only_cluster_stacks(synthesized_preview: Synthesized) -> None:
    assert _azure_stacks(synthesized_preview) == set(cluster_stack_names(PREVIEW))
    assert not any("shared" in name for name in _azure_stacks(synthesized_preview))


def test_shared_stack_keeps_its_state_locally(synthesized: Synthesized) -> None:
    backend = synthesized.stack(SHARED_STACK)["terraform"]["backend"]
    assert list(backend) == ["local"]
    path = Path(backend["local"]["path"])
    assert path.name == f"terraform.{SHARED_STACK}.tfstate"
    assert "cdktf.out" not in path.parts, "synth replaces cdktf.out: state must live elsewhere"


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_cluster_stacks_use_the_azurerm_backend_with_their_state_key(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    shared_accounts = {
        r["name"] for r in synthesized.resources(SHARED_STACK, "azurerm_storage_account").values()
    }
    for name in cluster_stack_names(ctx):
        backend = synth.stack(name)["terraform"]["backend"]
        assert list(backend) == ["azurerm"]
        config = backend["azurerm"]
        assert config["key"] == ctx.state_key(name)
        assert config["container_name"] == "tfstate"
        assert config["resource_group_name"] == SHARED_RESOURCE_GROUP
        # The prod shared stack's state account (previews reuse it), reached with Entra ID, no keys.
        assert config["storage_account_name"] in shared_accounts - {STORE_ACCOUNT}
        assert config["use_azuread_auth"] is True
        assert not {"access_key", "sas_token", "client_secret"} & set(config)
        if ctx.is_preview:
            assert config["key"] == f"previews/{ctx.environment}/{name}.tfstate"


def test_prod_cluster_stacks_depend_on_the_shared_stack(synthesized: Synthesized) -> None:
    for name in cluster_stack_names(PROD):
        assert SHARED_STACK in synthesized.manifest["stacks"][name]["dependencies"]


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_provider_has_no_credentials_and_manages_storage_without_keys(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    for name in _azure_stacks(synth):
        (provider,) = synth.stack(name)["provider"]["azurerm"]
        assert set(provider) == {"features"}, "subscription and credentials come from the environment"
        (features,) = provider["features"]
        assert features["storage"] == [{"data_plane_available": False}]
        # Cluster stacks own their group's contents (what AKS adds too); the shared group stays protected.
        protect = features["resource_group"][0]["prevent_deletion_if_contains_resources"]
        assert protect is (name == SHARED_STACK)


def test_resource_types_per_stack(synthesized: Synthesized) -> None:
    shared = synthesized.stack(SHARED_STACK)["resource"]
    assert set(shared) == {
        "azurerm_resource_group",
        "azurerm_log_analytics_workspace",
        "azurerm_storage_account",
        "azurerm_storage_container",
        "azurerm_monitor_diagnostic_setting",
        "azurerm_role_assignment",
    }
    assert len(shared["azurerm_storage_account"]) == 2  # model store, state
    assert len(shared["azurerm_monitor_diagnostic_setting"]) == 2  # blob audit log of each
    for cluster, name in zip(CLUSTERS, cluster_stack_names(PROD), strict=True):
        resources = synthesized.stack(name)["resource"]
        assert set(resources) == {
            "azurerm_resource_group",
            "azurerm_virtual_network",
            "azurerm_subnet",
            "azurerm_network_security_group",
            "azurerm_subnet_network_security_group_association",
            "azurerm_log_analytics_workspace",
            "azurerm_user_assigned_identity",
            "azurerm_role_assignment",
            "azurerm_kubernetes_cluster",
            "azurerm_kubernetes_cluster_node_pool",
            "azurerm_federated_identity_credential",
        }
        assert (
            len(resources["azurerm_kubernetes_cluster_node_pool"]) == len(cluster.gpu_pools) + 1
        )  # platform
        assert len(resources["azurerm_user_assigned_identity"]) == 2  # control plane, triton


# -- resource groups and network ----------------------------------------------------------------------


def test_shared_resource_group_is_in_the_first_azure_cluster_region(synthesized: Synthesized) -> None:
    group = one(synthesized.resources(SHARED_STACK, "azurerm_resource_group"))
    assert group["name"] == SHARED_RESOURCE_GROUP
    assert group["location"] == CLUSTERS[0].region


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_each_cluster_stack_has_its_own_resource_group(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    for cluster, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        resources = synth.stack(name)["resource"]
        groups = resources["azurerm_resource_group"]
        group = one(groups)
        expected = cluster.resource_group or ctx.resource_name(cluster.name, max_length=90)
        if cluster.resource_group and ctx.is_preview:  # a preview never reuses the environment's group
            expected = fit_name(cluster.resource_group, ctx.environment, max_length=90)
        assert group["name"] == expected
        assert group["location"] == cluster.region
        # Everything else in the stack is placed in that group, by reference (created after it).
        group_ref = ref("azurerm_resource_group", groups, "name")
        for rtype, by_name in resources.items():
            for r in by_name.values():
                if "resource_group_name" in r:
                    assert r["resource_group_name"] == group_ref, rtype


@pytest.mark.parametrize("name", cluster_stack_names(PROD))
def test_node_subnet_has_an_nsg_and_no_internet_rules(synthesized: Synthesized, name: str) -> None:
    resources = synthesized.stack(name)["resource"]
    subnet = one(resources["azurerm_subnet"])
    assert subnet["default_outbound_access_enabled"] is False
    nsg = one(resources["azurerm_network_security_group"])
    assert not nsg.get("security_rule"), "only Azure's default rules (no inbound from the internet)"
    association = one(resources["azurerm_subnet_network_security_group_association"])
    assert association["subnet_id"] == ref("azurerm_subnet", resources["azurerm_subnet"], "id")
    assert association["network_security_group_id"] == ref(
        "azurerm_network_security_group", resources["azurerm_network_security_group"], "id"
    )


# -- AKS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_aks_is_private_entra_only_and_uses_workload_identity(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    for cluster, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        resources = synth.stack(name)["resource"]
        aks = one(resources["azurerm_kubernetes_cluster"])
        assert aks["name"] == ctx.cluster_name(cluster.name, 63)
        assert aks["location"] == cluster.region
        assert aks["kubernetes_version"] == cluster.kubernetes_version
        # API server: private endpoint only.
        assert aks["private_cluster_enabled"] is True
        assert aks["private_cluster_public_fqdn_enabled"] is False
        # Entra ID + Azure RBAC, no local (certificate) admin account.
        assert aks["local_account_disabled"] is True
        assert aks["role_based_access_control_enabled"] is True
        assert aks["azure_active_directory_role_based_access_control"]["azure_rbac_enabled"] is True
        assert aks["oidc_issuer_enabled"] is True
        assert aks["workload_identity_enabled"] is True
        network = aks["network_profile"]
        assert (network["network_plugin"], network["network_plugin_mode"]) == ("azure", "overlay")
        assert network["network_policy"] == "cilium"
        assert aks["automatic_upgrade_channel"] == "patch"
        assert aks["node_os_upgrade_channel"] == "NodeImage"
        assert aks["azure_policy_enabled"] is True
        assert aks["sku_tier"] == ("Free" if ctx.is_preview else "Standard")
        workspaces = resources["azurerm_log_analytics_workspace"]
        assert aks["oms_agent"]["log_analytics_workspace_id"] == ref(
            "azurerm_log_analytics_workspace", workspaces, "id"
        )
        assert aks["oms_agent"]["msi_auth_for_monitoring_enabled"] is True
        assert one(workspaces)["local_authentication_enabled"] is False
        assert len(aks["node_resource_group"]) <= 80
        assert aks["tags"] == ctx.tags()


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_system_pool_runs_only_critical_addons_on_encrypted_ephemeral_disks(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    for name in cluster_stack_names(ctx):
        resources = synth.stack(name)["resource"]
        pool = one(resources["azurerm_kubernetes_cluster"])["default_node_pool"]
        assert pool["only_critical_addons_enabled"] is True
        assert pool["os_disk_type"] == "Ephemeral"
        assert pool["host_encryption_enabled"] is True
        assert pool["node_public_ip_enabled"] is False
        assert pool["max_pods"] >= 50
        assert pool["vnet_subnet_id"] == ref("azurerm_subnet", resources["azurerm_subnet"], "id")
        assert pool["auto_scaling_enabled"] is True
        assert (pool["min_count"], pool["max_count"]) == ((1, 1) if ctx.is_preview else (2, 3))
        assert "priority" not in pool  # system pools cannot be spot


@pytest.mark.parametrize("name", cluster_stack_names(PROD))
def test_control_plane_identity_manages_only_its_subnet(synthesized: Synthesized, name: str) -> None:
    resources = synthesized.stack(name)["resource"]
    aks = one(resources["azurerm_kubernetes_cluster"])
    identities = resources["azurerm_user_assigned_identity"]
    control_plane = [k for k, v in identities.items() if v["name"].endswith("-control-plane")]
    assert len(control_plane) == 1
    identity_ref = f"${{azurerm_user_assigned_identity.{control_plane[0]}"
    assert aks["identity"] == {"type": "UserAssigned", "identity_ids": [f"{identity_ref}.id}}"]}
    subnet_access = [
        r
        for r in resources["azurerm_role_assignment"].values()
        if r["principal_id"] == f"{identity_ref}.principal_id}}"
    ]
    assert len(subnet_access) == 1
    assert subnet_access[0]["role_definition_name"] == "Network Contributor"
    assert subnet_access[0]["scope"] == ref("azurerm_subnet", resources["azurerm_subnet"], "id")
    # The permission exists before the cluster is created.
    assert any("control-plane-subnet-access" in dep for dep in aks["depends_on"])


@pytest.mark.parametrize("name", cluster_stack_names(PROD))
def test_deployer_is_cluster_admin_through_azure_rbac(synthesized: Synthesized, name: str) -> None:
    resources = synthesized.stack(name)["resource"]
    admins = [
        r
        for r in resources["azurerm_role_assignment"].values()
        if r["role_definition_name"] == "Azure Kubernetes Service RBAC Cluster Admin"
    ]
    assert len(admins) == 1
    assert admins[0]["scope"] == ref(
        "azurerm_kubernetes_cluster", resources["azurerm_kubernetes_cluster"], "id"
    )
    assert admins[0]["principal_id"].endswith(".object_id}")


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_gpu_pools_follow_spec_and_catalog(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    for cluster, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        resources = synth.stack(name)["resource"]
        pools = {p["name"]: p for p in resources["azurerm_kubernetes_cluster_node_pool"].values()}
        aks_id = ref("azurerm_kubernetes_cluster", resources["azurerm_kubernetes_cluster"], "id")
        expected = {e.name: e for e in expected_gpu_pools(cluster.name, ctx.is_preview)}
        assert set(pools) - {"platform"} == set(expected)
        for spec_pool in cluster.gpu_pools:
            pool = pools[spec_pool.name]
            vm = catalog.instance_type("azure", spec_pool.instance_type)
            assert vm is not None
            size = expected[spec_pool.name]
            assert pool["kubernetes_cluster_id"] == aks_id
            assert pool["mode"] == "User"
            assert pool["vm_size"] == vm.name
            assert pool["gpu_driver"] == "Install"
            # The node contract (same on every cloud: tests/cloud/test_node_contract.py).
            assert "nvidia.com/gpu=present:NoSchedule" in pool["node_taints"]
            assert pool["node_labels"]["gpufleet.io/pool"] == spec_pool.name
            assert pool["auto_scaling_enabled"] is True
            assert (pool["min_count"], pool["max_count"]) == (size.min_nodes, size.max_nodes)
            assert pool["os_disk_size_gb"] == spec_pool.disk_gb
            assert pool["host_encryption_enabled"] is True
            assert pool["node_public_ip_enabled"] is False
            assert pool["max_pods"] >= 50
            assert pool["tags"] == ctx.tags()
            if size.spot:
                assert pool["priority"] == "Spot"
                assert pool["eviction_policy"] == "Delete"
                assert pool["spot_max_price"] == -1
                assert "kubernetes.azure.com/scalesetpriority=spot:NoSchedule" in pool["node_taints"]
                assert pool["node_labels"]["kubernetes.azure.com/scalesetpriority"] == "spot"
                assert "upgrade_settings" not in pool  # AKS rejects surge settings on spot pools
            else:
                assert pool["priority"] == "Regular"
                assert "eviction_policy" not in pool and "spot_max_price" not in pool
                assert pool["node_taints"] == ["nvidia.com/gpu=present:NoSchedule"]


@pytest.mark.parametrize("name", cluster_stack_names(PROD))
def test_platform_pool_is_untainted(synthesized: Synthesized, name: str) -> None:
    pools = synthesized.resources(name, "azurerm_kubernetes_cluster_node_pool").values()
    platform = [p for p in pools if p["name"] == "platform"]
    assert len(platform) == 1
    assert "node_taints" not in platform[0]
    assert platform[0]["mode"] == "User"
    assert platform[0]["host_encryption_enabled"] is True


# -- storage ---------------------------------------------------------------------------------------


def _storage(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in synthesized.resources(SHARED_STACK, "azurerm_storage_account").values()}


def test_storage_accounts_are_hardened(synthesized: Synthesized) -> None:
    accounts = _storage(synthesized)
    assert STORE_ACCOUNT in accounts
    for account in accounts.values():
        assert account["account_kind"] == "StorageV2"
        assert account["account_replication_type"] == "GRS"
        assert account["min_tls_version"] == "TLS1_2"
        assert account["https_traffic_only_enabled"] is True
        assert account["shared_access_key_enabled"] is False
        assert account["allow_nested_items_to_be_public"] is False
        assert account["local_user_enabled"] is False
        assert account["cross_tenant_replication_enabled"] is False
        assert account["infrastructure_encryption_enabled"] is True
        blob = account["blob_properties"]
        assert blob["versioning_enabled"] is True
        assert blob["delete_retention_policy"]["days"] >= 7
        assert blob["container_delete_retention_policy"]["days"] >= 7
        assert account["location"] == CLUSTERS[0].region
        assert account["tags"] == PROD.tags()


def test_containers_are_private_and_created_without_keys(synthesized: Synthesized) -> None:
    accounts = synthesized.resources(SHARED_STACK, "azurerm_storage_account")
    by_account = {
        f"${{azurerm_storage_account.{logical}.id}}": account["name"] for logical, account in accounts.items()
    }
    containers = {
        by_account[c["storage_account_id"]]: c
        for c in synthesized.resources(SHARED_STACK, "azurerm_storage_container").values()
    }
    assert containers[STORE_ACCOUNT]["name"] == STORE_CONTAINER
    (state_account,) = set(containers) - {STORE_ACCOUNT}
    assert containers[state_account]["name"] == "tfstate"
    for container in containers.values():
        assert container["container_access_type"] == "private"
        assert "storage_account_name" not in container  # that would go through the (key-based) data plane


def test_blob_access_is_audited_and_deployer_can_write(synthesized: Synthesized) -> None:
    resources = synthesized.stack(SHARED_STACK)["resource"]
    workspace = ref("azurerm_log_analytics_workspace", resources["azurerm_log_analytics_workspace"], "id")
    targets = set()
    for setting in resources["azurerm_monitor_diagnostic_setting"].values():
        assert setting["log_analytics_workspace_id"] == workspace
        assert {log["category"] for log in setting["enabled_log"]} == {
            "StorageRead",
            "StorageWrite",
            "StorageDelete",
        }
        targets.add(setting["target_resource_id"])
    assert targets == {
        f"${{azurerm_storage_account.{logical}.id}}/blobServices/default"
        for logical in resources["azurerm_storage_account"]
    }
    writers = resources["azurerm_role_assignment"].values()
    assert {w["role_definition_name"] for w in writers} == {"Storage Blob Data Contributor"}
    assert {w["scope"] for w in writers} == {
        f"${{azurerm_storage_container.{logical}.id}}" for logical in resources["azurerm_storage_container"]
    }


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_triton_reads_only_the_store_container_through_workload_identity(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    for name in cluster_stack_names(ctx):
        resources = synth.stack(name)["resource"]
        identities = resources["azurerm_user_assigned_identity"]
        triton = [k for k, v in identities.items() if v["name"].endswith("-triton")]
        assert len(triton) == 1
        identity = f"azurerm_user_assigned_identity.{triton[0]}"
        readers = [
            r
            for r in resources["azurerm_role_assignment"].values()
            if r["principal_id"] == f"${{{identity}.principal_id}}"
        ]
        assert len(readers) == 1
        assert readers[0]["role_definition_name"] == "Storage Blob Data Reader"
        assert readers[0]["scope"].endswith(
            f"/resourceGroups/{SHARED_RESOURCE_GROUP}/providers/Microsoft.Storage/storageAccounts/"
            f"{STORE_ACCOUNT}/blobServices/default/containers/{STORE_CONTAINER}"
        )
        credential = one(resources["azurerm_federated_identity_credential"])
        assert credential["parent_id"] == f"${{{identity}.id}}"
        assert credential["issuer"] == ref(
            "azurerm_kubernetes_cluster", resources["azurerm_kubernetes_cluster"], "oidc_issuer_url"
        )
        assert credential["subject"] == "system:serviceaccount:triton:triton"
        assert credential["audience"] == ["api://AzureADTokenExchange"]


# -- outputs ---------------------------------------------------------------------------------------


def test_shared_stack_outputs(synthesized: Synthesized) -> None:
    outputs = synthesized.stack(SHARED_STACK)["output"]
    assert {"storage_account", "store_container", "store_url", "state_storage_account"} <= set(outputs)
    assert outputs["storage_account"]["value"] == STORE_ACCOUNT
    assert outputs["store_container"]["value"] == STORE_CONTAINER
    prefix = PROD.fleet.model_store.prefix
    assert outputs["store_url"]["value"] == (
        f"https://{STORE_ACCOUNT}.blob.core.windows.net/{STORE_CONTAINER}/{prefix}"
    )
    assert outputs["state_storage_account"]["value"] in _storage(synthesized)


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_cluster_stack_outputs(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    for cluster, name in zip(CLUSTERS, cluster_stack_names(ctx), strict=True):
        stack = synth.stack(name)
        outputs = stack["output"]
        resources = stack["resource"]
        assert {
            "cluster_name",
            "cluster_endpoint",
            "cluster_ca_certificate",
            "region",
            "resource_group",
            "oidc_issuer_url",
            "triton_identity_client_id",
            "node_pool_name",
            "store_url",
        } <= set(outputs)
        aks = resources["azurerm_kubernetes_cluster"]
        assert outputs["cluster_name"]["value"] == ref("azurerm_kubernetes_cluster", aks, "name")
        assert outputs["cluster_endpoint"]["value"] == (
            f"https://{ref('azurerm_kubernetes_cluster', aks, 'private_fqdn')}:443"
        )
        assert "sensitive" not in outputs["cluster_endpoint"]
        # Read from kube_config, which the provider marks sensitive: Terraform requires the flag.
        assert "kube_config[0].cluster_ca_certificate" in outputs["cluster_ca_certificate"]["value"]
        assert outputs["cluster_ca_certificate"]["sensitive"] is True
        assert outputs["oidc_issuer_url"]["value"] == ref(
            "azurerm_kubernetes_cluster", aks, "oidc_issuer_url"
        )
        assert outputs["region"]["value"] == cluster.region
        assert outputs["resource_group"]["value"] == one(resources["azurerm_resource_group"])["name"]
        assert outputs["triton_identity_client_id"]["value"].endswith(".client_id}")
        assert outputs["node_pool_name"]["value"] == cluster.gpu_pools[0].name
        prefix = ctx.fleet.model_store.prefix
        assert outputs["store_url"]["value"] == (
            f"https://{STORE_ACCOUNT}.blob.core.windows.net/{STORE_CONTAINER}/{prefix}"
        )


# -- tags: every resource the provider lets us tag carries all of ctx.tags() ------------------------


@cache
def _binding_tag_arguments(module: str) -> dict[str, bool]:
    """Per class of a provider binding module: whether its constructor takes `tags` (a string map).
    Read from the binding's source with ast: importing it would load the whole provider (~15 s)."""
    spec = find_spec(PROVIDER_PACKAGE)
    assert spec is not None and spec.submodule_search_locations, f"{PROVIDER_PACKAGE} is not installed"
    source = Path(next(iter(spec.submodule_search_locations))) / module / "__init__.py"
    assert source.exists(), f"no binding module {module}"
    classes: dict[str, bool] = {}
    for node in ast.parse(source.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        if init is None:
            continue
        classes[node.name] = any(
            arg.arg == "tags"
            and arg.annotation is not None
            and "Mapping[builtins.str, builtins.str]" in ast.unparse(arg.annotation)
            for arg in init.args.kwonlyargs
        )
    return classes


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _untagged(rtype: str, resource: dict[str, Any], tags: dict[str, str]) -> tuple[list[str], bool]:
    """(problems, taggable): where a resource or a nested block could carry tags but lacks some."""
    module = rtype.removeprefix("azurerm_")
    classes = _binding_tag_arguments(module)
    class_name = _camel(module)
    assert class_name in classes, f"no binding class {class_name} for {rtype}"
    problems: list[str] = []
    if classes[class_name]:
        missing = set(tags) - set(resource.get("tags", {}))
        if missing:
            problems.append(f"tags missing {sorted(missing)}")
    # Nested blocks (default_node_pool ...): their struct class is <Resource><Block> in the same module.
    for block, value in resource.items():
        if block == "//" or not isinstance(value, dict):
            continue
        if classes.get(class_name + _camel(block)):
            missing = set(tags) - set(value.get("tags", {}))
            if missing:
                problems.append(f"{block}.tags missing {sorted(missing)}")
    return problems, classes[class_name]


@pytest.mark.parametrize("ctx", [PROD, PREVIEW], ids=["prod", "preview"])
def test_every_taggable_resource_carries_all_tags(
    ctx: StackContext, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synth_for(ctx, synthesized, synthesized_preview)
    tags = ctx.tags()
    if ctx.is_preview:
        assert set(PREVIEW_TAGS) <= set(tags)
    taggable_types: set[str] = set()
    problems: list[str] = []
    for name in _azure_stacks(synth):
        for rtype, resources in synth.stack(name).get("resource", {}).items():
            for logical, resource in resources.items():
                found, taggable = _untagged(rtype, resource, tags)
                problems += [f"{name}: {rtype}.{logical}: {p}" for p in found]
                if taggable:
                    taggable_types.add(rtype)
    assert not problems, "\n".join(problems)
    # The walk must have seen the main taggable resources (a sanity check of the binding lookup).
    assert {
        "azurerm_resource_group",
        "azurerm_virtual_network",
        "azurerm_kubernetes_cluster",
        "azurerm_kubernetes_cluster_node_pool",
        "azurerm_user_assigned_identity",
    } <= taggable_types
    assert "azurerm_role_assignment" not in taggable_types


def test_aks_system_pool_tags_are_checked_as_a_nested_block() -> None:
    """default_node_pool takes its own tags (the VM scale set's); the walk above must see that."""
    assert _binding_tag_arguments("kubernetes_cluster")["KubernetesClusterDefaultNodePool"]
    assert not _binding_tag_arguments("role_assignment")["RoleAssignment"]


# -- names -------------------------------------------------------------------------------------------

RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
AKS_NAME = re.compile(r"^[a-zA-Z0-9][-_a-zA-Z0-9]{0,61}[a-zA-Z0-9]$")
DNS_PREFIX = re.compile(r"^[a-zA-Z][-a-zA-Z0-9]{0,52}[a-zA-Z0-9]$")
NODE_POOL = re.compile(r"^[a-z][a-z0-9]{0,11}$")
STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][-a-z0-9]{1,61}[a-z0-9]$")
VNET = re.compile(r"^[a-zA-Z0-9][-\w.]{0,62}\w$")
SUBNET_OR_NSG = re.compile(r"^[a-zA-Z0-9]([-\w.]{0,78}\w)?$")
WORKSPACE = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]{2,61}[a-zA-Z0-9]$")
IDENTITY = re.compile(r"^[a-zA-Z0-9][-\w]{2,127}$")
FEDERATED_CREDENTIAL = re.compile(r"^[a-zA-Z0-9][-\w]{2,119}$")
TAG_KEY_FORBIDDEN = re.compile(r"[<>%&\\?/]")

NAME_RULES = {
    "azurerm_resource_group": RESOURCE_GROUP,
    "azurerm_kubernetes_cluster": AKS_NAME,
    "azurerm_kubernetes_cluster_node_pool": NODE_POOL,
    "azurerm_storage_account": STORAGE_ACCOUNT,
    "azurerm_storage_container": CONTAINER,
    "azurerm_virtual_network": VNET,
    "azurerm_subnet": SUBNET_OR_NSG,
    "azurerm_network_security_group": SUBNET_OR_NSG,
    "azurerm_log_analytics_workspace": WORKSPACE,
    "azurerm_user_assigned_identity": IDENTITY,
    "azurerm_federated_identity_credential": FEDERATED_CREDENTIAL,
}


@pytest.mark.parametrize("which", ["prod", "preview"])
def test_names_fit_azure_rules(
    which: str, synthesized: Synthesized, synthesized_preview: Synthesized
) -> None:
    synth = synthesized_preview if which == "preview" else synthesized
    checked = 0
    for name in _azure_stacks(synth):
        assert len(name) <= 63
        resources = synth.stack(name).get("resource", {})
        for rtype, rule in NAME_RULES.items():
            for r in resources.get(rtype, {}).values():
                assert rule.fullmatch(r["name"]), (rtype, r["name"])
                checked += 1
        for aks in resources.get("azurerm_kubernetes_cluster", {}).values():
            assert DNS_PREFIX.fullmatch(aks["dns_prefix"]), aks["dns_prefix"]
            assert RESOURCE_GROUP.fullmatch(aks["node_resource_group"])
            assert len(aks["node_resource_group"]) <= 80
            assert NODE_POOL.fullmatch(aks["default_node_pool"]["name"])
            assert NODE_POOL.fullmatch(aks["default_node_pool"]["temporary_name_for_rotation"])
        for by_name in resources.values():
            for r in by_name.values():
                for key, value in r.get("tags", {}).items():
                    assert len(key) <= 512 and len(value) <= 256 and not TAG_KEY_FORBIDDEN.search(key)
    assert checked


def test_preview_names_differ_from_prod(synthesized: Synthesized, synthesized_preview: Synthesized) -> None:
    """A preview in the same subscription must not collide with prod: groups, clusters, node groups."""

    def names(synth: Synthesized) -> set[str]:
        found: set[str] = set()
        for stack in _azure_stacks(synth):
            resources = synth.stack(stack).get("resource", {})
            for rtype in ("azurerm_resource_group", "azurerm_kubernetes_cluster"):
                found |= {r["name"] for r in resources.get(rtype, {}).values()}
            found |= {
                r["node_resource_group"] for r in resources.get("azurerm_kubernetes_cluster", {}).values()
            }
        return found

    assert not names(synthesized) & names(synthesized_preview)


# -- checkov ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not CHECKOV.exists(), reason=f"checkov is not installed at {CHECKOV}")
@pytest.mark.parametrize("which", ["prod", "preview", "public-api"])
def test_checkov_passes(
    which: str, synthesized: Synthesized, synthesized_preview: Synthesized, public_api: Synthesized
) -> None:
    synth = {"prod": synthesized, "preview": synthesized_preview, "public-api": public_api}[which]
    for name in sorted(_azure_stacks(synth)):
        assert_checkov_clean(name, synth.stack(name), synth.outdir / "stacks" / name / "cdk.tf.json")


# -- only the azure provider is imported for an azure-only fleet ---------------------------------------


def test_azure_only_synth_imports_neither_aws_nor_google(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "fleet.yaml").read_text())
    doc["clusters"] = [c for c in doc["clusters"] if c["cloud"] in ("local", "azure")]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    probe = (
        "import json, sys\nfrom stacks.__main__ import main\n"
        f"assert main(['--cloud', 'azure', '--file', {str(fleet)!r}, '--out', {str(out)!r}]) == 0\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert PROVIDER_PACKAGE in modules
    assert not {"cdktf_cdktf_provider_aws", "cdktf_cdktf_provider_google"} & modules
    assert json.loads((out / "manifest.json").read_text())["stacks"]


# -- a variant fleet: the API opened to an operator network ------------------------------------------

PUBLIC_API_FLEET = """
name: variant
clusters:
  - name: aks-open
    cloud: azure
    region: westeurope
    endpoint_public_access: true
    public_access_cidrs: [203.0.113.0/24]
    gpu_pools:
      - {name: t4, instance_type: Standard_NC4as_T4_v3}
model_store: {bucket: variant-models, azure_storage_account: variantmodels}
"""


@pytest.fixture(scope="module")
def public_api(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_one_cloud(tmp_path_factory.mktemp("azure-public-api"), PUBLIC_API_FLEET, "azure")


def test_public_access_cidrs_make_a_public_api_server_that_answers_only_them(public_api: Synthesized) -> None:
    stack = public_api.stack("prod-aks-open")
    aks = one(stack["resource"]["azurerm_kubernetes_cluster"])
    assert aks["private_cluster_enabled"] is False
    assert "private_dns_zone_id" not in aks and "private_cluster_public_fqdn_enabled" not in aks
    assert aks["api_server_access_profile"] == {"authorized_ip_ranges": ["203.0.113.0/24"]}
    # kubeconfig must point at the public FQDN, not the private one nobody outside can resolve.
    endpoint = stack["output"]["cluster_endpoint"]["value"]
    assert endpoint.startswith("https://${azurerm_kubernetes_cluster.") and ".fqdn}" in endpoint


def test_private_cluster_endpoint_is_the_private_fqdn(synthesized: Synthesized) -> None:
    for name in cluster_stack_names(_context(preview=False)):
        assert ".private_fqdn}" in synthesized.stack(name)["output"]["cluster_endpoint"]["value"]


def test_spec_reserves_exactly_the_pool_names_the_stacks_add(synthesized: Synthesized) -> None:
    # fleet.yaml validation rejects GPU pools named like the pools the stack adds; keep both in step.
    for cluster, name in zip(CLUSTERS, cluster_stack_names(_context(preview=False)), strict=True):
        resources = synthesized.stack(name)["resource"]
        added = {one(resources["azurerm_kubernetes_cluster"])["default_node_pool"]["name"]}
        added |= {p["name"] for p in resources["azurerm_kubernetes_cluster_node_pool"].values()}
        added -= {pool.name for pool in cluster.gpu_pools}
        assert added == naming.RESERVED_POOL_NAMES["azure"]

"""fleet.yaml validation: the example loads, each rule rejects what it should, errors are one clear line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.spec import (
    MAX_ERROR_LINES,
    AwsCluster,
    AzureCluster,
    Fleet,
    FleetSpecError,
    GcpCluster,
    LocalCluster,
    ModelStore,
    load_fleet,
    parse_fleet,
)
from tests.conftest import REPO

EXAMPLE = REPO / "fleet.yaml"
EXAMPLE_DOC: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())

# Positions of the clusters in the example fleet.yaml, which the rule tests below rely on.
LOCAL_A, LOCAL_B, AWS, GCP, AZURE = range(5)


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_DOC)


def assert_clean(exc: FleetSpecError) -> None:
    """The product rule: every line names a place and says what to do, on one line, no traceback."""
    assert exc.errors, "a FleetSpecError must carry at least one line"
    assert str(exc) == "\n".join(exc.errors)
    for line in exc.errors:
        assert line.strip() == line and line
        assert line.splitlines() == [line], f"not one line: {line!r}"
        assert ": " in line and "; " in line, f"no '<where>: <problem>; <fix>' shape: {line!r}"
        assert "Traceback" not in line and "internal error" not in line
        assert "Value error," not in line and "pydantic" not in line


def errors_of(doc: object, source: str = "fleet.yaml") -> list[str]:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    with pytest.raises(FleetSpecError) as info:
        parse_fleet(text, source=source)
    assert_clean(info.value)
    return info.value.errors


# ------------------------------------------------------------------------------------------------
# The example fleet


def test_example_fleet_loads_with_every_section() -> None:
    fleet = load_fleet(EXAMPLE)
    assert fleet.name == "demo"
    assert [c.name for c in fleet.clusters] == ["local-a", "local-b", "aws-use1", "gke-usc1", "aks-eus"]
    assert [c.name for c in fleet.local_clusters()] == ["local-a", "local-b"]
    assert all(c.replicas == 2 for c in fleet.local_clusters())
    assert [type(c) for c in fleet.cloud_clusters()] == [AwsCluster, GcpCluster, AzureCluster]
    assert fleet.clouds() == {"local", "aws", "gcp", "azure"}
    assert [[c.name for c in wave] for wave in fleet.clusters_by_wave()] == [
        ["local-a"],
        ["local-b"],
        ["aws-use1", "gke-usc1", "aks-eus"],
    ]
    aws, gcp, azure = fleet.cloud_clusters()
    assert isinstance(aws, AwsCluster) and aws.region == "us-east-1" and not aws.endpoint_public_access
    assert isinstance(gcp, GcpCluster) and (gcp.region, gcp.project) == ("us-central1", "gpufleet-demo")
    assert isinstance(azure, AzureCluster) and azure.region == "eastus"
    assert fleet.model_store.bucket == "gpufleet-demo-models"
    assert fleet.model_store.azure_storage_account == "gpufleetdemomodels"

    mlp = fleet.model("mlp")
    assert mlp.source == "builtin:mlp"
    assert [(t.name, t.dtype, t.dims) for t in mlp.inputs] == [("INPUT", "FP32", [16])]
    assert [(t.name, t.dtype, t.dims) for t in mlp.outputs] == [("OUTPUT", "FP32", [4])]
    assert mlp.triton.max_batch_size == 8 and mlp.triton.dynamic_batching
    assert [(e.gpu_arch, e.precision, e.hardware_compatibility) for e in mlp.engine_targets] == [
        ("sm75", "fp16", "none"),
        ("sm80", "fp16", "ampere_plus"),
    ]

    assert fleet.rollout.steps == [1, 10, 50, 100]
    assert fleet.rollout.slo.max_error_rate == 0.01 and fleet.rollout.slo.p99_latency_ms == 200
    assert fleet.previews.max_gpu_nodes == 1 and fleet.previews.spot
    assert fleet.dr.restore == ["models", "rollout_state", "monitoring"]


def test_example_pools_get_gpu_type_and_count_from_the_catalog() -> None:
    pools = {c.name: c.gpu_pools[0] for c in load_fleet(EXAMPLE).cloud_clusters()}
    assert (pools["aws-use1"].gpu_type, pools["aws-use1"].gpu_count) == ("a10g", 1)
    assert (pools["gke-usc1"].gpu_type, pools["gke-usc1"].gpu_count) == ("l4", 1)
    assert (pools["aks-eus"].gpu_type, pools["aks-eus"].gpu_count) == ("t4", 1)


def test_gpu_type_and_count_are_filled_for_a_multi_gpu_instance() -> None:
    doc = example()
    doc["clusters"][AWS]["gpu_pools"][0]["instance_type"] = "g5.12xlarge"
    pool = parse_fleet(yaml.safe_dump(doc)).clusters[AWS]
    assert isinstance(pool, AwsCluster)
    assert (pool.gpu_pools[0].gpu_type, pool.gpu_pools[0].gpu_count) == ("a10g", 4)


def test_gpu_type_and_count_that_match_the_catalog_are_accepted() -> None:
    doc = example()
    doc["clusters"][GCP]["gpu_pools"][0].update(
        instance_type="a2-highgpu-8g", gpu_type="a100-40gb", gpu_count=8
    )
    cluster = parse_fleet(yaml.safe_dump(doc)).clusters[GCP]
    assert isinstance(cluster, GcpCluster) and cluster.gpu_pools[0].gpu_count == 8


def test_defaults_apply_when_sections_are_left_out() -> None:
    fleet = parse_fleet(
        "name: tiny\nclusters: [{name: local-a, cloud: local}]\nmodel_store: {bucket: tiny-models}\n"
    )
    (cluster,) = fleet.clusters
    assert isinstance(cluster, LocalCluster) and (cluster.wave, cluster.replicas) == (1, 2)
    assert fleet.models == [] and fleet.model_store.prefix == "models"
    assert fleet.rollout.steps == [1, 10, 50, 100] and fleet.rollout.min_samples == 200
    assert fleet.previews.ttl_hours == 72 and fleet.dr.rebuild_timeout_minutes == 5
    assert fleet.cloud_clusters() == [] and fleet.clouds() == {"local"}


def test_previews_honour_owner_tag_key_and_gpu_cap_from_the_file() -> None:
    doc = example()
    doc["previews"].update(owner_tag="owner", max_gpu_nodes=0)
    previews = parse_fleet(yaml.safe_dump(doc)).previews
    assert (previews.owner_tag, previews.max_gpu_nodes) == ("owner", 0)
    doc["previews"].update(max_gpu_nodes=16)
    assert parse_fleet(yaml.safe_dump(doc)).previews.max_gpu_nodes == 16
    del doc["previews"]["owner_tag"]
    assert parse_fleet(yaml.safe_dump(doc)).previews.owner_tag == "gpufleet-owner"


def test_default_kubernetes_version_can_be_created_on_every_cloud() -> None:
    doc = example()
    for index in (AWS, GCP, AZURE):
        del doc["clusters"][index]["kubernetes_version"]
    fleet = parse_fleet(yaml.safe_dump(doc))
    assert {c.kubernetes_version for c in fleet.cloud_clusters()} == {"1.35"}


def test_example_fleet_uses_a_version_each_cloud_creates_in_december_2026() -> None:
    # EKS: 1.32-1.36 (standard or extended support); GKE Regular channel and AKS N-2: 1.35, 1.36.
    creatable = {"aws": {"1.32", "1.33", "1.34", "1.35", "1.36"}, "gcp": {"1.35", "1.36"}}
    creatable["azure"] = {"1.35", "1.36"}
    for cluster in load_fleet(EXAMPLE).cloud_clusters():
        assert cluster.kubernetes_version in creatable[cluster.cloud], cluster.name


def test_gke_pool_zones_default_to_the_regions_zones_that_offer_the_gpu() -> None:
    (gcp,) = [c for c in load_fleet(EXAMPLE).cloud_clusters() if isinstance(c, GcpCluster)]
    # L4 (G2 machines) in us-central1: zones a, b and c (Compute Engine GPU regions and zones).
    assert gcp.gpu_pool_zones(gcp.gpu_pools[0]) == ["us-central1-a", "us-central1-b", "us-central1-c"]
    doc = example()
    doc["clusters"][GCP]["gpu_pools"][0]["zones"] = ["us-central1-b"]
    cluster = parse_fleet(yaml.safe_dump(doc)).clusters[GCP]
    assert isinstance(cluster, GcpCluster)
    assert cluster.gpu_pool_zones(cluster.gpu_pools[0]) == ["us-central1-b"]


def test_model_lookup_raises_key_error_for_unknown_names() -> None:
    fleet = load_fleet(EXAMPLE)
    with pytest.raises(KeyError):
        fleet.model("nope")


# ------------------------------------------------------------------------------------------------
# Rules: each broken document is rejected with the exact field path


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A mutation setting the value at a dotted path (list indices as numbers) in the example doc."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return mutate


def _waves(*waves: int) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        for cluster, wave in zip(doc["clusters"], waves, strict=True):
            cluster["wave"] = wave

    return mutate


def _pool(**fields: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["clusters"][AWS]["gpu_pools"][0].update(fields)

    return mutate


def _duplicate_first_model(doc: dict[str, Any]) -> None:
    doc["models"].append(copy.deepcopy(doc["models"][0]))


def _without_cloud(cloud: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["clusters"] = [c for c in doc["clusters"] if c["cloud"] != cloud]

    return mutate


BROKEN = [
    pytest.param(
        _set("clusters.1.name", "local-a"),
        "clusters[1].name: duplicate cluster name 'local-a' (also clusters[0]); "
        "give each cluster a unique name",
        id="duplicate-cluster-names",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.name", "gke-" + "x" * 37),
        "clusters[3].name: cluster name 'gke-" + "x" * 32 + "... is 41 characters, over the GKE "
        "limit of 40; shorten it to 40 or fewer",
        id="gke-name-over-40",
    ),
    pytest.param(
        _set("clusters.0.name", "Local_A"),
        "clusters[0].name: cluster name 'Local_A' is not a lowercase DNS label",
        id="cluster-name-not-dns",
    ),
    pytest.param(
        _set("name", "Demo Fleet"),
        "name: fleet name 'Demo Fleet' is not a lowercase DNS label",
        id="fleet-name",
    ),
    pytest.param(
        _set("model_store.bucket", "Gpufleet_Models"),
        "model_store.bucket: 'Gpufleet_Models' is not a valid S3 bucket name",
        id="bad-s3-bucket",
    ),
    pytest.param(
        _set("model_store.bucket", "192.168.0.1"),
        "model_store.bucket: '192.168.0.1' is not a valid S3",
        id="ip",
    ),
    pytest.param(
        _set("model_store.bucket", "models-s3alias"),
        "model_store.bucket: 'models-s3alias' is not a valid S3 bucket name "
        "(the suffix '-s3alias' is reserved",
        id="s3-suffix",
    ),
    pytest.param(
        _set("model_store.bucket", "my-google-models"),
        "model_store.bucket: the gcp clusters use it as a GCS bucket: 'my-google-models' is not a valid GCS",
        id="google-in-bucket-with-gcp",
    ),
    pytest.param(
        _set("model_store.bucket", "gpufleet.demo.models"),
        "model_store.bucket: the azure clusters use it as a Blob container: 'gpufleet.demo.models' is not a "
        "valid Azure Blob container name ('.' is not allowed)",
        id="dot-in-bucket-with-azure",
    ),
    pytest.param(
        _delete("model_store.azure_storage_account"),
        "model_store.azure_storage_account: required because the fleet has azure clusters",
        id="azure-without-storage-account",
    ),
    pytest.param(
        _set("model_store.azure_storage_account", "gpufleet-demo"),
        "model_store.azure_storage_account: 'gpufleet-demo' is not a valid Azure storage account name",
        id="bad-storage-account",
    ),
    pytest.param(
        _set("model_store.prefix", "/models/"),
        "model_store.prefix: '/models/' is not a valid key prefix",
        id="prefix",
    ),
    pytest.param(
        _set("rollout.steps", [1, 50, 10, 100]),
        "rollout.steps[2]: steps must increase strictly (10 follows 50)",
        id="steps-not-increasing",
    ),
    pytest.param(
        _set("rollout.steps", [1, 10, 50]),
        "rollout.steps[2]: the last step is 50, so the rollout never completes; end the list with 100",
        id="steps-not-ending-at-100",
    ),
    pytest.param(
        _set("rollout.steps", [0, 100]),
        "rollout.steps[0]: must be at least 1, got 0; use 1 or more",
        id="step-below-1",
    ),
    pytest.param(
        _set("rollout.false_rollback_rate", 0.5),
        "rollout.false_rollback_rate: must be less than 0.5, got 0.5",
        id="false-rollback-rate",
    ),
    pytest.param(
        _waves(1, 2, 4, 4, 4),
        "clusters[2].wave: waves must be contiguous from 1 (found 1, 2, 4); use wave 3",
        id="wave-gap",
    ),
    pytest.param(
        _waves(2, 2, 3, 3, 3),
        "clusters[0].wave: waves must be contiguous from 1 (found 2, 3); use wave 1",
        id="no-wave-1",
    ),
    pytest.param(
        _pool(instance_type="g5.xlarg"),
        "clusters[2].gpu_pools[0].instance_type: 'g5.xlarg' is not a GPU instance type gpufleet knows "
        "on aws; did you mean g5.xlarge",
        id="unknown-instance-type",
    ),
    pytest.param(
        _pool(instance_type="g2-standard-4"),
        "clusters[2].gpu_pools[0].instance_type: 'g2-standard-4' is an instance type on gcp, not on aws",
        id="instance-type-of-another-cloud",
    ),
    pytest.param(
        _pool(instance_type="g5.12xlarge", gpu_count=2),
        "clusters[2].gpu_pools[0].gpu_count: g5.12xlarge has 4 x a10g; set gpu_count: 4 or remove it",
        id="wrong-gpu-count",
    ),
    pytest.param(
        _pool(gpu_type="t4"),
        "clusters[2].gpu_pools[0].gpu_type: g5.xlarge has 1 x a10g; set gpu_type: a10g or remove it",
        id="wrong-gpu-type",
    ),
    pytest.param(
        _pool(min_nodes=3, max_nodes=1),
        "clusters[2].gpu_pools[0].min_nodes: min_nodes (3) is greater than max_nodes (1)",
        id="min-above-max",
    ),
    pytest.param(
        _pool(name="gpu-pool"),
        "clusters[2].gpu_pools[0].name: pool name 'gpu-pool' is not allowed",
        id="pool-name",
    ),
    pytest.param(
        _set(f"clusters.{AWS}.region", "us-east"),
        "clusters[2].region: 'us-east' is not an AWS region name; use a region such as us-east-1",
        id="aws-region",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.region", "us-central1-a"),
        "clusters[3].region: 'us-central1-a' is a zone, not a region; use the region us-central1",
        id="gcp-zone-as-region",
    ),
    pytest.param(
        _set(f"clusters.{AZURE}.region", "East US"),
        "clusters[4].region: 'East US' is not an Azure region name; use the programmatic name in lowercase "
        "without spaces, such as eastus",
        id="azure-display-region",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.project", "My Project"),
        "clusters[3].project: 'My Project' is not a GCP project ID",
        id="gcp-project",
    ),
    pytest.param(
        _set(f"clusters.{AWS}.kubernetes_version", 1.31),
        "clusters[2].kubernetes_version: expected a string, got 1.31; put the value in quotes",
        id="unquoted-kubernetes-version",
    ),
    pytest.param(
        _set(f"clusters.{AWS}.public_access_cidrs", ["10.0.0.1/24"]),
        "clusters[2].public_access_cidrs[0]: '10.0.0.1/24' has host bits set; use 10.0.0.0/24",
        id="cidr-host-bits",
    ),
    pytest.param(
        _set(f"clusters.{AWS}.endpoint_public_access", True),
        "clusters[2].public_access_cidrs: empty while endpoint_public_access is true",
        id="public-endpoint-without-cidrs",
    ),
    pytest.param(
        _set(f"clusters.{AZURE}.public_access_cidrs", ["203.0.113.0/24"]),
        "clusters[4].public_access_cidrs: listed, but endpoint_public_access is false",
        id="azure-cidrs-without-public-endpoint",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.endpoint_public_access", True),
        "clusters[3].public_access_cidrs: empty while endpoint_public_access is true",
        id="gcp-public-endpoint-without-cidrs",
    ),
    pytest.param(
        _set(f"clusters.{AZURE}.gpu_pools.0.name", "platform"),
        "clusters[4].gpu_pools[0].name: pool name 'platform' is taken by the platform node pool gpufleet "
        "adds to every azure cluster; give the GPU pool another name",
        id="azure-reserved-pool-name",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.gpu_pools.0.name", "system"),
        "clusters[3].gpu_pools[0].name: pool name 'system' is taken by the system node pool",
        id="gcp-reserved-pool-name",
    ),
    pytest.param(
        _set("models.0.inputs.0.dims", [4, 4]),
        "models[0].inputs[0].dims: builtin:mlp needs one fixed dimension, not [4, 4]; set e.g. dims: [16]",
        id="builtin-mlp-two-dims",
    ),
    pytest.param(
        _set("models.0.outputs.0.dtype", "FP16"),
        "models[0].outputs[0].dtype: builtin:mlp computes in FP32, not FP16; set dtype: FP32",
        id="builtin-mlp-fp16",
    ),
    pytest.param(
        _set(
            "models.0.outputs",
            [{"name": "A", "dtype": "FP32", "dims": [2]}, {"name": "B", "dtype": "FP32", "dims": [2]}],
        ),
        "models[0].outputs: builtin:mlp has exactly one input and one output, not 2 outputs",
        id="builtin-mlp-two-outputs",
    ),
    pytest.param(
        _set("clusters.0.replica", 2),
        "clusters[0].replica: unknown key 'replica'; remove it or check the spelling "
        "(did you mean 'replicas'? allowed here: cloud, name, wave, replicas)",
        id="unknown-key-in-cluster",
    ),
    pytest.param(
        _set("surprise", 1),
        "surprise: unknown key 'surprise'; remove it or check the spelling (allowed here: name, clusters, "
        "model_store, models, rollout, previews, dr)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        _set("clusters.0.replicas", "many"),
        "clusters[0].replicas: expected an integer, got 'many'; use an integer here",
        id="wrong-type",
    ),
    pytest.param(
        _set("clusters.0.replicas", "2"),
        "clusters[0].replicas: expected an integer, got '2'; remove the quotes",
        id="quoted-number",
    ),
    pytest.param(
        _set("clusters.0.replicas", 9),
        "clusters[0].replicas: must be at most 8, got 9; use 8 or less",
        id="range",
    ),
    pytest.param(
        _set("clusters.0.cloud", "oci"),
        "clusters[0].cloud: cloud must be one of local, aws, gcp, azure, got 'oci'; use one of them",
        id="unknown-cloud",
    ),
    pytest.param(
        _delete("clusters.0.cloud"),
        "clusters[0].cloud: required; add it (cloud must be one of local, aws, gcp, azure)",
        id="missing-cloud",
    ),
    pytest.param(_delete("model_store"), "model_store: required; add it", id="missing-section"),
    pytest.param(_set("clusters", []), "clusters: needs at least 1 item, got 0; add one", id="no-clusters"),
    pytest.param(
        _set("clusters.0", ["local-a"]),
        "clusters[0]: expected a mapping, got ['local-a']",
        id="list-for-mapping",
    ),
    pytest.param(
        _set("models.0.inputs.0.dtype", "fp32"),
        "models[0].inputs[0].dtype: must be one of FP32, FP16, INT32, INT64, BOOL, UINT8, INT8, BF16, "
        "got 'fp32'; use FP32 (case matters)",
        id="dtype-case",
    ),
    pytest.param(
        _set("models.0.inputs.0.dims", [16, 0]),
        "models[0].inputs[0].dims[1]: 0 is not a valid dimension; use -1 for a variable size",
        id="zero-dim",
    ),
    pytest.param(
        _set("models.0.outputs.0.name", "INPUT"),
        "models[0].outputs[0].name: duplicate tensor name 'INPUT' (also inputs[0].name)",
        id="duplicate-tensor-name",
    ),
    pytest.param(
        _set("models.0.source", "missing.onnx"),
        "models[0].source: file 'missing.onnx' not found",
        id="no-onnx",
    ),
    pytest.param(
        _set("models.0.source", "builtin:resnet"),
        "models[0].source: unknown builtin model 'resnet'",
        id="builtin",
    ),
    pytest.param(
        _set("models.0.engine_targets.0.gpu_arch", "ampere"),
        "models[0].engine_targets[0].gpu_arch: 'ampere' is not a GPU architecture; use the sm form",
        id="gpu-arch",
    ),
    pytest.param(
        _duplicate_first_model,
        "models[1].name: duplicate model name 'mlp' (also models[0])",
        id="duplicate-model-names",
    ),
    pytest.param(
        _set("rollout.slo.max_error_rate", float("inf")),
        "rollout.slo.max_error_rate: must be a finite number, got inf",
        id="infinite-number",
    ),
    pytest.param(
        _set("previews.max_gpu_nodes", 17),
        "previews.max_gpu_nodes: must be between 0 and 16, got 17; use at most 16 GPU nodes per preview "
        "pool, or 0 for previews without GPU pools",
        id="previews-gpu-cap",
    ),
    pytest.param(
        _set("previews.max_gpu_nodes", -1),
        "previews.max_gpu_nodes: must be between 0 and 16, got -1",
        id="previews-negative-gpu-cap",
    ),
    pytest.param(
        _set("previews.owner_tag", "Owner"),
        "previews.owner_tag: 'Owner' is not usable as a tag key on every cloud; use up to 63 lowercase",
        id="owner-tag-key-case",
    ),
    pytest.param(
        _set("previews.owner_tag", "aws:owner"),
        "previews.owner_tag: 'aws:owner' is not usable as a tag key on every cloud",
        id="owner-tag-key-colon",
    ),
    pytest.param(
        _set("previews.owner_tag", "gpufleet-branch"),
        "previews.owner_tag: 'gpufleet-branch' would collide with gpufleet's own gpufleet-* tags",
        id="owner-tag-key-gpufleet",
    ),
    # Kubernetes versions: as of 2026-12-02 1.31 is past EKS extended support (ended 2026-11-26), out of
    # GKE's Regular channel and out of AKS community support (facts from the providers' calendars).
    pytest.param(
        _set(f"clusters.{AWS}.kubernetes_version", "1.31"),
        "clusters[2].kubernetes_version: aws cannot create a cluster with Kubernetes 1.31 "
        "(as of 2026-12-02); use one of 1.32, 1.33, 1.34, 1.35, 1.36",
        id="eks-version-gone",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.kubernetes_version", "1.33"),
        "clusters[3].kubernetes_version: gcp cannot create a cluster with Kubernetes 1.33",
        id="gke-version-gone",
    ),
    pytest.param(
        _set(f"clusters.{AZURE}.kubernetes_version", "1.31"),
        "clusters[4].kubernetes_version: azure cannot create a cluster with Kubernetes 1.31",
        id="aks-version-gone",
    ),
    pytest.param(
        _set(f"clusters.{AWS}.kubernetes_version", "1.99"),
        "clusters[2].kubernetes_version: aws cannot create a cluster with Kubernetes 1.99",
        id="future-version",
    ),
    # GKE zones. L4 (G2) is offered in us-central1-a, -b and -c but not -f (Compute Engine GPU zones).
    pytest.param(
        _set(f"clusters.{GCP}.gpu_pools.0.zones", ["us-central1-f"]),
        "clusters[3].gpu_pools[0].zones[0]: us-central1-f does not offer nvidia-l4",
        id="zone-without-the-gpu",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.gpu_pools.0.zones", ["us-east1-b"]),
        "clusters[3].gpu_pools[0].zones[0]: 'us-east1-b' is not a zone of us-central1; use some of "
        "us-central1-a, us-central1-b, us-central1-c",
        id="zone-of-another-region",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.gpu_pools.0.zones", ["us-central1-a", "us-central1-a"]),
        "clusters[3].gpu_pools[0].zones[1]: us-central1-a is listed twice; remove the repeat",
        id="zone-twice",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.gpu_pools.0.zones", []),
        "clusters[3].gpu_pools[0].zones: needs at least 1 item, got 0",
        id="zones-empty",
    ),
    pytest.param(
        _set(f"clusters.{GCP}.region", "southamerica-east1"),
        "clusters[3].gpu_pools[0].instance_type: g2-standard-4 (nvidia-l4) is offered in no zone of "
        "southamerica-east1 as far as gpufleet's catalog knows",
        id="region-without-the-gpu",
    ),
    pytest.param(
        _set(f"clusters.{AWS}.gpu_pools.0.zones", ["us-east-1a"]),
        "clusters[2].gpu_pools[0].zones: zones are only used by gcp pools, not on aws; remove zones",
        id="zones-on-aws",
    ),
    pytest.param(
        _set("dr.restore", ["models", "everything"]),
        "dr.restore[1]: must be one of models, rollout_state",
        id="dr",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), BROKEN)
def test_broken_fleet_is_rejected_with_the_field_path(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    doc = example()
    mutate(doc)
    errors = errors_of(doc)
    assert any(line.startswith(expected) for line in errors), errors


def test_rules_that_depend_on_the_clouds_in_use_apply_only_to_those_clouds() -> None:
    doc = example()
    _without_cloud("gcp")(doc)
    _without_cloud("azure")(doc)
    del doc["model_store"]["azure_storage_account"]
    doc["model_store"]["bucket"] = "gpufleet.google.models"  # fine for S3, not for GCS or Azure
    doc["clusters"][AWS]["name"] = "a" * 41  # over GKE's limit, within EKS's
    fleet = parse_fleet(yaml.safe_dump(doc))
    assert fleet.clouds() == {"local", "aws"}
    assert fleet.model_store.bucket == "gpufleet.google.models"


def test_several_mistakes_are_all_reported() -> None:
    doc = example()
    doc["clusters"][0]["replicas"] = 0
    doc["model_store"]["bucket"] = "UPPER"
    doc["rollout"]["min_samples"] = 1
    errors = errors_of(doc)
    assert [line.split(":")[0] for line in errors] == [
        "clusters[0].replicas",
        "model_store.bucket",
        "rollout.min_samples",
    ]


def test_a_flood_of_mistakes_is_capped_with_a_summary_line() -> None:
    doc = example()
    doc["clusters"] = [{"cloud": "local", "name": f"n{i}", "replicas": 99} for i in range(100)]
    errors = errors_of(doc)
    assert len(errors) == MAX_ERROR_LINES + 1
    assert errors[-1] == "fleet.yaml: 60 more errors not shown; fix the ones above and check again"


# ------------------------------------------------------------------------------------------------
# Files and YAML


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    with pytest.raises(FleetSpecError) as info:
        load_fleet(path)
    assert info.value.errors == [
        f"{path}: file not found; pass the path of your fleet file "
        "(e.g. gpufleet validate path/to/fleet.yaml)"
    ]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(FleetSpecError) as info:
        load_fleet(tmp_path)
    assert_clean(info.value)
    assert info.value.errors[0].startswith(f"{tmp_path}: is a directory, not a file")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(EXAMPLE.read_text())

    # chmod 0 would not stop root (tests often run as root in containers): fail the read directly.
    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(FleetSpecError) as info:
        load_fleet(path)
    assert info.value.errors == [f"{path}: permission denied; make the file readable (chmod u+r {path})"]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(FleetSpecError) as info:
        load_fleet(path)
    assert_clean(info.value)
    assert "not UTF-8" in str(info.value)


def test_bad_yaml_names_the_line_and_column() -> None:
    errors = errors_of(
        "name: demo\nclusters:\n  - {name: a, cloud: local\nmodel_store: {bucket: x}\n", "f.yaml"
    )
    assert len(errors) == 1
    assert errors[0].startswith("f.yaml:4:")
    assert "invalid YAML (" in errors[0] and errors[0].endswith("; fix the syntax at that line")


def test_bad_indentation_names_the_line() -> None:
    (error,) = errors_of("name: demo\n  clusters: []\n")
    assert error.startswith("fleet.yaml:2:")


def test_empty_file() -> None:
    for text in ("", "\n\n", "# only a comment\n"):
        assert errors_of(text) == [
            "fleet.yaml: file is empty; declare at least name, clusters and model_store"
        ]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- name: demo\n- clusters: []\n", "a list"),
        ("just text\n", "the text 'just text'"),
        ("42\n", "the value 42"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    (error,) = errors_of(text)
    assert error.startswith(f"fleet.yaml: the top level is {kind}, not a mapping; ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "!!python/object:os.system {}\n", "fleet.yaml:1:1: invalid YAML (could not determine", id="tag"
        ),
        pytest.param("name: 2024-13-01\n", "fleet.yaml: invalid YAML value (", id="impossible-date"),
        pytest.param(
            "name: \x00\n", "fleet.yaml:1:7: invalid YAML (unacceptable character #x0000)", id="nul"
        ),
        pytest.param("a: 1\n---\nb: 2\n", "fleet.yaml:2:1: invalid YAML (", id="two-documents"),
        pytest.param(
            "? [a, b]\n: 1\n", "fleet.yaml:1:3: invalid YAML (found unhashable key)", id="list-as-key"
        ),
        pytest.param("x: " + "1" * 5000 + "\n", "fleet.yaml: invalid YAML value (", id="huge-int"),
        pytest.param(
            "[" * 5000 + "]" * 5000, "fleet.yaml: the document is nested too deeply", id="deep-flow"
        ),
        pytest.param("a: &a [*a]\n", "fleet.yaml: the document nests more than", id="alias-cycle"),
        pytest.param(
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n"
                for a, b in zip("abcdefg", "bcdefgh", strict=True)
            ),
            "fleet.yaml: the document holds more than",
            id="alias-bomb",
        ),
        pytest.param(
            "name: demo\nclusters: [{name: a, cloud: local, 1: x, null: y}]\n"
            "model_store: {bucket: good-bucket}\n",
            "clusters[0]: key 1 is not a field name; "
            "use a field name (allowed here: cloud, name, wave, replicas)",
            id="non-string-key",
        ),
    ],
)
def test_hostile_yaml_gives_clean_errors(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(line.startswith(expected) for line in errors), errors


def test_relative_onnx_source_resolves_against_the_fleet_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    onnx_file = tmp_path / "models" / "net.onnx"
    onnx_file.write_bytes(b"placeholder: only existence is checked")
    doc = example()
    doc["models"][0]["source"] = "models/net.onnx"
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(REPO)  # somewhere else: the cwd must not matter
    assert load_fleet(fleet_file).model("mlp").source == str(onnx_file)

    with pytest.raises(FleetSpecError) as info:  # parse_fleet without base_dir: relative to the cwd
        parse_fleet(fleet_file.read_text())
    assert info.value.errors[0].startswith("models[0].source: file 'models/net.onnx' not found; ")
    assert parse_fleet(fleet_file.read_text(), base_dir=tmp_path).model("mlp").source == str(onnx_file)


def test_one_wrong_value_gives_exactly_one_line() -> None:
    # The CLI prints one line per error; a single wrong value must give exactly one line.
    errors = errors_of(
        "name: x\nclusters:\n  - {name: local-a, cloud: local, replicas: many}\n"
        "model_store: {bucket: good-bucket}\n"
    )
    assert errors == ["clusters[0].replicas: expected an integer, got 'many'; use an integer here"]


def test_fleet_can_be_built_in_code_with_defaults() -> None:
    fleet = Fleet(
        name="code",
        clusters=[LocalCluster(cloud="local", name="local-a")],
        model_store=ModelStore(bucket="code-models"),
    )
    assert fleet.rollout.steps == [1, 10, 50, 100]
    assert fleet.rollout is not Fleet.model_fields["rollout"].default  # defaults are copied, not shared

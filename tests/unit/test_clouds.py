"""gpufleet/clouds: one module per cloud behind one interface, a registry, and no SDK paid for on import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpufleet import naming
from gpufleet.catalog import CATALOG_CLOUDS
from gpufleet.clouds import CLOUDS, Listing, cloud, price_table
from tests.conftest import REPO

INTERFACE = (
    "region_problem",
    "cluster_name_problem",
    "bucket_problem",
    "credentials_problem",
    "places",
    "list_clusters",
    "price_stack",
)


def test_the_registry_holds_every_cloud_once() -> None:
    assert list(CLOUDS) == ["aws", "gcp", "azure"]
    assert {c.service for c in CLOUDS.values()} == {"EKS", "GKE", "AKS"}
    assert set(CATALOG_CLOUDS) == set(CLOUDS) == set(price_table())
    for name, provider in CLOUDS.items():
        assert cloud(name) is provider and provider.name == name
        assert all(callable(getattr(provider, method)) for method in INTERFACE)
    with pytest.raises(KeyError):
        cloud("local")


@pytest.mark.parametrize(("provider", "limit"), [("aws", 100), ("gcp", 40), ("azure", 63)])
def test_cluster_name_limits_are_the_control_planes(provider: str, limit: int) -> None:
    # EKS 100, GKE 40, AKS 63 characters (each service's API reference).
    assert naming.cluster_name_problem(provider, "a" * limit) is None
    problem = naming.cluster_name_problem(provider, "a" * (limit + 1))
    assert problem is not None and f"limit of {limit}" in problem and cloud(provider).service in problem


def test_naming_delegates_to_the_clouds() -> None:
    assert naming.region_problem("gcp", "us-central1-a") == cloud("gcp").region_problem("us-central1-a")
    assert naming.region_problem("local", "x") is not None
    assert naming.gcs_bucket_problem("goog-models") == cloud("gcp").bucket_problem("goog-models")
    assert naming.azure_container_problem("a--b") == cloud("azure").bucket_problem("a--b")
    assert naming.s3_bucket_problem("Bad_Bucket") == cloud("aws").bucket_problem("Bad_Bucket")
    assert {name: c.reserved_pool_names for name, c in CLOUDS.items()} == naming.RESERVED_POOL_NAMES


@pytest.mark.parametrize("name", ["aws", "gcp", "azure"])
def test_a_cloud_with_no_places_lists_nothing_and_calls_nobody(name: str) -> None:
    def no_client(*args: object) -> object:
        raise AssertionError("no API call without a place to look")

    assert cloud(name).list_clusters([], ("gpufleet-preview", "true"), no_client) == Listing()


def test_importing_the_cloud_facts_and_the_spec_loads_no_cloud_sdk() -> None:
    code = (
        "import sys, gpufleet.clouds, gpufleet.naming, gpufleet.spec as s; "
        "s.load_fleet('fleet.yaml'); gpufleet.clouds.price_table(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'google', 'azure')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"

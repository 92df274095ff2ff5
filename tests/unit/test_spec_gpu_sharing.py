"""fleet.yaml GPU sharing fields (gpu_pools[].mig_strategy, gpu_pools[].time_slicing_replicas): defaults,
what is accepted, and one clear line for each mistake."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gpufleet.spec import AwsCluster, AzureCluster, parse_fleet
from tests.unit.test_spec import AWS, AZURE, GCP, errors_of, example


def _load(doc: dict[str, Any]) -> Any:
    return parse_fleet(yaml.safe_dump(doc, sort_keys=False))


def test_sharing_is_off_unless_asked() -> None:
    fleet = _load(example())
    for cluster in fleet.cloud_clusters():
        for pool in cluster.gpu_pools:
            assert (pool.mig_strategy, pool.time_slicing_replicas) == ("none", 1)


def test_mig_on_a100_and_time_slicing_are_accepted() -> None:
    doc = example()
    doc["clusters"][AWS]["gpu_pools"] = [
        {
            "name": "a100",
            "instance_type": "p4d.24xlarge",
            "mig_strategy": "mixed",
            "time_slicing_replicas": 4,
        },
        {"name": "a10g", "instance_type": "g5.xlarge", "time_slicing_replicas": 4},
    ]
    doc["clusters"][AZURE]["gpu_pools"][0]["time_slicing_replicas"] = 2
    fleet = _load(doc)
    aws = fleet.clusters[AWS]
    azure = fleet.clusters[AZURE]
    assert isinstance(aws, AwsCluster) and isinstance(azure, AzureCluster)
    assert [(p.mig_strategy, p.time_slicing_replicas) for p in aws.gpu_pools] == [("mixed", 4), ("none", 4)]
    assert azure.gpu_pools[0].time_slicing_replicas == 2


@pytest.mark.parametrize(
    ("cluster", "pool_fields", "expected"),
    [
        (
            AWS,
            {"mig_strategy": "single"},
            "clusters[2].gpu_pools[0].mig_strategy: g5.xlarge has a10g GPUs, which have no MIG; "
            "set mig_strategy: none",
        ),
        (AWS, {"mig_strategy": "all"}, "clusters[2].gpu_pools[0].mig_strategy: "),
        (AWS, {"time_slicing_replicas": 0}, "clusters[2].gpu_pools[0].time_slicing_replicas: "),
        (AWS, {"time_slicing_replicas": 49}, "clusters[2].gpu_pools[0].time_slicing_replicas: "),
        (AWS, {"time_slicing_replicas": "2"}, "clusters[2].gpu_pools[0].time_slicing_replicas: "),
        (
            GCP,
            {"time_slicing_replicas": 2},
            "clusters[3].gpu_pools[0].time_slicing_replicas: GKE time-shares GPUs through its own device "
            "plugin",
        ),
        (
            GCP,
            {"instance_type": "a2-highgpu-1g", "mig_strategy": "single"},
            "clusters[3].gpu_pools[0].mig_strategy: GKE partitions GPUs itself",
        ),
    ],
)
def test_a_sharing_mistake_is_one_line_naming_the_field(
    cluster: int, pool_fields: dict[str, Any], expected: str
) -> None:
    doc = example()
    doc["clusters"][cluster]["gpu_pools"][0].update(pool_fields)
    errors = errors_of(doc)
    assert any(line.startswith(expected) for line in errors), errors


def test_pools_of_one_cluster_must_agree_on_sharing() -> None:
    doc = example()
    doc["clusters"][AWS]["gpu_pools"] = [
        {
            "name": "a100",
            "instance_type": "p4d.24xlarge",
            "mig_strategy": "single",
            "time_slicing_replicas": 2,
        },
        {"name": "h100", "instance_type": "p5.48xlarge", "mig_strategy": "mixed"},
    ]
    errors = errors_of(doc)
    assert any(
        line.startswith("clusters[2].gpu_pools[1].mig_strategy: mixed differs from pool a100's single")
        for line in errors
    ), errors
    assert any(
        line.startswith("clusters[2].gpu_pools[1].time_slicing_replicas: 1 differs from pool a100's 2")
        for line in errors
    ), errors

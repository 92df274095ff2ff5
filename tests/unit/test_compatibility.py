"""Which engines serve where (gpufleet/compatibility.py) and the validate-time rule built on it.

Expected values come from TensorRT's documented hardware-compatibility levels (default: the GPU it was
built on; ampere_plus: any sm80+ GPU) and from the instance catalog (g5.xlarge = A10G = sm86,
g2-standard-4 = L4 = sm89, Standard_NC4as_T4_v3 = T4 = sm75).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpufleet.compatibility import engine_problem, runs_on, tensorrt_for_release
from gpufleet.spec import FleetSpecError, parse_fleet
from tests.conftest import GPUFLEET

FLEET = """
name: compat
clusters:
  - {name: local-a, cloud: local, wave: 1}
  - name: aws-a
    cloud: aws
    wave: 2
    region: us-east-1
    triton_release: "25.06"
    gpu_pools: [{name: a10g, instance_type: g5.xlarge}]
  - name: aks-t4
    cloud: azure
    wave: 2
    region: eastus
    gpu_pools: [{name: t4, instance_type: Standard_NC4as_T4_v3}]
model_store: {bucket: compat-models, azure_storage_account: compatmodels}
models:
  - name: mlp
    source: builtin:mlp
    inputs: [{name: INPUT, dtype: FP32, dims: [16]}]
    outputs: [{name: OUTPUT, dtype: FP32, dims: [4]}]
    engine_targets: TARGETS
"""
BOTH = "[{gpu_arch: sm75}, {gpu_arch: sm80, hardware_compatibility: ampere_plus}]"


def fleet(targets: str = BOTH):  # type: ignore[no-untyped-def]
    return parse_fleet(FLEET.replace("TARGETS", targets))


@pytest.mark.parametrize(
    ("target", "level", "gpu", "expected"),
    [
        ("sm86", "none", "sm86", True),
        ("sm80", "none", "sm86", False),
        ("sm80", "same_compute_capability", "sm86", False),
        ("sm80", "ampere_plus", "sm86", True),
        ("sm80", "ampere_plus", "sm89", True),
        ("sm80", "ampere_plus", "sm90", True),
        ("sm80", "ampere_plus", "sm75", False),
        ("sm75", "none", "sm75", True),
    ],
)
def test_plans_run_where_tensorrt_says(target: str, level: str, gpu: str, expected: bool) -> None:
    assert runs_on(target, level, gpu) is expected


def test_ampere_plus_below_sm80_is_refused_in_the_fleet_file() -> None:
    with pytest.raises(FleetSpecError, match=r"engine_targets\[0\]\.hardware_compatibility: .*sm80\+"):
        fleet("[{gpu_arch: sm75, hardware_compatibility: ampere_plus}]")


def test_a_plan_is_refused_on_a_local_cluster_and_a_cpu_package_on_a_cloud_one() -> None:
    f = fleet()
    local, aws = f.clusters[0], f.clusters[1]
    plan = {"target": "sm80", "format": "tensorrt_plan", "hardware_compatibility": "ampere_plus"}
    problem = engine_problem(local, tensorrt="10.11.0", **plan)
    assert problem and problem.startswith("local-a ") and "CPU" in problem
    cpu = engine_problem(aws, target="cpu", format="onnx", hardware_compatibility=None, tensorrt=None)
    assert cpu and cpu.startswith("aws-a ") and "local clusters" in cpu
    assert (
        engine_problem(local, target="cpu", format="onnx", hardware_compatibility=None, tensorrt=None) is None
    )


def test_a_plan_must_run_on_every_gpu_pool() -> None:
    aws = fleet().clusters[1]
    exact = engine_problem(
        aws, target="sm80", format="tensorrt_plan", hardware_compatibility="none", tensorrt=None
    )
    assert exact and "pool a10g" in exact and "sm86" in exact
    assert (
        engine_problem(
            aws, target="sm80", format="tensorrt_plan", hardware_compatibility="ampere_plus", tensorrt=None
        )
        is None
    )


def test_a_plan_built_with_a_newer_tensorrt_than_the_clusters_triton_is_refused() -> None:
    aws = fleet().clusters[1]  # triton_release 25.06
    shipped = tensorrt_for_release("25.06")
    major, minor, _ = (int(p) for p in shipped.split("."))
    args = {"target": "sm86", "format": "tensorrt_plan", "hardware_compatibility": "none"}
    newer = engine_problem(aws, tensorrt=f"{major}.{minor + 1}.0", **args)
    assert newer and f"TensorRT {shipped}" in newer and "25.06" in newer
    assert engine_problem(aws, tensorrt=f"{major}.{minor}.99", **args) is None  # a patch release still loads
    assert engine_problem(aws, tensorrt=f"{major}.{minor - 1}.0", **args) is None


def test_an_unknown_triton_release_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(
        FleetSpecError, match=r"clusters\[1\]\.triton_release: '99.01' is not a Triton release .*25\.10"
    ):
        parse_fleet(FLEET.replace('"25.06"', '"99.01"').replace("TARGETS", BOTH))


def test_validate_refuses_a_gpu_pool_no_engine_target_runs_on(tmp_path: Path) -> None:
    file = tmp_path / "fleet.yaml"
    file.write_text(FLEET.replace("TARGETS", "[{gpu_arch: sm80}, {gpu_arch: sm89}]"))
    done = subprocess.run([*GPUFLEET, "validate", str(file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "models[0].engine_targets:" in line and "aws-a" in line and "a10g" in line and "sm86" in line
    assert "sm80 fp16, sm89 fp16" in line


def test_a_model_without_engine_targets_is_refused_when_the_fleet_has_gpu_clusters() -> None:
    with pytest.raises(FleetSpecError, match=r"models\[0\]\.engine_targets: .*\(targets: none\)"):
        fleet("[]")


def test_every_pool_covered_validates() -> None:
    assert len(fleet().models[0].engine_targets) == 2

"""Which engines can serve on which cluster: GPU architecture, hardware compatibility, TensorRT version.

TensorRT's rules (TensorRT developer guide, "Hardware Compatibility"): a plan built with the default
level runs on the GPU model it was built on, here taken as its architecture (sm80, sm86, ...);
`same_compute_capability` runs on any GPU of the same compute capability; `ampere_plus` (built on an
sm80+ GPU) runs on every Ampere or newer GPU. A plan also runs only under a TensorRT at least as new
as the one that built it: a cluster's Triton image ships one TensorRT (gpufleet/data/triton_releases.yaml).
Local clusters serve on CPU: only CPU packages (ONNX run by onnxruntime) run there.
"""

from __future__ import annotations

import re
from typing import Any

from gpufleet import catalog

AMPERE = 80


def arch_number(arch: str) -> int:
    """sm86 -> 86."""
    found = re.fullmatch(r"sm(\d{2,3})", arch.strip().lower())
    if not found:
        raise ValueError(f"not a GPU architecture: {arch!r}")
    return int(found.group(1))


def runs_on(target_arch: str, hardware_compatibility: str | None, gpu_arch: str) -> bool:
    """Whether a plan built for `target_arch` at this compatibility level runs on a `gpu_arch` GPU."""
    if hardware_compatibility == "ampere_plus":
        return arch_number(target_arch) >= AMPERE and arch_number(gpu_arch) >= AMPERE
    return arch_number(target_arch) == arch_number(gpu_arch)


def _major_minor(version: str) -> tuple[int, int]:
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def tensorrt_for_release(release: str) -> str:
    """The TensorRT version a Triton release ships (KeyError when the data file does not list it)."""
    return catalog.triton_releases().by_release[release].tensorrt


def gpu_pools(cluster: Any) -> list[tuple[str, str, str]]:
    """(pool name, GPU type, GPU architecture) of each GPU pool of a cloud cluster, from the catalog."""
    pools = []
    for pool in getattr(cluster, "gpu_pools", []):
        entry = catalog.instance_type(cluster.cloud, pool.instance_type)
        if entry is not None:
            pools.append((pool.name, entry.gpu, entry.gpu_arch))
    return pools


def engine_problem(
    cluster: Any, *, target: str, format: str, hardware_compatibility: str | None, tensorrt: str | None
) -> str | None:
    """Why an engine with these facts cannot serve on `cluster` (a spec cluster); None when it can."""
    if cluster.cloud == "local":
        if format == "onnx":
            return None
        return (
            f"{cluster.name} is a local cluster and serves on CPU; a {target} {format} engine is for GPU "
            "clusters: load a cpu package (`gpufleet engine build MODEL --target cpu`) there"
        )
    if format != "tensorrt_plan":
        return (
            f"{cluster.name} ({cluster.cloud}) serves TensorRT plans on GPUs; a {target} {format} package "
            "runs on local clusters only: build one of the model's GPU targets for it"
        )
    for pool, gpu, arch in gpu_pools(cluster):
        if not runs_on(target, hardware_compatibility, arch):
            level = hardware_compatibility or "none"
            return (
                f"{cluster.name}: pool {pool} has {gpu} GPUs ({arch}); a {target} plan built with hardware "
                f"compatibility {level} does not run there: build for {arch}"
                + (
                    ", or for sm80+ with hardware_compatibility: ampere_plus"
                    if arch_number(arch) >= AMPERE
                    else ""
                )
            )
    release = getattr(cluster, "triton_release", None)
    if tensorrt and release:
        shipped = tensorrt_for_release(release)
        if _major_minor(tensorrt) > _major_minor(shipped):
            return (
                f"{cluster.name}: the plan was built with TensorRT {tensorrt}, newer than the TensorRT "
                f"{shipped} of its Triton {release}: build with TensorRT {shipped}, or set a newer "
                "triton_release for the cluster"
            )
    return None


def uncovered_pools(model: Any, cluster: Any) -> list[tuple[str, str]]:
    """For validate: each GPU pool of a cloud cluster that none of the model's engine_targets runs on,
    as (the pool, its GPU and architecture; the fix)."""
    found = []
    for pool, gpu, arch in gpu_pools(cluster):
        if any(runs_on(t.gpu_arch, t.hardware_compatibility, arch) for t in model.engine_targets):
            continue
        fix = f"add {{gpu_arch: {arch}}}"
        if arch_number(arch) >= AMPERE:
            fix += ", or hardware_compatibility: ampere_plus on an sm80+ target"
        found.append((f"pool {pool} ({gpu}, {arch})", fix))
    return found

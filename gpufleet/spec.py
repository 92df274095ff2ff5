"""fleet.yaml: the pydantic models, loading, and the one-line error messages users see.

Product rule: any input, however broken, ends either in a Fleet or in a FleetSpecError whose lines each
read "<field path>: <problem>; <fix>". Never a traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import unicodedata
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from gpufleet import catalog, compatibility, naming
from gpufleet.naming import shown

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("mlp",)
# `torch:<file.py>:<callable>`: a Python file whose callable returns a torch.nn.Module; engine build
# exports it to ONNX (pipelines/engines/export.py; needs the optional `torch` extra).
TORCH_PREFIX = "torch:"
SOURCE_FORMS = "builtin:mlp, a path to an .onnx file, or torch:<file.py>:<function>"

# Far beyond any real fleet file (a fleet nests about 6 levels and holds a few hundred values); the
# limits stop YAML alias bombs and self-referencing aliases before pydantic walks them.
MAX_DOCUMENT_DEPTH = 32
MAX_DOCUMENT_VALUES = 100_000
# A file with hundreds of mistakes is usually one mistake repeated; the first few say what to fix.
MAX_ERROR_LINES = 40

_RULE_ERROR = "fleet_rule"


class FleetSpecError(Exception):
    """The fleet file cannot be used. Each entry of errors is one line: "<field path>: <problem>; <fix>"."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = [_one_line(e) for e in errors] or ["fleet file: invalid; check it"]
        super().__init__("\n".join(self.errors))


# Characters str.splitlines() breaks on, plus other control characters that would garble a terminal.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _one_line(text: str) -> str:
    flat = "".join(" " if c in _LINE_BREAKS or unicodedata.category(c) == "Cc" else c for c in text)
    return flat.strip() or "fleet file: invalid; check it"


def _rule_error(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """Errors found by a model-level rule, each for a field path relative to the model being validated.

    A ValueError raised in a model validator would be reported at the model, not at the field at fault;
    this carries the field paths through pydantic to the formatter.
    """
    summary = "; ".join(f"{where}: {message}" for where, message in problems)
    return PydanticCustomError(_RULE_ERROR, "{summary}", {"summary": summary, "problems": tuple(problems)})


def _checked(problem: Callable[[str], str | None]) -> AfterValidator:
    """A validator from a naming-style checker (None when fine, else "<problem>; <fix>")."""

    def check(value: str) -> str:
        message = problem(value)
        if message:
            raise ValueError(message)
        return value

    return AfterValidator(check)


class _Model(BaseModel):
    # strict: YAML already gives real ints, floats and bools, so a quoted "2" is a mistake worth naming,
    # not something to coerce silently. No NaN or infinity in any number.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _pattern_problem(pattern: str, what: str, fix: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def problem(value: str) -> str | None:
        return None if compiled.fullmatch(value) else f"{shown(value)} is not a valid {what}; {fix}"

    return problem


# ---------------------------------------------------------------------------------------------------
# Clusters


Wave = Annotated[int, Field(ge=1)]
KubernetesVersion = Annotated[str, _checked(naming.kubernetes_version_problem)]
Cidr = Annotated[str, _checked(naming.ipv4_cidr_problem)]


MigStrategy = Literal["none", "single", "mixed"]
# GPUs that can be split into MIG instances (NVIDIA MIG user guide: A30, A100, H100, H200, B200 and their
# Grace variants), by the catalog's GPU model names.
MIG_CAPABLE_GPU_PREFIXES = ("a30", "a100", "h100", "h200", "gh200", "b200", "gb200")
# Far above any useful sharing (each replica gets 1/N of the GPU's time and shares its memory).
MAX_TIME_SLICING_REPLICAS = 48


class GpuPool(_Model):
    name: Annotated[str, _checked(naming.gpu_pool_name_problem)]
    instance_type: str
    # Optional in the file; after validation both hold the catalog's values for instance_type.
    gpu_type: str | None = None
    gpu_count: int | None = None
    min_nodes: int = Field(default=0, ge=0)
    max_nodes: int = Field(default=2, ge=1)
    spot: bool = False
    disk_gb: int = Field(default=100, ge=50)
    # gcp only: the zones of the region the pool's nodes may use (default: every zone of the region that
    # offers the pool's GPU, from the catalog).
    zones: Annotated[list[str], Field(min_length=1)] | None = None
    # GPU sharing, applied by the GPU operator's device plugin (pipelines/configure/values.py): how MIG
    # devices are advertised (the operator's mig.strategy) and how many pods may share one GPU by time
    # slicing (1 = no sharing). The cluster rules are in _CloudCluster._gpu_sharing_problems.
    mig_strategy: MigStrategy = "none"
    time_slicing_replicas: int = Field(default=1, ge=1, le=MAX_TIME_SLICING_REPLICAS)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.min_nodes > self.max_nodes:
            raise _rule_error(
                [
                    (
                        "min_nodes",
                        f"min_nodes ({self.min_nodes}) is greater than max_nodes ({self.max_nodes}); "
                        "lower min_nodes or raise max_nodes",
                    )
                ]
            )
        return self


def _unknown_instance_type(cloud: str, name: str) -> str:
    known = catalog.known_instance_types(cloud)
    by_lowercase = {k.lower(): k for k in known}
    close = [by_lowercase[name.lower()]] if name.lower() in by_lowercase else []
    close = close or difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    other_clouds = [c for c in catalog.CATALOG_CLOUDS if c != cloud and catalog.instance_type(c, name)]
    if other_clouds:
        problem = f"{shown(name)} is an instance type on {other_clouds[0]}, not on {cloud}"
    else:
        problem = f"{shown(name)} is not a GPU instance type gpufleet knows on {cloud}"
    if close:
        return f"{problem}; did you mean {', '.join(close)}?"
    return (
        f"{problem}; use one of {', '.join(known[:6])}, ... "
        "(the full list is in gpufleet/data/gpu_catalog.yaml)"
    )


class _CloudCluster(_Model):
    """Fields and rules shared by the EKS, GKE and AKS clusters (declared here to fix the field order)."""

    cloud: str
    name: str
    wave: Wave = 1
    region: str
    # A version the cluster's cloud can create today (gpufleet/data/kubernetes_versions.yaml).
    kubernetes_version: KubernetesVersion = catalog.default_kubernetes_version()
    gpu_pools: Annotated[list[GpuPool], Field(min_length=1)]
    # The Kubernetes API is reachable only from inside the cluster's network unless this is true; then
    # also from public_access_cidrs (EKS public endpoint, GKE master authorized networks, AKS
    # authorized IP ranges on a public API server).
    endpoint_public_access: bool = False
    public_access_cidrs: list[Cidr] = []
    # The NGC tritonserver release the cluster serves with (gpufleet/data/triton_releases.yaml): it
    # bounds the TensorRT version of the engines loaded there.
    triton_release: str = catalog.triton_releases().default

    @model_validator(mode="after")
    def _triton_release_is_known(self) -> Self:
        known = catalog.triton_releases()
        if self.triton_release not in known.by_release:
            problem = (
                f"{shown(self.triton_release)} is not a Triton release gpufleet knows (as of {known.as_of}); "
                f"use one of {', '.join(known.by_release)} (gpufleet/data/triton_releases.yaml)"
            )
            raise _rule_error([("triton_release", problem)])
        return self

    @model_validator(mode="after")
    def _public_access_is_explicit(self) -> Self:
        if self.public_access_cidrs and not self.endpoint_public_access:
            problem = (
                "listed, but endpoint_public_access is false so they would have no effect; "
                "set endpoint_public_access: true or remove public_access_cidrs"
            )
            raise _rule_error([("public_access_cidrs", problem)])
        if self.endpoint_public_access and not self.public_access_cidrs:
            # Opening the API to everyone must be a visible choice (EKS reads an empty list as 0.0.0.0/0).
            problem = (
                "empty while endpoint_public_access is true, which would open the Kubernetes API to the "
                "whole internet; list the networks allowed to reach it (e.g. [203.0.113.0/24]), "
                "or [0.0.0.0/0] to allow everyone"
            )
            raise _rule_error([("public_access_cidrs", problem)])
        return self

    @model_validator(mode="after")
    def _kubernetes_version_can_be_created(self) -> Self:
        versions = catalog.kubernetes_versions()
        supported = versions.by_cloud[self.cloud]
        if self.kubernetes_version not in supported:
            problem = (
                f"{self.cloud} cannot create a cluster with Kubernetes {self.kubernetes_version} "
                f"(as of {versions.as_of}); use one of {', '.join(supported)} "
                "(gpufleet/data/kubernetes_versions.yaml)"
            )
            raise _rule_error([("kubernetes_version", problem)])
        return self

    @model_validator(mode="after")
    def _pools_match_catalog(self) -> Self:
        # Pool rules that need the cloud live here, on the cluster: a GpuPool alone does not know it.
        problems: list[tuple[str, str]] = []
        first_index: dict[str, int] = {}
        matches: list[tuple[GpuPool, catalog.InstanceType]] = []
        for i, pool in enumerate(self.gpu_pools):
            where = f"gpu_pools[{i}]"
            if pool.name in first_index:
                problems.append(
                    (
                        f"{where}.name",
                        f"duplicate pool name {shown(pool.name)} (also gpu_pools[{first_index[pool.name]}]); "
                        "give each pool in a cluster its own name",
                    )
                )
            first_index.setdefault(pool.name, i)
            reserved = naming.reserved_pool_name_problem(self.cloud, pool.name)
            if reserved:
                problems.append((f"{where}.name", reserved))
            known = catalog.instance_type(self.cloud, pool.instance_type)
            if known is None:
                problems.append(
                    (f"{where}.instance_type", _unknown_instance_type(self.cloud, pool.instance_type))
                )
                continue
            has = f"{known.name} has {known.gpus} x {known.gpu}"
            if pool.gpu_type is not None and pool.gpu_type != known.gpu:
                problems.append((f"{where}.gpu_type", f"{has}; set gpu_type: {known.gpu} or remove it"))
            if pool.gpu_count is not None and pool.gpu_count != known.gpus:
                problems.append((f"{where}.gpu_count", f"{has}; set gpu_count: {known.gpus} or remove it"))
            problems += [(f"{where}.{field}", message) for field, message in self._zone_problems(pool, known)]
            matches.append((pool, known))
        problems += self._gpu_sharing_problems(matches)
        if problems:
            raise _rule_error(problems)
        for pool, known in matches:
            pool.gpu_type, pool.gpu_count = known.gpu, known.gpus
        return self

    def _gpu_sharing_problems(
        self, matches: list[tuple[GpuPool, catalog.InstanceType]]
    ) -> list[tuple[str, str]]:
        """MIG and time slicing: what the GPU operator's one cluster-wide setting can carry out.

        The operator takes one mig.strategy and one default device-plugin config per cluster (a per-node
        choice needs a node label gpufleet does not set), so the pools that share must agree. GKE shares
        GPUs through its own device plugin (node pool gpu_sharing_config), which the GKE stack does not set.
        """
        problems: list[tuple[str, str]] = []
        index = {id(pool): i for i, pool in enumerate(self.gpu_pools)}
        sharing = [(pool, known) for pool, known in matches if pool.mig_strategy != "none"]
        sliced = [pool for pool, _ in matches if pool.time_slicing_replicas > 1]
        if self.cloud == "gcp":
            for pool, _ in sharing:
                problems.append(
                    (
                        f"gpu_pools[{index[id(pool)]}].mig_strategy",
                        "GKE partitions GPUs itself (node pool gpu_partition_size), which gpufleet's GKE "
                        "stack does not set; remove mig_strategy",
                    )
                )
            for pool in sliced:
                problems.append(
                    (
                        f"gpu_pools[{index[id(pool)]}].time_slicing_replicas",
                        "GKE time-shares GPUs through its own device plugin (node pool gpu_sharing_config), "
                        "which gpufleet's GKE stack does not set; remove time_slicing_replicas",
                    )
                )
            return problems
        for pool, known in sharing:
            if not known.gpu.startswith(MIG_CAPABLE_GPU_PREFIXES):
                problems.append(
                    (
                        f"gpu_pools[{index[id(pool)]}].mig_strategy",
                        f"{known.name} has {known.gpu} GPUs, which have no MIG; "
                        "set mig_strategy: none or use an A100/H100/H200 instance type",
                    )
                )
        for pool, _ in sharing[1:]:
            first = sharing[0][0]
            if pool.mig_strategy != first.mig_strategy:
                problems.append(
                    (
                        f"gpu_pools[{index[id(pool)]}].mig_strategy",
                        f"{pool.mig_strategy} differs from pool {first.name}'s {first.mig_strategy}; "
                        "the GPU operator takes one MIG strategy per cluster, so use the same one",
                    )
                )
        first_pool = self.gpu_pools[0]
        for pool, _ in matches:
            if pool.time_slicing_replicas != first_pool.time_slicing_replicas:
                problems.append(
                    (
                        f"gpu_pools[{index[id(pool)]}].time_slicing_replicas",
                        f"{pool.time_slicing_replicas} differs from pool {first_pool.name}'s "
                        f"{first_pool.time_slicing_replicas}; the device plugin takes one time-slicing "
                        "setting per cluster, so give every pool of the cluster the same value",
                    )
                )
        return problems

    def _zone_problems(self, pool: GpuPool, known: catalog.InstanceType) -> list[tuple[str, str]]:
        """GKE pools are pinned to zones that offer their GPU; other clouds take no zones."""
        if self.cloud != "gcp":
            if pool.zones is not None:
                return [("zones", f"zones are only used by gcp pools, not on {self.cloud}; remove zones")]
            return []
        offered = catalog.gcp_accelerator_zones(known.accelerator or "")
        if offered is None:  # the catalog's own consistency check makes this unreachable
            return [("instance_type", f"no zone data for {known.name}; please report this as a gpufleet bug")]
        in_region = offered.by_region.get(self.region)
        if not in_region:
            regions = ", ".join(sorted(offered.by_region))
            return [
                (
                    "instance_type",
                    f"{known.name} ({known.accelerator}) is offered in no zone of {self.region} as far as "
                    f"gpufleet's catalog knows (as of {offered.as_of}); use a region that has it: {regions}",
                )
            ]
        problems: list[tuple[str, str]] = []
        zones = pool.zones or []
        use = f"use some of {', '.join(in_region)}"
        for i, zone in enumerate(zones):
            if zone in zones[:i]:
                problems.append((f"zones[{i}]", f"{zone} is listed twice; remove the repeat"))
            elif not zone.startswith(f"{self.region}-"):
                problems.append((f"zones[{i}]", f"{shown(zone)} is not a zone of {self.region}; {use}"))
            elif zone not in in_region:
                offers = f"does not offer {known.accelerator} (as of {offered.as_of})"
                problems.append((f"zones[{i}]", f"{zone} {offers}; {use}"))
        return problems


def _cluster_name(cloud: str) -> AfterValidator:
    return _checked(partial(naming.cluster_name_problem, cloud))


def _region(cloud: str) -> AfterValidator:
    return _checked(partial(naming.region_problem, cloud))


class LocalCluster(_Model):
    cloud: Literal["local"]
    name: Annotated[str, _cluster_name("local")]
    wave: Wave = 1
    replicas: int = Field(default=2, ge=1, le=8)


class AwsCluster(_CloudCluster):
    cloud: Literal["aws"]
    name: Annotated[str, _cluster_name("aws")]
    region: Annotated[str, _region("aws")]


class GcpCluster(_CloudCluster):
    cloud: Literal["gcp"]
    name: Annotated[str, _cluster_name("gcp")]
    region: Annotated[str, _region("gcp")]
    project: Annotated[str, _checked(naming.gcp_project_problem)]

    def gpu_pool_zones(self, pool: GpuPool) -> list[str]:
        """The zones a GPU pool's nodes use: the pool's own list, else every zone of the region that
        offers its GPU (validation guarantees there is at least one)."""
        if pool.zones:
            return list(pool.zones)
        known = catalog.instance_type("gcp", pool.instance_type)
        offered = catalog.gcp_accelerator_zones(known.accelerator or "") if known else None
        return list(offered.by_region.get(self.region, ())) if offered else []


class AzureCluster(_CloudCluster):
    cloud: Literal["azure"]
    name: Annotated[str, _cluster_name("azure")]
    region: Annotated[str, _region("azure")]
    resource_group: (
        Annotated[
            str,
            _checked(
                _pattern_problem(
                    r"^[-\w.()]{0,89}[-\w()]$",
                    "Azure resource group name",
                    "use up to 90 letters, digits, '_', '-', '.', '(' and ')', not ending with '.'",
                )
            ),
        ]
        | None
    ) = None


Cluster = Annotated[LocalCluster | AwsCluster | GcpCluster | AzureCluster, Field(discriminator="cloud")]
CloudCluster = AwsCluster | GcpCluster | AzureCluster


# ---------------------------------------------------------------------------------------------------
# Model store and models


def _prefix_problem(prefix: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*", prefix):
        return None
    return (
        f"{shown(prefix)} is not a valid key prefix; use a relative path such as models or team/models "
        "(letters, digits, '.', '_', '-', parts separated by single '/', no leading or trailing '/')"
    )


class ModelStore(_Model):
    # One name for every cloud in use (S3 bucket, GCS bucket, Blob container): S3 rules always apply
    # because the local fleet serves it over an S3 API; the other clouds' rules are checked on Fleet.
    bucket: Annotated[str, _checked(naming.s3_bucket_problem)]
    prefix: Annotated[str, _checked(_prefix_problem)] = "models"
    azure_storage_account: Annotated[str, _checked(naming.azure_storage_account_problem)] | None = None


def _check_dim(dim: int) -> int:
    if dim == -1 or dim >= 1:
        return dim
    raise ValueError(f"{dim} is not a valid dimension; use -1 for a variable size or a size of at least 1")


def _gpu_arch_problem(value: str) -> str | None:
    if re.fullmatch(r"sm\d{2,3}", value):
        return None
    return f"{shown(value)} is not a GPU architecture; use the sm form, such as sm80 (A100) or sm89 (L4)"


TensorName = Annotated[
    str,
    _checked(
        _pattern_problem(
            r"^[A-Za-z_][A-Za-z0-9_]*$",
            "tensor name",
            "use letters, digits and '_', starting with a letter or '_' (e.g. INPUT)",
        )
    ),
]
Dim = Annotated[int, AfterValidator(_check_dim)]


class TensorSpec(_Model):
    name: TensorName
    dtype: Literal["FP32", "FP16", "INT32", "INT64", "BOOL", "UINT8", "INT8", "BF16"]
    dims: Annotated[list[Dim], Field(min_length=1)]


class TritonSettings(_Model):
    max_batch_size: int = Field(default=8, ge=0, le=4096)
    dynamic_batching: bool = True
    max_queue_delay_us: int = Field(default=100, ge=0)
    instances: int = Field(default=1, ge=1, le=16)


class EngineTarget(_Model):
    gpu_arch: Annotated[str, _checked(_gpu_arch_problem)]
    precision: Literal["fp32", "fp16", "int8", "fp8"] = "fp16"
    # TensorRT's hardware compatibility level: none (the GPU it is built on), same_compute_capability,
    # or ampere_plus (built on an sm80+ GPU, runs on every sm80+ GPU).
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"

    @model_validator(mode="after")
    def _ampere_plus_needs_ampere(self) -> Self:
        if self.hardware_compatibility == "ampere_plus" and compatibility.arch_number(self.gpu_arch) < 80:
            problem = (
                f"ampere_plus plans are built on Ampere or newer GPUs (sm80+), not {self.gpu_arch}; "
                "use hardware_compatibility: none for it, or an sm80+ gpu_arch"
            )
            raise _rule_error([("hardware_compatibility", problem)])
        return self


ModelName = Annotated[
    str,
    _checked(
        _pattern_problem(
            r"^[a-z][a-z0-9_-]{0,62}$",
            "model name",
            "use up to 63 lowercase letters, digits, '_' and '-', starting with a letter",
        )
    ),
]


def _existing_file(path: str, base_dir: str, kind: str) -> str:
    """The absolute path of a model source file, or a ValueError saying where it was looked for."""
    absolute = os.path.abspath(os.path.join(base_dir, os.path.expanduser(path)))
    if os.path.isfile(absolute):
        return absolute
    problem = "is not a file" if os.path.exists(absolute) else "not found"
    raise ValueError(
        f"file {shown(path)} {problem}; put the {kind} at {shown(absolute, 200)} or fix the path "
        "(relative paths start at the fleet file's directory)"
    )


def _mlp_signature_problems(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> list[tuple[str, str]]:
    """builtin:mlp is y = tanh(x·W + b): one FP32 input [n] and one FP32 output [m], both fixed."""
    for group, tensors in (("inputs", inputs), ("outputs", outputs)):
        if len(tensors) != 1:
            return [
                (
                    group,
                    f"builtin:mlp has exactly one input and one output, not {len(tensors)} {group}; "
                    f"list one in {group}",
                )
            ]
    problems: list[tuple[str, str]] = []
    for group, tensor in (("inputs", inputs[0]), ("outputs", outputs[0])):
        if tensor.dtype != "FP32":
            problems.append(
                (f"{group}[0].dtype", f"builtin:mlp computes in FP32, not {tensor.dtype}; set dtype: FP32")
            )
        if len(tensor.dims) != 1 or tensor.dims[0] == -1:
            problems.append(
                (
                    f"{group}[0].dims",
                    f"builtin:mlp needs one fixed dimension, not {tensor.dims}; set e.g. dims: [16]",
                )
            )
    return problems


def _target_shown(target: EngineTarget) -> str:
    level = "" if target.hardware_compatibility == "none" else f" {target.hardware_compatibility}"
    return f"{target.gpu_arch} {target.precision}{level}"


class ModelSpec(_Model):
    name: ModelName
    # SOURCE_FORMS; after validation a file path is absolute.
    source: str
    inputs: Annotated[list[TensorSpec], Field(min_length=1)]
    outputs: Annotated[list[TensorSpec], Field(min_length=1)]
    triton: TritonSettings = TritonSettings()
    engine_targets: list[EngineTarget] = []

    @field_validator("source")
    @classmethod
    def _resolve_source(cls, source: str, info: ValidationInfo) -> str:
        if source.startswith(BUILTIN_PREFIX):
            builtin = source.removeprefix(BUILTIN_PREFIX)
            if builtin not in BUILTIN_MODELS:
                raise ValueError(f"unknown builtin model {shown(builtin)}; use {SOURCE_FORMS}")
            return source
        # load_fleet passes the fleet file's directory so relative sources do not depend on the cwd.
        context = info.context if isinstance(info.context, dict) else {}
        base_dir = str(context.get("base_dir") or os.getcwd())
        if source.startswith(TORCH_PREFIX):
            file, _, function = source.removeprefix(TORCH_PREFIX).rpartition(":")
            if not file or not function.isidentifier() or not file.lower().endswith(".py"):
                raise ValueError(
                    f"{shown(source)} is not torch:<file.py>:<function>; "
                    "e.g. torch:models/encoder.py:build, where build() returns a torch.nn.Module"
                )
            return f"{TORCH_PREFIX}{_existing_file(file, base_dir, 'Python file')}:{function}"
        if not source.lower().endswith(".onnx"):
            raise ValueError(f"{shown(source)} is not one of {SOURCE_FORMS}; use one of those")
        return _existing_file(source, base_dir, "ONNX file")

    @model_validator(mode="after")
    def _signature_is_usable(self) -> Self:
        problems: list[tuple[str, str]] = []
        first_seen: dict[str, str] = {}
        for group in ("inputs", "outputs"):
            for i, tensor in enumerate(getattr(self, group)):
                where = f"{group}[{i}].name"
                if tensor.name in first_seen:
                    problems.append(
                        (
                            where,
                            f"duplicate tensor name {shown(tensor.name)} (also {first_seen[tensor.name]}); "
                            "give every input and output its own name",
                        )
                    )
                first_seen.setdefault(tensor.name, where)
        if self.source == f"{BUILTIN_PREFIX}mlp":
            problems += _mlp_signature_problems(self.inputs, self.outputs)
        seen_targets: set[tuple[str, str]] = set()
        for i, target in enumerate(self.engine_targets):
            key = (target.gpu_arch, target.precision)
            if key in seen_targets:
                problems.append(
                    (f"engine_targets[{i}]", f"{key[0]} {key[1]} is listed twice; remove the repeat")
                )
            seen_targets.add(key)
        if problems:
            raise _rule_error(problems)
        return self


# ---------------------------------------------------------------------------------------------------
# Rollout, previews, disaster recovery


class SloSpec(_Model):
    max_error_rate: float = Field(default=0.01, gt=0, lt=1)
    p99_latency_ms: float = Field(default=200, gt=0)


class Rollout(_Model):
    steps: list[Annotated[int, Field(ge=1, le=100)]] = [1, 10, 50, 100]
    min_bake_seconds: int = Field(default=60, ge=1)
    slo: SloSpec = SloSpec()
    # The canary analysis is tuned so that a healthy release is rolled back at most this often.
    false_rollback_rate: float = Field(default=0.05, gt=0, lt=0.5)
    min_samples: int = Field(default=200, ge=10)
    no_data_deadline_seconds: int = Field(default=300, ge=1)

    @field_validator("steps")
    @classmethod
    def _steps_climb_to_100(cls, steps: list[int]) -> list[int]:
        example = "e.g. [1, 10, 50, 100]"
        if not steps:
            raise ValueError(f"no steps; list traffic percentages ending at 100, {example}")
        for i in range(1, len(steps)):
            if steps[i] <= steps[i - 1]:
                problem = (
                    f"steps must increase strictly ({steps[i]} follows {steps[i - 1]}); "
                    f"list rising percentages, {example}"
                )
                raise _rule_error([(f"[{i}]", problem)])
        if steps[-1] != 100:
            problem = f"the last step is {steps[-1]}, so the rollout never completes; end the list with 100"
            raise _rule_error([(f"[{len(steps) - 1}]", problem)])
        return steps


DEFAULT_OWNER_TAG = "gpufleet-owner"
# gpufleet's own tag keys (stacks/context.py): an owner tag must not overwrite one of them.
_GPUFLEET_TAG_PREFIX = "gpufleet-"
MAX_PREVIEW_GPU_NODES = 16


def _owner_tag_problem(tag: str) -> str | None:
    # The key goes on resources in all three clouds; GCP label keys are the strictest format (which also
    # keeps out AWS's reserved "aws:" prefix and the characters Azure refuses in tag names).
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", tag):
        return (
            f"{shown(tag)} is not usable as a tag key on every cloud; use up to 63 lowercase letters, "
            "digits, '_' and '-', starting with a letter (e.g. owner)"
        )
    if tag.startswith(_GPUFLEET_TAG_PREFIX) and tag != DEFAULT_OWNER_TAG:
        return (
            f"{shown(tag)} would collide with gpufleet's own gpufleet-* tags; use {DEFAULT_OWNER_TAG} or "
            "your organisation's key (e.g. owner)"
        )
    return None


def _preview_gpu_nodes_problem(nodes: int) -> int:
    if 0 <= nodes <= MAX_PREVIEW_GPU_NODES:
        return nodes
    raise ValueError(
        f"must be between 0 and {MAX_PREVIEW_GPU_NODES}, got {nodes}; use at most {MAX_PREVIEW_GPU_NODES} "
        "GPU nodes per preview pool, or 0 for previews without GPU pools"
    )


class Previews(_Model):
    ttl_hours: int = Field(default=72, ge=1, le=720)
    cost_cap_usd_per_day: float = Field(default=50, gt=0)
    # Preview GPU pools run on spot capacity when true (whatever the pool says).
    spot: bool = True
    # Per-pool cap on a preview's GPU nodes (max_nodes = min(pool max_nodes, this)); 0: no GPU pools.
    max_gpu_nodes: Annotated[int, AfterValidator(_preview_gpu_nodes_problem)] = 1
    # The tag KEY under which a preview's owner is recorded (organisations often mandate one, e.g. owner).
    owner_tag: Annotated[str, _checked(_owner_tag_problem)] = DEFAULT_OWNER_TAG


RestoreItem = Literal["models", "rollout_state", "monitoring"]


class DisasterRecovery(_Model):
    restore: list[RestoreItem] = ["models", "rollout_state", "monitoring"]
    rebuild_timeout_minutes: int = Field(default=5, ge=1, le=120)

    @field_validator("restore")
    @classmethod
    def _no_repeats(cls, restore: list[RestoreItem]) -> list[RestoreItem]:
        for i, item in enumerate(restore):
            if item in restore[:i]:
                raise _rule_error([(f"[{i}]", f"{item} is listed twice; remove the repeat")])
        return restore


# ---------------------------------------------------------------------------------------------------
# The fleet


class Fleet(_Model):
    name: Annotated[str, _checked(naming.fleet_name_problem)]
    clusters: Annotated[list[Cluster], Field(min_length=1)]
    model_store: ModelStore
    models: list[ModelSpec] = []
    rollout: Rollout = Rollout()
    previews: Previews = Previews()
    dr: DisasterRecovery = DisasterRecovery()

    def local_clusters(self) -> list[LocalCluster]:
        return [c for c in self.clusters if isinstance(c, LocalCluster)]

    def cloud_clusters(self) -> list[AwsCluster | GcpCluster | AzureCluster]:
        return [c for c in self.clusters if not isinstance(c, LocalCluster)]

    def clusters_by_wave(self) -> list[list[Cluster]]:
        """Clusters grouped by wave, waves ascending; file order within a wave."""
        return [
            [c for c in self.clusters if c.wave == wave] for wave in sorted({c.wave for c in self.clusters})
        ]

    def clouds(self) -> set[str]:
        """The cloud values of the clusters, "local" included."""
        return {c.cloud for c in self.clusters}

    def model(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        problems = [
            *self._unique("clusters", [c.name for c in self.clusters], "cluster"),
            *self._unique("models", [m.name for m in self.models], "model"),
            *self._wave_problems(),
            *self._store_problems(),
            *self._engine_coverage_problems(),
        ]
        if problems:
            raise _rule_error(problems)
        return self

    @staticmethod
    def _unique(field: str, names: list[str], what: str) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        first_index: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in first_index:
                problems.append(
                    (
                        f"{field}[{i}].name",
                        f"duplicate {what} name {shown(name)} (also {field}[{first_index[name]}]); "
                        f"give each {what} a unique name",
                    )
                )
            first_index.setdefault(name, i)
        return problems

    def _wave_problems(self) -> list[tuple[str, str]]:
        waves = sorted({c.wave for c in self.clusters})
        for expected, wave in enumerate(waves, start=1):
            if wave != expected:
                # Point at the first cluster of the wave after the gap: moving it down closes the gap.
                index = next(i for i, c in enumerate(self.clusters) if c.wave == wave)
                found = ", ".join(map(str, waves[:10])) + (", ..." if len(waves) > 10 else "")
                return [
                    (
                        f"clusters[{index}].wave",
                        f"waves must be contiguous from 1 (found {found}); use wave {expected}",
                    )
                ]
        return []

    def _engine_coverage_problems(self) -> list[tuple[str, str]]:
        """Every GPU pool of every cloud cluster has an engine target of each model that runs on it."""
        problems: list[tuple[str, str]] = []
        for i, model in enumerate(self.models):
            targets = ", ".join(_target_shown(t) for t in model.engine_targets) or "none"
            for cluster in self.cloud_clusters():
                uncovered = compatibility.uncovered_pools(model, cluster)
                if uncovered:
                    pool, fix = uncovered[0]
                    problem = f"none runs on cluster {cluster.name} {pool} (targets: {targets}); {fix}"
                    problems.append((f"models[{i}].engine_targets", problem))
                    break
        return problems

    def _store_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        store, clouds = self.model_store, self.clouds()
        if "gcp" in clouds:
            problem = naming.gcs_bucket_problem(store.bucket)
            if problem:
                problems.append(("model_store.bucket", f"the gcp clusters use it as a GCS bucket: {problem}"))
        if "azure" in clouds:
            problem = naming.azure_container_problem(store.bucket)
            if problem:
                problems.append(
                    ("model_store.bucket", f"the azure clusters use it as a Blob container: {problem}")
                )
            if store.azure_storage_account is None:
                problems.append(
                    (
                        "model_store.azure_storage_account",
                        "required because the fleet has azure clusters (their model store is a Blob "
                        "container in this account); add it: 3-24 lowercase letters and digits",
                    )
                )
        return problems


# ---------------------------------------------------------------------------------------------------
# Loading


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; every failure is a FleetSpecError of one-line messages."""
    file = Path(path)
    where = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise FleetSpecError(
            [
                f"{where}: file not found; pass the path of your fleet file "
                "(e.g. gpufleet validate path/to/fleet.yaml)"
            ]
        ) from None
    except IsADirectoryError:
        raise FleetSpecError(
            [f"{where}: is a directory, not a file; pass the fleet file inside it (e.g. {where}/fleet.yaml)"]
        ) from None
    except PermissionError:
        raise FleetSpecError(
            [f"{where}: permission denied; make the file readable (chmod u+r {where})"]
        ) from None
    except UnicodeDecodeError as exc:
        raise FleetSpecError(
            [f"{where}: not UTF-8 text (bad byte at offset {exc.start}); save the file as UTF-8"]
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: e.g. a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise FleetSpecError([f"{where}: cannot read the file ({reason}); check the path"]) from None
    return parse_fleet(text, source=where, base_dir=os.path.abspath(file.parent))


def parse_fleet(text: str, source: str = "fleet.yaml", *, base_dir: str | Path | None = None) -> Fleet:
    """Validate fleet YAML text. source names the text in document-level messages; base_dir is where
    relative model sources start (default: the current directory).

    Only the user's mistakes become FleetSpecError (exit 2); a bug in a validator propagates, and the
    CLI reports it as an internal error (exit 70), never as something the user must fix."""
    try:
        return _parse(text, source, base_dir)
    except FleetSpecError:
        raise
    except RecursionError:
        raise FleetSpecError(
            [f"{source}: the document is nested too deeply to read; a fleet file needs only a few levels"]
        ) from None


def _parse(text: str, source: str, base_dir: str | Path | None) -> Fleet:
    document = _load_yaml(text, source)
    if document is None:
        raise FleetSpecError([f"{source}: file is empty; declare at least name, clusters and model_store"])
    if not isinstance(document, dict):
        raise FleetSpecError(
            [
                f"{source}: the top level is {_kind(document)}, not a mapping; "
                "write the file as keys such as name:, clusters: and model_store:"
            ]
        )
    _check_size(document, source)
    try:
        return Fleet.model_validate(document, context={"base_dir": str(base_dir) if base_dir else None})
    except ValidationError as exc:
        raise FleetSpecError(_error_lines(exc, source)) from None


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        at = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise FleetSpecError([f"{at}: invalid YAML ({problem}); fix the syntax at that line"]) from None
    except yaml.reader.ReaderError as exc:
        # Raised for characters YAML forbids (NUL, most control characters); it carries an offset.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else shown(exc.character)
        raise FleetSpecError(
            [f"{source}:{line}:{column}: invalid YAML (unacceptable character {character}); remove it"]
        ) from None
    except yaml.YAMLError as exc:
        raise FleetSpecError([f"{source}: invalid YAML ({shown(str(exc), 120)}); fix the syntax"]) from None
    except (ValueError, OverflowError) as exc:
        # PyYAML builds dates and numbers with Python constructors: 2024-13-01 or a 5000-digit number.
        raise FleetSpecError(
            [
                f"{source}: invalid YAML value ({shown(str(exc), 120)}); "
                "check dates and very long numbers, or quote the value"
            ]
        ) from None


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {shown(value)}"
    return f"the value {shown(value)}"


def _check_size(document: Any, source: str) -> None:
    """Reject documents too deep or too large once aliases are expanded (YAML bombs, alias cycles)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    values = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if depth > MAX_DOCUMENT_DEPTH:
            raise FleetSpecError(
                [
                    f"{source}: the document nests more than {MAX_DOCUMENT_DEPTH} levels deep (or an "
                    "alias refers to itself); a fleet file needs only a few levels, so check indentation "
                    "and aliases"
                ]
            )
        if values > MAX_DOCUMENT_VALUES:
            raise FleetSpecError(
                [
                    f"{source}: the document holds more than {MAX_DOCUMENT_VALUES} values once YAML aliases "
                    "are expanded; write the fleet out without repeated aliases"
                ]
            )
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for pair in value.items() for child in pair)
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend((child, depth + 1) for child in value)


# ---------------------------------------------------------------------------------------------------
# ValidationError -> one line per problem

_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that describes the value."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_member(annotation: Any, tag: str) -> type[BaseModel] | None:
    """The member of a discriminated union of models whose Literal field holds tag."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return None
    for member in get_args(annotation):
        if not _is_model(member):
            continue
        for field in member.model_fields.values():
            if get_origin(field.annotation) is Literal and tag in get_args(field.annotation):
                return member  # type: ignore[no-any-return]
    return None


def _resolve(loc: tuple[int | str, ...]) -> tuple[list[int | str], Any]:
    """The location without pydantic's union tags, and the (unwrapped) type expected at its end."""
    path: list[int | str] = []
    current: Any = Fleet
    for part in loc:
        expected = _unwrap(current)
        if isinstance(part, int):
            path.append(part)
            current = get_args(expected)[0] if get_origin(expected) is list else None
            continue
        member = _union_member(expected, part)
        if member is not None:
            current = member  # the tag pydantic inserts after a union index: not a key in the file
            continue
        path.append(part)
        field = expected.model_fields.get(part) if _is_model(expected) else None
        current = field.annotation if field is not None else None
    return path, _unwrap(current)


def _format_path(path: Iterable[int | str]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,60}", part):
            text += f".{part}" if text else part
        else:
            text += f"[{shown(part)}]"
    return text


def _join(base: str, relative: str) -> str:
    if not base:
        return relative
    if not relative or relative.startswith("["):
        return base + relative
    return f"{base}.{relative}"


def _error_lines(exc: ValidationError, source: str) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        for line in _describe(error, source):
            if line not in lines:
                lines.append(line)
    if len(lines) > MAX_ERROR_LINES:
        hidden = len(lines) - MAX_ERROR_LINES
        lines = lines[:MAX_ERROR_LINES]
        lines.append(f"{source}: {hidden} more errors not shown; fix the ones above and check again")
    return lines


def _describe(error: ErrorDetails, source: str) -> list[str]:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    path, expected = _resolve(tuple(error["loc"]))
    where = _format_path(path)

    if kind == _RULE_ERROR:
        return [f"{_join(where, relative) or source}: {message}" for relative, message in ctx["problems"]]
    if kind in ("extra_forbidden", "invalid_key"):
        parent_path, parent = _resolve(tuple(error["loc"][:-1]))
        allowed = list(parent.model_fields) if _is_model(parent) else []
        key = error["loc"][-1] if kind == "extra_forbidden" else value
        if kind == "invalid_key":
            at = _format_path(parent_path) or source
            listing = f" (allowed here: {', '.join(allowed)})" if allowed else ""
            return [f"{at}: key {shown(key)} is not a field name; use a field name{listing}"]
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hints = ([f"did you mean {close[0]!r}?"] if close else []) + (
            [f"allowed here: {', '.join(allowed)}"] if allowed else []
        )
        listing = f" ({' '.join(hints)})" if hints else ""
        return [f"{where or source}: unknown key {shown(key)}; remove it or check the spelling{listing}"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # Reported at the list entry; the key at fault is the discriminator (cloud).
        where = _join(where, str(ctx.get("discriminator", "cloud")).strip("'"))
    return [f"{where or source}: {_problem_and_fix(kind, ctx, value, expected, error['msg'])}"]


def _problem_and_fix(kind: str, ctx: dict[str, Any], value: Any, expected: Any, msg: str) -> str:
    got = shown(value)
    if kind == "missing":
        return "required; add it"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        clouds = ", ".join(naming.CLOUDS)
        if kind == "union_tag_not_found":
            return f"required; add it (cloud must be one of {clouds})"
        tag = value.get("cloud") if isinstance(value, dict) else ctx.get("tag")
        return f"cloud must be one of {clouds}, got {shown(tag)}; use one of them"
    if kind == "value_error":
        return str(ctx.get("error", msg)).removeprefix("Value error, ")
    if kind == "literal_error":
        choices = [str(c) for c in get_args(expected)] if get_origin(expected) is Literal else []
        if not choices:
            return f"{msg} (got {got}); use one of the allowed values"
        same_letters = [c for c in choices if isinstance(value, str) and c.lower() == value.lower()]
        if same_letters:
            return f"must be one of {', '.join(choices)}, got {got}; use {same_letters[0]} (case matters)"
        return f"must be one of {', '.join(choices)}, got {got}; use one of those"
    if kind in _TYPE_NAMES:
        return _type_problem(kind, value, expected)
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        items = "item" if least == 1 else "items"
        return f"needs at least {least} {items}, got {ctx.get('actual_length', 0)}; add one"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} items; remove some"
    bounds = {
        "greater_than_equal": ("at least", "ge", "or more"),
        "less_than_equal": ("at most", "le", "or less"),
        "greater_than": ("greater than", "gt", None),
        "less_than": ("less than", "lt", None),
    }
    if kind in bounds:
        relation, key, direction = bounds[kind]
        limit = ctx.get(key)
        fix = f"use {limit} {direction}" if direction else f"use a value {relation} {limit}"
        return f"must be {relation} {limit}, got {got}; {fix}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}; use an ordinary number"
    if kind == "recursion_loop":
        return "the value refers to itself through a YAML alias; write it out without the cycle"
    return f"{msg} (got {got}); fix the value"


def _type_problem(kind: str, value: Any, expected: Any) -> str:
    wanted = _TYPE_NAMES[kind]
    if _is_model(expected):
        keys = ", ".join(expected.model_fields)
        return (
            f"expected a mapping with keys such as {keys}, got {shown(value)}; write it as key: value lines"
        )
    problem = f"expected {wanted}, got {shown(value)}"
    if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{problem}; put the value in quotes (YAML reads it as a number)"
    if kind in ("int_type", "float_type") and isinstance(value, str) and _looks_numeric(value):
        return f"{problem}; remove the quotes"
    if kind == "bool_type" and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return f"{problem}; write true or false without quotes"
    return f"{problem}; use {wanted} here"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

"""`engine.json`: one metadata schema for every engine, CPU package or TensorRT plan.

Everything after build (push, the manifest, compatibility checks, loading) reads this one shape;
a CPU package has `gpu: null`, `tensorrt: null`, `cuda: null` and no optimization profiles.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from gpufleet import __version__ as gpufleet_version
from gpufleet.errors import UserError
from gpufleet.spec import ModelSpec, TensorSpec
from pipelines.engines.fault import InjectedFault

ENGINE_FILE = "engine.json"
CPU_TARGET = "cpu"

Format = Literal["onnx", "tensorrt_plan"]
Runtime = Literal["onnxruntime-cpu", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8", "fp8"]
HardwareCompatibility = Literal["none", "ampere_plus", "same_compute_capability"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorInfo(_Strict):
    name: str
    dtype: str  # Triton's name without the TYPE_ prefix, as in fleet.yaml: FP32, INT64, ...
    shape: list[int]  # as served: the batch dimension (-1) first when the model batches


class ProfileShapes(_Strict):
    """One input's range in a TensorRT optimization profile."""

    min: list[int]
    opt: list[int]
    max: list[int]


class RuntimeVersions(_Strict):
    onnxruntime: str | None  # the onnxruntime that checked (CPU: serves) the ONNX file
    onnx_opset: int | None
    tensorrt: str | None
    cuda_runtime: str | None  # the CUDA runtime TensorRT built with, e.g. "12.8"
    cuda_driver: str | None  # the highest CUDA version the builder's driver supports


class GpuInfo(_Strict):
    name: str
    compute_capability: str  # "8.0", "9.0"


class ExportedFrom(_Strict):
    """Lineage of ONNX exported from a PyTorch module (source torch:<file.py>:<function>)."""

    file: str
    function: str
    file_sha256: str
    torch: str
    exporter: str


class SourceInfo(_Strict):
    uri: str  # builtin:mlp, the absolute path of the .onnx file, or torch:<file.py>:<function>
    sha256: str  # of the ONNX bytes the engine was built from
    size: int
    exported_from: ExportedFrom | None = None


class BuilderInfo(_Strict):
    host: str
    user: str
    gpufleet: str
    python: str
    platform: str


class EngineMetadata(_Strict):
    schema_version: Literal[1] = 1
    model: str
    target: str  # "cpu" or the GPU architecture it runs on, "sm80"
    format: Format
    runtime: Runtime
    model_file: str  # the file Triton serves: model.onnx (through model.py) or model.plan
    runtime_versions: RuntimeVersions
    gpu: GpuInfo | None  # the GPU it was built on; None for CPU
    hardware_compatibility: HardwareCompatibility | None  # TensorRT's level; None for CPU
    precision: Precision
    builder_flags: list[str]
    max_batch_size: int
    inputs: list[TensorInfo] = Field(min_length=1)
    outputs: list[TensorInfo] = Field(min_length=1)
    optimization_profiles: list[dict[str, ProfileShapes]]
    source: SourceInfo
    built_at: str  # UTC, ISO 8601
    builder: BuilderInfo
    # A CPU package built to fail or slow down (pipelines/engines/fault.py). Left out of every dump
    # when None (engine.json, the manifest's engine), so a package without a fault is what it was.
    injected_fault: InjectedFault | None = None

    @model_serializer(mode="wrap")
    def _without_absent_fault(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        dumped: dict[str, object] = handler(self)
        if self.injected_fault is None:
            dumped.pop("injected_fault", None)
        return dumped

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def read_metadata(path: Path) -> EngineMetadata:
    """engine.json of a package folder; a missing or foreign file is one line naming it and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path}: not found; {path.parent} is not an engine package "
            "(build one with `gpufleet engine build`)"
        ) from None
    try:
        return EngineMetadata.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise UserError(
            f"{path}: {where}: {first['msg']}; rebuild the package with `gpufleet engine build`"
        ) from None


# --- what a spec says the engine serves ---------------------------------------------------------


def served_shape(model: ModelSpec, dims: list[int]) -> list[int]:
    """Triton's shape of a tensor: the spec's dims behind a variable batch dimension when it batches."""
    return [-1, *dims] if model.triton.max_batch_size > 0 else list(dims)


def spec_signature(model: ModelSpec) -> tuple[list[TensorInfo], list[TensorInfo]]:
    def info(group: list[TensorSpec]) -> list[TensorInfo]:
        return [TensorInfo(name=t.name, dtype=t.dtype, shape=served_shape(model, t.dims)) for t in group]

    return info(model.inputs), info(model.outputs)


def signature_problem(model: ModelSpec, metadata: EngineMetadata) -> str | None:
    """Why a package does not serve what the spec declares (None when it does)."""
    inputs, outputs = spec_signature(model)
    if metadata.model != model.name:
        return f"it was built for model {metadata.model!r}, not {model.name!r}"
    if metadata.max_batch_size != model.triton.max_batch_size:
        return (
            f"it was built with max_batch_size {metadata.max_batch_size}, the fleet file says "
            f"{model.triton.max_batch_size}"
        )
    for group, wanted, built in (("inputs", inputs, metadata.inputs), ("outputs", outputs, metadata.outputs)):
        if wanted != built:
            return f"its {group} are {_shown(built)}, the fleet file declares {_shown(wanted)}"
    return None


def _shown(tensors: list[TensorInfo]) -> str:
    return ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in tensors)


# --- the ONNX file against the spec --------------------------------------------------------------

# onnx.TensorProto element types under the names fleet.yaml uses.
ONNX_DTYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 16: "BF16"}


def check_onnx_signature(model: ModelSpec, onnx_bytes: bytes) -> int | None:
    """Refuse an ONNX file whose inputs/outputs are not the spec's; return its default-domain opset."""
    import onnx

    try:
        proto = onnx.load_model_from_string(onnx_bytes)
    except Exception as exc:  # onnx raises DecodeError and others: any of them means not an ONNX file
        raise UserError(
            f"model {model.name}: source {model.source} is not a readable ONNX file ({type(exc).__name__}); "
            "point source at an .onnx file"
        ) from None
    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = {i.name: i for i in proto.graph.input if i.name not in initializers}
    graph_outputs = {o.name: o for o in proto.graph.output}
    for group, declared, found in (
        ("inputs", model.inputs, graph_inputs),
        ("outputs", model.outputs, graph_outputs),
    ):
        for i, tensor in enumerate(declared):
            where = f"model {model.name}: {group}[{i}]"
            value = found.get(tensor.name)
            if value is None:
                raise UserError(
                    f"{where}.name {tensor.name!r} is not among the ONNX file's {group} "
                    f"({', '.join(sorted(found)) or 'none'}); use one of those names"
                )
            elem = value.type.tensor_type.elem_type
            dtype = ONNX_DTYPES.get(elem, f"ONNX type {elem}")
            if dtype != tensor.dtype:
                raise UserError(
                    f"{where}.dtype is {tensor.dtype} but the ONNX file says {dtype}; set dtype: {dtype}"
                )
            onnx_dims = [
                d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
            ]
            want = served_shape(model, tensor.dims)
            if len(onnx_dims) != len(want) or any(
                o not in (-1, w) and w != -1 for o, w in zip(onnx_dims, want, strict=True)
            ):
                raise UserError(
                    f"{where}.dims {tensor.dims} do not fit the ONNX file's shape {onnx_dims} "
                    f"(served as {want}, batch dimension first when max_batch_size > 0); fix dims"
                )
        extra = sorted(set(found) - {t.name for t in declared})
        if group == "inputs" and extra:
            raise UserError(
                f"model {model.name}: the ONNX file has inputs the fleet file does not declare "
                f"({', '.join(extra)}); add them to inputs"
            )
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


# --- facts about the build -------------------------------------------------------------------------


def source_info(model: ModelSpec, onnx_bytes: bytes, exported_from: ExportedFrom | None = None) -> SourceInfo:
    return SourceInfo(
        uri=model.source,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        size=len(onnx_bytes),
        exported_from=exported_from,
    )


def builder_info() -> BuilderInfo:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return BuilderInfo(
        host=socket.gethostname(),
        user=user,
        gpufleet=gpufleet_version,
        python=platform.python_version(),
        platform=f"{sys.platform}-{platform.machine()}",
    )


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

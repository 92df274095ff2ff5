"""TensorRT plans: the ONNX file compiled on the builder's GPU for one engine target.

`tensorrt` is imported only inside `build_plan`, so nothing else pays for it (or needs it). What does
not need TensorRT (profile shapes, flags, the compatibility rule, GPU facts through the CUDA driver
library) is plain Python, testable anywhere.

- precision: fp32 (no flag), fp16 (FP16), int8 (INT8 + FP16), fp8 (FP8 + FP16). int8/fp8 are built
  from an explicitly quantized ONNX file (QuantizeLinear/DequantizeLinear nodes, as NVIDIA's Model
  Optimizer writes); TensorRT's calibrators (implicit quantization) are deprecated since TensorRT 10.
- one optimization profile: batch 1 (min), max_batch_size (opt and max), the spec's other dims fixed.
- timing cache: kept per GPU and TensorRT version under `<home>/engines/.timing-cache/`, reused by
  every later build there (a rebuild takes seconds instead of minutes on big models).
- hardware compatibility: `none` (the plan runs on the builder's compute capability),
  `same_compute_capability` (TensorRT 10: any GPU of that capability), `ampere_plus` (any sm80+ GPU).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import ModelSpec
from pipelines.engines.metadata import (
    GpuInfo,
    HardwareCompatibility,
    Precision,
    ProfileShapes,
    RuntimeVersions,
    TensorInfo,
    installed_version,
    spec_signature,
)

PLAN_FILE = "model.plan"
_ARCH = re.compile(r"sm(\d+)(\d)")
_PRECISION_FLAGS: dict[str, list[str]] = {
    "fp32": [],
    "fp16": ["FP16"],
    "int8": ["INT8", "FP16"],  # FP16 beside INT8: layers without INT8 kernels fall back to FP16, not FP32
    "fp8": ["FP8", "FP16"],
}
# TensorRT's DataType names under the names fleet.yaml uses.
_TRT_DTYPES = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "UINT8": "UINT8",
}
# CUdevice_attribute values (cuda.h): CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR.
_CC_MAJOR, _CC_MINOR = 75, 76


@dataclass(frozen=True)
class GpuBuildOptions:
    target: str  # sm80
    precision: Precision
    hardware_compatibility: HardwareCompatibility = "none"
    workspace_bytes: int = 4 << 30
    timing_cache: Path | None = None  # a folder; None: no cache


@dataclass(frozen=True)
class PlanBuild:
    plan: bytes
    gpu: GpuInfo
    runtime_versions: RuntimeVersions
    builder_flags: list[str]
    profiles: list[dict[str, ProfileShapes]]


def compute_capability(arch: str) -> str:
    """`sm80` -> `8.0`, `sm89` -> `8.9`, `sm100` -> `10.0`."""
    found = _ARCH.fullmatch(arch)
    if not found:
        raise UserError(f"--target {arch!r}: use cpu or a GPU architecture such as sm80")
    return f"{int(found.group(1))}.{found.group(2)}"


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, minor = cc.split(".")
    return int(major), int(minor)


def builder_flag_names(precision: Precision) -> list[str]:
    return list(_PRECISION_FLAGS[precision])


def optimization_profile(model: ModelSpec) -> dict[str, ProfileShapes]:
    """One profile over the batch sizes Triton may send: 1 .. max_batch_size, the rest fixed."""
    profile: dict[str, ProfileShapes] = {}
    for i, tensor in enumerate(model.inputs):
        if -1 in tensor.dims:
            raise UserError(
                f"model {model.name}: inputs[{i}].dims {tensor.dims} has a variable dimension; a TensorRT "
                "profile needs its range, which fleet.yaml cannot state yet: use fixed dims for GPU targets"
            )
        if model.triton.max_batch_size > 0:
            top = model.triton.max_batch_size
            profile[tensor.name] = ProfileShapes(
                min=[1, *tensor.dims], opt=[top, *tensor.dims], max=[top, *tensor.dims]
            )
        else:
            profile[tensor.name] = ProfileShapes(
                min=list(tensor.dims), opt=list(tensor.dims), max=list(tensor.dims)
            )
    return profile


def quantization_problem(precision: Precision, onnx_bytes: bytes) -> str | None:
    """int8/fp8 need an explicitly quantized graph; say so before TensorRT runs."""
    if precision not in ("int8", "fp8"):
        return None
    import onnx

    ops = {node.op_type for node in onnx.load_model_from_string(onnx_bytes).graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return None
    return (
        f"precision {precision} needs an explicitly quantized ONNX file (QuantizeLinear/DequantizeLinear "
        "nodes, e.g. from NVIDIA Model Optimizer) and this one has none; quantize it or use fp16"
    )


def compatibility_problem(target: str, builder: GpuInfo, level: HardwareCompatibility) -> str | None:
    """Why a plan built on `builder` with `level` would not run on `target` GPUs (None when it would)."""
    want, have = _cc_tuple(compute_capability(target)), _cc_tuple(builder.compute_capability)
    if level == "ampere_plus":
        if want < (8, 0) or have < (8, 0):
            return (
                f"ampere_plus plans need an Ampere or newer GPU on both sides (sm80+); target {target}, "
                f"builder {builder.name} ({builder.compute_capability})"
            )
        return None
    if want != have:
        return (
            f"this machine's {builder.name} is compute capability {builder.compute_capability}, "
            f"target {target} is {compute_capability(target)}; build on a {target} GPU, "
            "or pass --hardware-compatibility ampere_plus "
            "(both sm80+)"
        )
    return None


# --- the GPU and CUDA, through the driver library (no CUDA toolkit or Python binding needed) ---------


def _libcuda() -> Any | None:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def detect_gpu() -> tuple[GpuInfo, str] | None:
    """The first GPU and the CUDA version its driver supports; None without a driver or a GPU."""
    cuda = _libcuda()
    if cuda is None or cuda.cuInit(0) != 0:
        return None
    count, version, device = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    cuda.cuDriverGetVersion(ctypes.byref(version))
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, len(name), device)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device)
    gpu = GpuInfo(name=name.value.decode(errors="replace"), compute_capability=f"{major.value}.{minor.value}")
    return gpu, _cuda_version(version.value)


def _cuda_version(encoded: int) -> str:
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"  # 12040 -> 12.4


def cuda_runtime_version() -> str | None:
    """The CUDA runtime next to TensorRT (pip's nvidia-cuda-runtime or the system's libcudart)."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if cudart.cudaRuntimeGetVersion(ctypes.byref(version)) == 0:
            return _cuda_version(version.value)
    distribution = installed_version("nvidia-cuda-runtime-cu12")
    return ".".join(distribution.split(".")[:2]) if distribution else None


def require_gpu_builder(target: str) -> GpuInfo:
    """The builder's GPU; one line naming what is missing when this machine cannot build `target`."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the tensorrt package (pip install tensorrt)")
    found = detect_gpu()
    if found is None:
        missing.append("an NVIDIA GPU with its driver (no usable libcuda.so.1)")
    if missing or found is None:
        raise UserError(
            f"--target {target}: building a TensorRT engine needs an NVIDIA GPU and the tensorrt package; "
            f"this machine lacks {' and '.join(missing)}. Build --target cpu here, "
            f"or build {target} on a GPU machine"
        )
    return found[0]


# --- the build itself ------------------------------------------------------------------------------


def build_plan(model: ModelSpec, onnx_bytes: bytes, options: GpuBuildOptions) -> PlanBuild:
    """Compile the ONNX file into a TensorRT plan for `options.target` on this machine's GPU."""
    gpu = require_gpu_builder(options.target)
    problem = compatibility_problem(
        options.target, gpu, options.hardware_compatibility
    ) or quantization_problem(options.precision, onnx_bytes)
    if problem:
        raise UserError(f"model {model.name} --target {options.target}: {problem}")
    found = detect_gpu()
    cuda_driver = found[1] if found else None
    trt: Any = importlib.import_module("tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it.
    explicit_batch = (
        0
        if int(trt.__version__.split(".")[0]) >= 10
        else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"model {model.name}: TensorRT cannot parse the ONNX file: {errors[:300]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    flags = builder_flag_names(options.precision)
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if options.hardware_compatibility != "none":
        config.hardware_compatibility_level = getattr(
            trt.HardwareCompatibilityLevel, options.hardware_compatibility.upper()
        )
    profiles = [optimization_profile(model)]
    profile = builder.create_optimization_profile()
    for name, shapes in profiles[0].items():
        profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)

    cache_file = _timing_cache_file(options.timing_cache, gpu, str(trt.__version__))
    cache = config.create_timing_cache(
        cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    )
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FleetRuntimeError(
            f"model {model.name}: TensorRT could not build a {options.precision} plan for {options.target} "
            "(its log lines above say why)"
        )
    plan = bytes(serialized)
    if cache_file:
        _write_atomically(cache_file, bytes(config.get_timing_cache().serialize()))
    _check_plan_signature(trt, logger, model, plan)
    versions = RuntimeVersions(
        onnxruntime=None,
        onnx_opset=None,
        tensorrt=str(trt.__version__),
        cuda_runtime=cuda_runtime_version(),
        cuda_driver=cuda_driver,
    )
    return PlanBuild(plan=plan, gpu=gpu, runtime_versions=versions, builder_flags=flags, profiles=profiles)


def _timing_cache_file(folder: Path | None, gpu: GpuInfo, trt_version: str) -> Path | None:
    if folder is None:
        return None
    # A timing cache is only valid for one GPU model and TensorRT version.
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu.name}-cc{gpu.compute_capability}-trt{trt_version}")
    return folder / f"{slug}.cache"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_bytes(data)
    staging.replace(path)


def _check_plan_signature(trt: Any, logger: Any, model: ModelSpec, plan: bytes) -> None:
    """The plan deserializes and its I/O tensors are the spec's (names, dtypes, shapes)."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise FleetRuntimeError(f"model {model.name}: the plan TensorRT just built does not deserialize")
    found: list[TensorInfo] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = str(engine.get_tensor_dtype(name)).rsplit(".", 1)[-1]
        found.append(
            TensorInfo(
                name=name, dtype=_TRT_DTYPES.get(dtype, dtype), shape=list(engine.get_tensor_shape(name))
            )
        )
    inputs, outputs = spec_signature(model)
    wanted = {t.name: t for t in [*inputs, *outputs]}
    for tensor in found:
        spec = wanted.get(tensor.name)
        if spec is None or spec.dtype != tensor.dtype or len(spec.shape) != len(tensor.shape):
            raise FleetRuntimeError(
                f"model {model.name}: the plan's tensor {tensor.name} {tensor.dtype} {tensor.shape} is not "
                f"in the fleet file's signature "
                f"({', '.join(f'{t.name} {t.dtype} {t.shape}' for t in wanted.values())})"
            )

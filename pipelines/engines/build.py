"""`engine build`: a model's serving package for one target, written whole or not at all.

Target `cpu`: the ONNX file (checked against the spec's signature and run once in onnxruntime at
batch 1 and max_batch_size) plus the python-backend runner, and `fault.json` when the build injects a
fault (fault.py). Target `smXY`: a TensorRT plan
(tensorrt_build.py), only on a machine with an NVIDIA GPU and tensorrt. Both write `engine.json`.

The package is written into a hidden staging folder beside `--out` and swapped in when complete, so
an interrupted build leaves the previous package (or nothing), never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpufleet.errors import UserError, one_line
from gpufleet.loadgen import NUMPY_DTYPES  # the spec dtype -> NumPy map the load generator uses
from gpufleet.modelrepo import ONNX_FILE, cpu_package
from gpufleet.spec import ModelSpec
from pipelines.engines.export import onnx_source
from pipelines.engines.fault import FAULT_FILE, InjectedFault
from pipelines.engines.metadata import (
    CPU_TARGET,
    ENGINE_FILE,
    EngineMetadata,
    HardwareCompatibility,
    Precision,
    RuntimeVersions,
    builder_info,
    check_onnx_signature,
    installed_version,
    source_info,
    spec_signature,
    utc_now,
)
from pipelines.engines.reference import REFERENCE_FILE, make_reference

ENGINES_FOLDER = "engines"  # under the gpufleet home (.gpufleet)


@dataclass(frozen=True)
class BuiltPackage:
    folder: Path
    metadata: EngineMetadata


def default_package_dir(home: Path, model: str, target: str) -> Path:
    return home / ENGINES_FOLDER / model / target


def normalized_target(model: ModelSpec, target: str) -> tuple[str, Precision]:
    """`cpu` or one of the model's engine_targets (by gpu_arch), with the precision to build."""
    target = target.strip().lower()
    if target == CPU_TARGET:
        return target, _cpu_precision(model)
    for engine_target in model.engine_targets:
        if engine_target.gpu_arch == target:
            return target, engine_target.precision
    if not re.fullmatch(r"sm\d{2,3}", target):
        raise UserError(
            f"--target {target!r}: use cpu or a GPU architecture such as sm80 (A100) or sm89 (L4)"
        )
    listed = ", ".join(t.gpu_arch for t in model.engine_targets) or "none"
    raise UserError(
        f"--target {target!r}: model {model.name} has no such engine target (engine_targets: {listed}); "
        f"use cpu, one of those, or add {{gpu_arch: {target}, precision: fp16}} to its engine_targets"
    )


def _cpu_precision(model: ModelSpec) -> Precision:
    # A CPU package runs the ONNX graph as it is: its precision is that of its inputs.
    return {"FP16": "fp16", "INT8": "int8"}.get(model.inputs[0].dtype, "fp32")  # type: ignore[return-value]


def build_engine(
    model: ModelSpec,
    *,
    target: str,
    out: Path,
    timing_cache: Path | None = None,
    hardware_compatibility: HardwareCompatibility = "none",
    fault: InjectedFault | None = None,
) -> BuiltPackage:
    target, precision = normalized_target(model, target)
    if fault is not None and target != CPU_TARGET:
        raise UserError(f"--target {target}: faults are injected into CPU packages only; use --target cpu")
    _check_out(out)
    if target == CPU_TARGET:
        files, metadata = _cpu_files(model, precision)
        if fault is not None:
            files[FAULT_FILE] = fault.to_file_bytes()
            metadata = metadata.model_copy(update={"injected_fault": fault})
    else:
        files, metadata = _gpu_files(model, target, precision, timing_cache, hardware_compatibility)
    files[ENGINE_FILE] = metadata.to_json().encode()
    _write_package(out, files)
    return BuiltPackage(folder=out, metadata=metadata)


def _cpu_files(model: ModelSpec, precision: Precision) -> tuple[dict[str, bytes], EngineMetadata]:
    source = onnx_source(model)
    onnx_bytes = source.onnx
    files = cpu_package(onnx_bytes)
    opset = check_onnx_signature(model, onnx_bytes)
    _run_once_in_onnxruntime(model, onnx_bytes)
    files[REFERENCE_FILE] = make_reference(model, onnx_bytes).to_bytes()
    inputs, outputs = spec_signature(model)
    metadata = EngineMetadata(
        model=model.name,
        target=CPU_TARGET,
        format="onnx",
        runtime="onnxruntime-cpu",
        model_file=ONNX_FILE,
        runtime_versions=RuntimeVersions(
            onnxruntime=installed_version("onnxruntime"),
            onnx_opset=opset,
            tensorrt=None,
            cuda_runtime=None,
            cuda_driver=None,
        ),
        gpu=None,
        hardware_compatibility=None,
        precision=precision,
        builder_flags=[],
        max_batch_size=model.triton.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        optimization_profiles=[],
        source=source_info(model, onnx_bytes, source.exported_from),
        built_at=utc_now(),
        builder=builder_info(),
    )
    return files, metadata


def _gpu_files(
    model: ModelSpec,
    target: str,
    precision: Precision,
    timing_cache: Path | None,
    hardware_compatibility: HardwareCompatibility,
) -> tuple[dict[str, bytes], EngineMetadata]:
    from pipelines.engines import tensorrt_build

    tensorrt_build.compute_capability(target)  # a malformed target is refused before anything else
    tensorrt_build.require_gpu_builder(target)
    source = onnx_source(model)
    onnx_bytes = source.onnx
    opset = check_onnx_signature(model, onnx_bytes)
    built = tensorrt_build.build_plan(
        model,
        onnx_bytes,
        tensorrt_build.GpuBuildOptions(
            target=target,
            precision=precision,
            hardware_compatibility=hardware_compatibility,
            timing_cache=timing_cache,
        ),
    )
    inputs, outputs = spec_signature(model)
    metadata = EngineMetadata(
        model=model.name,
        target=target,
        format="tensorrt_plan",
        runtime="tensorrt",
        model_file=tensorrt_build.PLAN_FILE,
        runtime_versions=built.runtime_versions.model_copy(update={"onnx_opset": opset}),
        gpu=built.gpu,
        hardware_compatibility=hardware_compatibility,
        precision=precision,
        builder_flags=built.builder_flags,
        max_batch_size=model.triton.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        optimization_profiles=built.profiles,
        source=source_info(model, onnx_bytes, source.exported_from),
        built_at=utc_now(),
        builder=builder_info(),
    )
    reference = make_reference(model, onnx_bytes).to_bytes()
    files = {tensorrt_build.PLAN_FILE: built.plan, REFERENCE_FILE: reference}
    return files, metadata


def _run_once_in_onnxruntime(model: ModelSpec, onnx_bytes: bytes) -> None:
    """The package is only worth pushing if onnxruntime runs it and its outputs have the declared dims."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types are not public API
        raise UserError(
            f"model {model.name}: onnxruntime cannot load the ONNX file: {one_line(exc)}"
        ) from None
    batches = sorted({1, model.triton.max_batch_size}) if model.triton.max_batch_size > 0 else [0]
    for batch in batches:
        lead = [batch] if batch else []
        feed = {
            t.name: np.zeros(
                [*lead, *(1 if d == -1 else d for d in t.dims)], dtype=NUMPY_DTYPES.get(t.dtype, np.float32)
            )
            for t in model.inputs
        }
        try:
            results = session.run([t.name for t in model.outputs], feed)
        except Exception as exc:
            raise UserError(
                f"model {model.name}: onnxruntime cannot run the ONNX file at batch {batch or 'none'}: "
                f"{one_line(exc)}"
            ) from None
        for i, (tensor, result) in enumerate(zip(model.outputs, results, strict=True)):
            want = [*lead, *tensor.dims]
            if len(result.shape) != len(want) or any(
                w not in (-1, r) for w, r in zip(want, result.shape, strict=True)
            ):
                raise UserError(
                    f"model {model.name}: outputs[{i}] {tensor.name} comes out as {list(result.shape)} at "
                    f"batch {batch or 'none'}, the fleet file declares dims {tensor.dims}; "
                    f"fix outputs[{i}].dims"
                )


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is neither empty nor an earlier package (someone's files)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; pass a folder for the engine package")
    if out.is_dir() and any(out.iterdir()) and not (out / ENGINE_FILE).is_file():
        raise UserError(
            f"--out {out}: holds files that are not an engine package (no {ENGINE_FILE}); "
            "pass an empty or new folder"
        )


def _write_package(out: Path, files: dict[str, bytes]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = out.parent / f".{out.name}.building-{tag}"
    old = out.parent / f".{out.name}.old-{tag}"
    try:
        staging.mkdir()
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if out.exists():
            out.rename(old)
        try:
            staging.rename(out)
        except BaseException:
            if old.exists():
                old.rename(out)  # the earlier package stays, whole
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)

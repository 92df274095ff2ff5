"""A model's ONNX bytes, whatever its source: builtin, an .onnx file, or a PyTorch module exported here.

`torch:<file.py>:<function>`: the file is imported, `function()` must return a `torch.nn.Module`, and
`torch.onnx.export` (the torch.export-based exporter, which needs onnxscript) writes ONNX with the
fleet file's tensor names. The batch dimension (when `triton.max_batch_size` > 0) and every dim
declared -1 are exported as dynamic, so the TensorRT optimization profiles and onnxruntime both see
the shapes the spec declares. PyTorch is an optional extra (`pip install -e '.[torch]'`, or
`make setup-torch`): without it a torch source is refused with that instruction, nothing is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.builtin_models import model_source_bytes
from gpufleet.errors import UserError, one_line
from gpufleet.loadgen import NUMPY_DTYPES
from gpufleet.spec import TORCH_PREFIX, ModelSpec
from pipelines.engines.metadata import ExportedFrom, installed_version

# The torch.export-based exporter implements opset 18 and up; Triton's onnxruntime-based CPU path and
# TensorRT 10 both read it.
TORCH_EXPORT_OPSET = 18
INSTALL_HINT = "install the optional extra: .venv/bin/pip install -e '.[torch]' (or make setup-torch)"


@dataclass(frozen=True)
class OnnxSource:
    onnx: bytes
    exported_from: ExportedFrom | None  # None: the bytes were read or generated, not exported


def is_torch_source(model: ModelSpec) -> bool:
    return model.source.startswith(TORCH_PREFIX)


def onnx_source(model: ModelSpec) -> OnnxSource:
    if not is_torch_source(model):
        return OnnxSource(onnx=model_source_bytes(model), exported_from=None)
    return export_torch_module(model)


def export_torch_module(model: ModelSpec) -> OnnxSource:
    file, _, function = model.source.removeprefix(TORCH_PREFIX).rpartition(":")
    where = f"model {model.name}: source {model.source}"
    try:
        import torch
    except ImportError:
        raise UserError(f"{where} needs PyTorch, which is not installed; {INSTALL_HINT}") from None
    if importlib.util.find_spec("onnxscript") is None:
        raise UserError(
            f"{where}: torch.onnx.export needs onnxscript, which is not installed; {INSTALL_HINT}"
        )
    module = _module_from(file, function, where)
    module.eval()
    example = tuple(_example_input(torch, model, i) for i in range(len(model.inputs)))
    try:
        onnx_bytes = _export(torch, module, example, model)
    except Exception as exc:  # the exporter raises many kinds; the user needs the first line of any
        raise UserError(f"{where}: torch.onnx.export failed: {one_line(exc)}") from None
    return OnnxSource(
        onnx=onnx_bytes,
        exported_from=ExportedFrom(
            file=file,
            function=function,
            file_sha256=hashlib.sha256(Path(file).read_bytes()).hexdigest(),
            torch=str(torch.__version__),
            exporter=f"torch.onnx.export (torch.export, onnxscript {installed_version('onnxscript')}), "
            f"opset {TORCH_EXPORT_OPSET}",
        ),
    )


def _module_from(file: str, function: str, where: str) -> Any:
    import torch

    module_name = f"gpufleet_torch_source_{hashlib.sha256(file.encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise UserError(f"{where}: {file} cannot be imported as Python; point source at a .py file")
    code = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = code  # dataclasses and pickling inside the user's file look it up
    try:
        spec.loader.exec_module(code)
    except Exception as exc:  # an error in the user's file: theirs to fix, shown in one line
        raise UserError(f"{where}: importing {file} failed: {type(exc).__name__}: {one_line(exc)}") from None
    factory = getattr(code, function, None)
    if not callable(factory):
        raise UserError(
            f"{where}: {file} defines no function {function}; define it to return a torch.nn.Module"
        )
    try:
        module = factory()
    except Exception as exc:
        raise UserError(f"{where}: {function}() failed: {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise UserError(
            f"{where}: {function}() returned {type(module).__name__}, not a torch.nn.Module; return one"
        )
    return module


def _example_input(torch: Any, model: ModelSpec, index: int) -> Any:
    import numpy as np

    tensor = model.inputs[index]
    lead = [2] if model.triton.max_batch_size > 0 else []  # 2, not 1: torch.export specializes size-1 dims
    shape = [*lead, *(2 if d == -1 else d for d in tensor.dims)]
    return torch.from_numpy(np.zeros(shape, dtype=NUMPY_DTYPES.get(tensor.dtype, np.float32)))


def _export(torch: Any, module: Any, example: tuple[Any, ...], model: ModelSpec) -> bytes:
    batched = model.triton.max_batch_size > 0
    # One Dim object for every input's batch axis: they must be the same size.
    batch = torch.export.Dim("batch", min=1, max=max(2, model.triton.max_batch_size))
    dynamic_shapes = []
    for tensor in model.inputs:
        axes: dict[int, Any] = {}
        if batched:
            axes[0] = batch
        for i, dim in enumerate(tensor.dims):
            if dim == -1:
                axes[i + int(batched)] = torch.export.Dim.AUTO
        dynamic_shapes.append(axes)
    # The exporter narrates each stage on stdout and logs warnings about optional packages
    # (torchvision) through torch's loggers; the CLI shows its own progress, and failures raise.
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                example,
                input_names=[t.name for t in model.inputs],
                output_names=[t.name for t in model.outputs],
                dynamic_shapes=tuple(dynamic_shapes),
                opset_version=TORCH_EXPORT_OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        torch_onnx_log.setLevel(level)
    proto = program.model_proto
    return bytes(proto.SerializeToString())

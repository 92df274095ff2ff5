"""Reference data shipped in every package: inputs, and the outputs the source model gives for them.

`reference.npz` holds seeded inputs shaped by the spec (a few rows of batch when the model batches)
and the outputs onnxruntime (CPU, the ONNX source as exported) computes for them. The rollout gate
(pipelines/rollout/gate.py) sends those inputs to the candidate version on every replica and
compares what comes back within the package precision's tolerance: a plan whose FP16 numbers drift,
a package built from the wrong source, or a runtime that loads but computes garbage, fails there
before any traffic moves.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gpufleet.loadgen import NUMPY_DTYPES
from gpufleet.spec import ModelSpec
from pipelines.engines.metadata import Precision

REFERENCE_FILE = "reference.npz"
REFERENCE_ROWS = 4
_INPUT, _OUTPUT = "input:", "output:"

# How far a served output may be from the FP32 reference: relative and absolute, per precision.
TOLERANCE: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-5),
    "tf32": (1e-2, 1e-3),
    "fp16": (2e-2, 2e-3),
    "bf16": (5e-2, 1e-2),
    "fp8": (1e-1, 5e-2),
    "int8": (1e-1, 5e-2),
}


@dataclass(frozen=True)
class Reference:
    inputs: dict[str, npt.NDArray[np.generic]]
    outputs: dict[str, npt.NDArray[np.generic]]

    def to_bytes(self) -> bytes:
        """An .npz file (np.load reads it) with fixed timestamps: the same data gives the same bytes,
        so a rebuild of an unchanged model re-pushes nothing (np.savez stamps the current time)."""
        arrays = {f"{_INPUT}{k}": v for k, v in self.inputs.items()}
        arrays |= {f"{_OUTPUT}{k}": v for k, v in self.outputs.items()}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key in sorted(arrays):
                array_bytes = io.BytesIO()
                np.save(array_bytes, arrays[key], allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, array_bytes.getvalue())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reference:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            inputs = {k.removeprefix(_INPUT): arrays[k] for k in arrays.files if k.startswith(_INPUT)}
            outputs = {k.removeprefix(_OUTPUT): arrays[k] for k in arrays.files if k.startswith(_OUTPUT)}
        return cls(inputs=inputs, outputs=outputs)


def reference_inputs(model: ModelSpec, seed: int = 11) -> dict[str, npt.NDArray[np.generic]]:
    rng = np.random.default_rng(seed)
    rows = [min(REFERENCE_ROWS, model.triton.max_batch_size)] if model.triton.max_batch_size > 0 else []
    inputs: dict[str, npt.NDArray[np.generic]] = {}
    for tensor in model.inputs:
        shape = [*rows, *(3 if d == -1 else d for d in tensor.dims)]
        dtype = NUMPY_DTYPES.get(tensor.dtype, np.float32)
        if np.issubdtype(dtype, np.floating):
            inputs[tensor.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            inputs[tensor.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            inputs[tensor.name] = rng.integers(0, 8, shape).astype(dtype)  # small: valid as token ids too
    return inputs


def make_reference(model: ModelSpec, onnx_bytes: bytes) -> Reference:
    """The source model's outputs for the reference inputs, computed with onnxruntime on CPU."""
    import onnxruntime as ort

    inputs = reference_inputs(model)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [t.name for t in model.outputs]
    results = session.run(names, inputs)
    return Reference(inputs=inputs, outputs=dict(zip(names, (np.asarray(r) for r in results), strict=True)))


def mismatch(
    reference: Reference, got: dict[str, npt.NDArray[np.generic]], precision: Precision | str
) -> str | None:
    """None when `got` matches the reference outputs within the precision's tolerance; else why not."""
    rtol, atol = TOLERANCE.get(precision, TOLERANCE["fp16"])
    for name, want in reference.outputs.items():
        value = got.get(name)
        if value is None:
            return f"output {name} missing"
        if value.shape != want.shape:
            return f"output {name} has shape {list(value.shape)}, the reference {list(want.shape)}"
        if np.issubdtype(want.dtype, np.floating):
            wrong = ~np.isclose(value.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
            if wrong.any():
                worst = float(np.max(np.abs(value.astype(np.float64) - want.astype(np.float64))))
                return (
                    f"output {name}: {int(wrong.sum())} of {wrong.size} values off the reference "
                    f"(max abs diff {worst:.3g}; tolerance rtol {rtol:g}, atol {atol:g} for {precision})"
                )
        elif not np.array_equal(value, want):
            return f"output {name}: differs from the reference ({int((value != want).sum())} values)"
    return None

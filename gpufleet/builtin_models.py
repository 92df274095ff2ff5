"""Models gpufleet can make itself (no downloads): `builtin:mlp`, a small dense layer in ONNX."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gpufleet.errors import UserError
from gpufleet.spec import ModelSpec

BUILTIN_PREFIX = "builtin:"


def build_mlp(model: ModelSpec, seed: int = 7) -> bytes:
    """ONNX bytes for y = tanh(x·W + b): one FP32 input [batch, n], one FP32 output [batch, m]."""
    # The spec validated the signature (one fixed FP32 input and output: spec._mlp_signature_problems).
    x, y = model.inputs[0], model.outputs[0]
    n, m = x.dims[0], y.dims[0]
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array((rng.standard_normal((n, m)) / np.sqrt(n)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(m).astype(np.float32) * 0.1, "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [x.name, "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["XWB"]),
            helper.make_node("Tanh", ["XWB"], [y.name]),
        ],
        f"{model.name}-mlp",
        [helper.make_tensor_value_info(x.name, TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info(y.name, TensorProto.FLOAT, ["batch", m])],
        initializer=[weights, bias],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gpufleet")
    proto.ir_version = 9  # readable by every onnxruntime the project allows
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def model_source_bytes(model: ModelSpec) -> bytes:
    """The ONNX bytes a model spec points at: a builtin generator or a file on disk."""
    if model.source.startswith(BUILTIN_PREFIX):
        kind = model.source[len(BUILTIN_PREFIX) :]
        if kind != "mlp":
            raise UserError(
                f"models.{model.name}.source: unknown builtin '{kind}'; use builtin:mlp or an .onnx path"
            )
        return build_mlp(model)
    with open(model.source, "rb") as f:
        return f.read()

"""Triton model-repository content for a model spec: one ModelConfig message, its two renderings, CPU files.

The stored `config.pbtxt` and the load-API override are both renderings of the message `model_config`
builds, so they cannot disagree on any field: same spec and same versions give the same message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from google.protobuf import json_format, text_format

# model_config_pb2 only needs protobuf, but it lives in tritonclient.grpc, whose __init__ imports grpcio.
from tritonclient.grpc import model_config_pb2

from gpufleet.spec import ModelSpec, TensorSpec

CPU_MODEL_FILE = "model.py"
ONNX_FILE = "model.onnx"
CPU_BACKEND = "python"  # the local fleet's tritonserver has no onnxruntime backend: model.py runs it


def model_config(model: ModelSpec, versions: Sequence[int] | None = None) -> model_config_pb2.ModelConfig:
    """Triton's `ModelConfig` message for serving `model` on CPU with the python backend.

    Version policy: with `versions` it is `specific` and names exactly those versions. A loader passes
    the versions a replica serves now (stable, or stable + canary); a publisher passes the version it
    publishes, so the stored file pins what was servable when it was written. Either way no replica
    picks up a version on its own (a half-uploaded one, an unpromoted canary). Without `versions` no
    policy is set and Triton's default applies (the newest version directory).
    """
    if versions is not None and not versions:
        raise ValueError(f"{model.name}: versions is empty; name at least one version or pass None")
    config = model_config_pb2.ModelConfig(
        name=model.name,
        backend=CPU_BACKEND,
        max_batch_size=model.triton.max_batch_size,
        input=[_tensor(model_config_pb2.ModelInput, t) for t in model.inputs],
        output=[_tensor(model_config_pb2.ModelOutput, t) for t in model.outputs],
        instance_group=[
            model_config_pb2.ModelInstanceGroup(
                kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=model.triton.instances
            )
        ],
    )
    # Triton refuses dynamic batching on a model that does not batch (max_batch_size 0).
    if model.triton.dynamic_batching and model.triton.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = model.triton.max_queue_delay_us
    if versions is not None:
        config.version_policy.specific.versions.extend(sorted(set(versions)))
    return config


def _tensor(message: Any, tensor: TensorSpec) -> Any:
    # The spec's dtypes are Triton's names without the prefix: FP32 -> TYPE_FP32.
    data_type = model_config_pb2.DataType.Value(f"TYPE_{tensor.dtype}")
    return message(name=tensor.name, data_type=data_type, dims=list(tensor.dims))


def triton_config(model: ModelSpec, versions: Sequence[int] | None = None) -> dict[str, Any]:
    """The config as the proto3 JSON mapping, the form Triton's load API takes as `config`.

    int64/uint64 fields (dims, versions, queue delay) come out as JSON strings, as proto3 JSON says;
    Triton parses the override with protobuf's JSON parser, which accepts them.
    """
    as_dict: dict[str, Any] = json_format.MessageToDict(
        model_config(model, versions), preserving_proto_field_name=True
    )
    return as_dict


def load_config_json(model: ModelSpec, versions: Sequence[int]) -> str:
    """The load-API override that pins `versions`."""
    return json.dumps(triton_config(model, versions))


def render_config_pbtxt(model: ModelSpec, versions: Sequence[int] | None = None) -> str:
    """The same message as protobuf text: the `config.pbtxt` stored beside the model's versions.

    Pass the versions being published so the stored file pins them like the load override does.
    """
    text: str = text_format.MessageToString(model_config(model, versions))
    return text


def cpu_package(onnx_bytes: bytes) -> dict[str, bytes]:
    """Files of one version for CPU serving: the ONNX file and the python-backend runner."""
    runner = resources.files("gpufleet.data").joinpath("triton_onnx_model.py").read_bytes()
    return {CPU_MODEL_FILE: runner, ONNX_FILE: onnx_bytes}

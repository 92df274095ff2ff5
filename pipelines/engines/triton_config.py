"""The `config.pbtxt` stored with a pushed engine: gpufleet.modelrepo's ModelConfig for the package's format.

CPU packages are modelrepo's python-backend config as it is. A TensorRT plan gets the same message
with `platform: "tensorrt_plan"`, its plan file and GPU instance groups, so both come from one message.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from gpufleet.modelrepo import model_config
from gpufleet.spec import ModelSpec
from pipelines.engines.metadata import EngineMetadata


def engine_model_config(
    model: ModelSpec, metadata: EngineMetadata, versions: Sequence[int]
) -> model_config_pb2.ModelConfig:
    config = model_config(model, versions)
    if metadata.format == "tensorrt_plan":
        config.ClearField("backend")
        config.platform = "tensorrt_plan"
        config.default_model_filename = metadata.model_file
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    return config


def engine_config_pbtxt(model: ModelSpec, metadata: EngineMetadata, versions: Sequence[int]) -> str:
    text: str = text_format.MessageToString(engine_model_config(model, metadata, versions))
    return text

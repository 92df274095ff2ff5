"""Triton model-repository content for a model spec: config (pbtxt and JSON) and CPU packaging."""

from __future__ import annotations

import json
from importlib import resources

from gpufleet.builtin_models import model_source_bytes
from gpufleet.spec import ModelSpec, TensorSpec

CPU_MODEL_FILE = "model.py"
ONNX_FILE = "model.onnx"


def triton_config(model: ModelSpec, versions: list[int] | None = None) -> dict[str, object]:
    """Triton's model config as JSON (the form the load API accepts as an override).

    `versions` pins `version_policy: specific`, so a replica serves exactly the versions the fleet
    decided on (stable, or stable + canary) and never a half-uploaded one it found in the store.
    """

    def tensor(t: TensorSpec) -> dict[str, object]:
        return {"name": t.name, "data_type": f"TYPE_{t.dtype}", "dims": list(t.dims)}

    config: dict[str, object] = {
        "name": model.name,
        "backend": "python",
        "max_batch_size": model.triton.max_batch_size,
        "input": [tensor(t) for t in model.inputs],
        "output": [tensor(t) for t in model.outputs],
        "instance_group": [{"kind": "KIND_CPU", "count": model.triton.instances}],
    }
    if model.triton.dynamic_batching and model.triton.max_batch_size > 0:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": model.triton.max_queue_delay_us}
    if versions:
        config["version_policy"] = {"specific": {"versions": sorted(versions)}}
    return config


def render_config_pbtxt(model: ModelSpec) -> str:
    """The same config as protobuf text, stored beside the versions for people and other tools."""
    cfg = triton_config(model)
    lines = [f'name: "{model.name}"', 'backend: "python"', f"max_batch_size: {model.triton.max_batch_size}"]
    for key in ("input", "output"):
        entries = cfg[key]
        assert isinstance(entries, list)
        body = ",\n".join(
            f'  {{ name: "{t["name"]}", data_type: {t["data_type"]}, dims: {json.dumps(t["dims"])} }}'
            for t in entries
        )
        lines.append(f"{key} [\n{body}\n]")
    lines.append(f"instance_group [ {{ kind: KIND_CPU, count: {model.triton.instances} }} ]")
    if "dynamic_batching" in cfg:
        lines.append(
            f"dynamic_batching {{ max_queue_delay_microseconds: {model.triton.max_queue_delay_us} }}"
        )
    lines.append("version_policy: { latest: { num_versions: 1 } }")
    return "\n".join(lines) + "\n"


def cpu_package(model: ModelSpec) -> dict[str, bytes]:
    """Files of one version for CPU serving: the ONNX file and the python-backend runner."""
    runner = resources.files("gpufleet.data").joinpath("triton_onnx_model.py").read_bytes()
    return {CPU_MODEL_FILE: runner, ONNX_FILE: model_source_bytes(model)}

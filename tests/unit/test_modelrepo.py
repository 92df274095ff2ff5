from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import json_format, text_format
from onnx import numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from gpufleet.builtin_models import build_mlp
from gpufleet.modelrepo import cpu_package, load_config_json, render_config_pbtxt, triton_config
from gpufleet.spec import ModelSpec


def mlp(**overrides: object) -> ModelSpec:
    doc: dict[str, object] = {
        "name": "mlp",
        "source": "builtin:mlp",
        "inputs": [{"name": "INPUT", "dtype": "FP32", "dims": [16]}],
        "outputs": [{"name": "OUTPUT", "dtype": "FP32", "dims": [4]}],
    }
    doc.update(overrides)
    return ModelSpec.model_validate(doc)


def from_pbtxt(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def from_json(text: str) -> mc.ModelConfig:
    return json_format.Parse(text, mc.ModelConfig())


def test_builtin_mlp_computes_tanh_of_affine_map_of_its_own_weights() -> None:
    """builtin:mlp is documented as y = tanh(x·W + b); recompute that in NumPy from the initializers."""
    onnx_bytes = build_mlp(mlp())
    initializers = [numpy_helper.to_array(t) for t in onnx.load_from_string(onnx_bytes).graph.initializer]
    # Found by shape, not by name: the [in, out] matrix and the [out] bias the docstring promises.
    (weights,) = [a for a in initializers if a.shape == (16, 4)]
    (bias,) = [a for a in initializers if a.shape == (4,)]
    assert len(initializers) == 2
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32) * 2  # both signs, |z| > 1

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (y,) = session.run(["OUTPUT"], {"INPUT": x})

    want = np.tanh(x.astype(np.float64) @ weights.astype(np.float64) + bias.astype(np.float64))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    assert y.min() < -0.5 < 0.5 < y.max()  # the sample reaches both sides of tanh, not a near-linear patch
    assert build_mlp(mlp()) == onnx_bytes  # deterministic: same bytes, same sha256, no re-upload


def test_config_pbtxt_carries_every_field_of_the_spec() -> None:
    spec = mlp(triton={"max_batch_size": 4, "instances": 3, "max_queue_delay_us": 250})
    cfg = from_pbtxt(render_config_pbtxt(spec, [2]))
    assert cfg.name == "mlp" and cfg.backend == "python" and cfg.max_batch_size == 4
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.input] == [("INPUT", mc.TYPE_FP32, [16])]
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.output] == [("OUTPUT", mc.TYPE_FP32, [4])]
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 3)]
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert cfg.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(cfg.version_policy.specific.versions) == [2]


def test_every_spec_dtype_and_variable_dims_reach_triton(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"not read when only the config is rendered")
    dtypes = ["FP32", "FP16", "INT32", "INT64", "BOOL", "UINT8", "INT8", "BF16"]
    spec = mlp(
        source=str(source),
        inputs=[{"name": f"IN_{d}", "dtype": d, "dims": [-1, 3]} for d in dtypes],
        outputs=[{"name": "OUT", "dtype": "INT64", "dims": [-1]}],
    )
    cfg = from_pbtxt(render_config_pbtxt(spec))
    # Enum numbers from Triton's model_config.proto (DataType), written out: an independent fact.
    proto_numbers = dict(FP32=11, FP16=10, INT32=8, INT64=9, BOOL=1, UINT8=2, INT8=6, BF16=14)
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.input] == [
        (f"IN_{d}", proto_numbers[d], [-1, 3]) for d in dtypes
    ]
    assert [(t.data_type, list(t.dims)) for t in cfg.output] == [(proto_numbers["INT64"], [-1])]


def test_served_json_and_stored_pbtxt_are_one_message() -> None:
    spec = mlp(triton={"max_batch_size": 2, "instances": 2, "max_queue_delay_us": 5000})
    for versions in ([3, 1, 3], [7], None):
        stored = from_pbtxt(render_config_pbtxt(spec, versions))
        assert from_json(json.dumps(triton_config(spec, versions))) == stored
        if versions is not None:
            assert from_json(load_config_json(spec, versions)) == stored  # what load_versions sends
    pinned = from_pbtxt(render_config_pbtxt(spec, [3, 1, 3]))
    assert list(pinned.version_policy.specific.versions) == [1, 3]  # sorted, each version once
    assert not from_pbtxt(render_config_pbtxt(spec)).HasField("version_policy")  # Triton's default: newest


def test_empty_version_list_is_refused() -> None:
    with pytest.raises(ValueError, match="versions is empty"):
        render_config_pbtxt(mlp(), [])


@pytest.mark.parametrize(
    "triton", [{"max_batch_size": 0}, {"dynamic_batching": False}], ids=["no-batching", "batching-off"]
)
def test_no_dynamic_batching_unless_the_model_batches_and_asks(triton: dict[str, object]) -> None:
    cfg = from_pbtxt(render_config_pbtxt(mlp(triton=triton), [1]))
    assert not cfg.HasField("dynamic_batching")


def test_cpu_package_has_runner_and_onnx() -> None:
    files = cpu_package(build_mlp(mlp()))
    assert set(files) == {"model.py", "model.onnx"}
    assert b"onnxruntime" in files["model.py"]
    assert files["model.onnx"] == build_mlp(mlp())

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gpufleet.builtin_models import build_mlp
from gpufleet.modelrepo import cpu_package, render_config_pbtxt, triton_config
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


def test_builtin_mlp_runs_in_onnxruntime_and_computes_tanh_affine() -> None:
    session = ort.InferenceSession(build_mlp(mlp()), providers=["CPUExecutionProvider"])
    x = np.ones((3, 16), dtype=np.float32)
    (y,) = session.run(["OUTPUT"], {"INPUT": x})
    assert y.shape == (3, 4)
    assert np.all(np.abs(y) < 1) and not np.allclose(y, y[:, :1])  # tanh range; weights differ per column
    assert build_mlp(mlp()) == build_mlp(mlp())  # deterministic: same bytes, same sha256, no re-upload


def test_triton_config_pins_versions_and_batching() -> None:
    cfg = triton_config(mlp(), versions=[2, 1])
    assert cfg["version_policy"] == {"specific": {"versions": [1, 2]}}
    assert cfg["backend"] == "python" and cfg["max_batch_size"] == 8
    assert cfg["input"] == [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [16]}]
    assert "dynamic_batching" in cfg
    assert "version_policy" not in triton_config(mlp())


def test_config_pbtxt_mentions_every_tensor() -> None:
    text = render_config_pbtxt(mlp())
    assert 'name: "mlp"' in text and 'name: "INPUT", data_type: TYPE_FP32, dims: [16]' in text
    assert "dynamic_batching" in text


def test_cpu_package_has_runner_and_onnx() -> None:
    files = cpu_package(mlp())
    assert set(files) == {"model.py", "model.onnx"}
    assert b"onnxruntime" in files["model.py"]

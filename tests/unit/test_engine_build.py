"""`engine build`: the CPU package and its engine.json, refusals as one line, the TensorRT rules.

The TensorRT build itself runs only where an NVIDIA GPU and the tensorrt package are present (marked
`gpu`, skipped with the reason otherwise); its pure parts (profiles, flags, compatibility) run anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from gpufleet.errors import UserError
from gpufleet.spec import ModelSpec, parse_fleet
from pipelines.engines import build as build_module
from pipelines.engines import tensorrt_build
from pipelines.engines.build import build_engine
from pipelines.engines.metadata import GpuInfo, read_metadata
from pipelines.engines.reference import Reference, mismatch
from tests.conftest import GPUFLEET

REPO = Path(__file__).resolve().parents[2]
ENGINE_CLI = GPUFLEET  # python -m gpufleet

FLEET = """
name: eng
clusters: [{name: local-a, cloud: local, wave: 1}]
model_store: {bucket: eng-models}
models:
  - name: mlp
    source: builtin:mlp
    inputs: [{name: INPUT, dtype: FP32, dims: [16]}]
    outputs: [{name: OUTPUT, dtype: FP32, dims: [4]}]
    triton: {max_batch_size: 8}
    engine_targets: [{gpu_arch: sm80, precision: fp16}]
"""


def fleet_file(tmp_path: Path, text: str = FLEET) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def mlp_spec(tmp_path: Path, text: str = FLEET) -> ModelSpec:
    return parse_fleet(text, base_dir=tmp_path).model("mlp")


def engine_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")} | {"COLUMNS": "300"}
    return subprocess.run([*ENGINE_CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=env)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- the CPU package -------------------------------------------------------------------------------


def test_cpu_package_holds_what_triton_serves_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    built = build_engine(mlp_spec(tmp_path), target="cpu", out=out)

    assert sorted(p.name for p in out.iterdir()) == ["engine.json", "model.onnx", "model.py", "reference.npz"]
    meta = read_metadata(out / "engine.json")
    assert meta == built.metadata
    assert (meta.format, meta.runtime, meta.model_file, meta.target) == (
        "onnx",
        "onnxruntime-cpu",
        "model.onnx",
        "cpu",
    )
    assert meta.gpu is None and meta.hardware_compatibility is None and meta.optimization_profiles == []
    versions = meta.runtime_versions
    assert versions.onnxruntime == onnxruntime.__version__
    assert (versions.tensorrt, versions.cuda_runtime, versions.cuda_driver) == (None, None, None)
    onnx_bytes = (out / "model.onnx").read_bytes()
    assert versions.onnx_opset == next(
        o.version for o in onnx.load_model_from_string(onnx_bytes).opset_import
    )
    # The fleet file above: batched (max_batch_size 8) FP32 [16] -> [4].
    assert [(t.name, t.dtype, t.shape) for t in meta.inputs] == [("INPUT", "FP32", [-1, 16])]
    assert [(t.name, t.dtype, t.shape) for t in meta.outputs] == [("OUTPUT", "FP32", [-1, 4])]
    assert meta.max_batch_size == 8 and meta.precision == "fp32"
    assert meta.source.uri == "builtin:mlp"
    assert meta.source.sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert meta.source.size == len(onnx_bytes)
    assert meta.builder.host and meta.built_at.endswith("Z")
    # The file Triton's python backend will open runs, at a batch size the spec allows.
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (result,) = session.run(["OUTPUT"], {"INPUT": np.ones((3, 16), np.float32)})
    assert result.shape == (3, 4) and np.all(np.abs(result) <= 1)  # tanh


def test_reference_data_is_what_the_layer_computes_and_rebuilds_the_same_bytes(tmp_path: Path) -> None:
    build_engine(mlp_spec(tmp_path), target="cpu", out=tmp_path / "a")
    build_engine(mlp_spec(tmp_path), target="cpu", out=tmp_path / "b")
    data = (tmp_path / "a/reference.npz").read_bytes()
    assert data == (tmp_path / "b/reference.npz").read_bytes()  # unchanged model: nothing to re-push
    reference = Reference.from_bytes(data)
    (x,) = reference.inputs.values()
    assert x.shape == (4, 16) and x.dtype == np.float32 and x.std() > 0.5  # 4 rows of batch, not zeros
    # The expected values: y = tanh(x W + b) with W and B read from the graph, computed with NumPy.
    graph = onnx.load_model_from_string((tmp_path / "a/model.onnx").read_bytes()).graph
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    want = np.tanh(x @ weights["W"] + weights["B"])
    np.testing.assert_allclose(reference.outputs["OUTPUT"], want, rtol=1e-5, atol=1e-6)
    assert mismatch(reference, {"OUTPUT": want}, "fp32") is None
    assert "values off the reference" in (mismatch(reference, {"OUTPUT": want + 0.01}, "fp32") or "")
    assert mismatch(reference, {"OUTPUT": want + 0.001}, "fp16") is None  # within fp16's tolerance
    assert "shape [4, 3]" in (mismatch(reference, {"OUTPUT": want[:, :3]}, "fp32") or "")


def test_engine_json_is_plain_json_with_the_documented_keys(tmp_path: Path) -> None:
    build_engine(mlp_spec(tmp_path), target="cpu", out=tmp_path / "pkg")
    document = json.loads((tmp_path / "pkg/engine.json").read_text())
    assert set(document) == {
        "schema_version",
        "model",
        "target",
        "format",
        "runtime",
        "model_file",
        "runtime_versions",
        "gpu",
        "hardware_compatibility",
        "precision",
        "builder_flags",
        "max_batch_size",
        "inputs",
        "outputs",
        "optimization_profiles",
        "source",
        "built_at",
        "builder",
    }
    assert document["schema_version"] == 1


def _onnx_file(path: Path, input_name: str, elem_type: int = TensorProto.FLOAT) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], ["OUTPUT"])],
        "g",
        [helper.make_tensor_value_info(input_name, elem_type, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT", elem_type, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def _file_fleet(tmp_path: Path, input_name: str = "INPUT", dtype: str = "FP32") -> str:
    return f"""
name: eng
clusters: [{{name: local-a, cloud: local, wave: 1}}]
model_store: {{bucket: eng-models}}
models:
  - name: mlp
    source: model.onnx
    inputs: [{{name: {input_name}, dtype: {dtype}, dims: [4]}}]
    outputs: [{{name: OUTPUT, dtype: {dtype}, dims: [4]}}]
"""


def test_an_onnx_file_source_is_packaged_as_it_is(tmp_path: Path) -> None:
    source = _onnx_file(tmp_path / "model.onnx", "INPUT")
    build_engine(mlp_spec(tmp_path, _file_fleet(tmp_path)), target="cpu", out=tmp_path / "pkg")
    assert (tmp_path / "pkg/model.onnx").read_bytes() == source.read_bytes()
    meta = read_metadata(tmp_path / "pkg/engine.json")
    assert (
        meta.source.uri == str(source)
        and meta.source.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    )


def test_an_input_name_the_onnx_file_lacks_is_one_line_naming_the_field(tmp_path: Path) -> None:
    _onnx_file(tmp_path / "model.onnx", "x")
    file = fleet_file(tmp_path, _file_fleet(tmp_path, input_name="INPUT"))
    line = one_error_line(engine_cli("engine", "build", "mlp", "-f", str(file), "--out", "pkg", cwd=tmp_path))
    assert "inputs[0].name 'INPUT'" in line and "(x)" in line
    assert not (tmp_path / "pkg").exists()  # nothing half-created


def test_a_dtype_the_onnx_file_does_not_have_is_refused(tmp_path: Path) -> None:
    _onnx_file(tmp_path / "model.onnx", "INPUT", TensorProto.FLOAT)
    with pytest.raises(UserError, match=r"inputs\[0\]\.dtype is INT64 but the ONNX file says FP32"):
        build_engine(
            mlp_spec(tmp_path, _file_fleet(tmp_path, dtype="INT64")), target="cpu", out=tmp_path / "pkg"
        )


def test_rebuild_replaces_the_package_and_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    spec = mlp_spec(tmp_path)
    out = tmp_path / "pkg"
    build_engine(spec, target="cpu", out=out)
    (out / "engine.json").write_text((out / "engine.json").read_text().replace('"fp32"', '"fp32" '))
    build_engine(spec, target="cpu", out=out)  # an earlier package: replaced
    assert read_metadata(out / "engine.json").precision == "fp32"

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an engine package"):
        build_engine(spec, target="cpu", out=foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_a_build_that_fails_half_way_leaves_the_earlier_package_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _onnx_file(tmp_path / "model.onnx", "INPUT")
    spec = mlp_spec(tmp_path, _file_fleet(tmp_path))
    out = tmp_path / "pkg"
    build_engine(spec, target="cpu", out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    model = onnx.load(source)
    model.doc_string = "a new export of the model"
    source.write_bytes(model.SerializeToString())
    real_write = Path.write_bytes

    def disk_full_at_engine_json(self: Path, data: bytes) -> int:
        if self.name == "engine.json":  # the last file written: model.onnx and model.py are down
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_at_engine_json)
    with pytest.raises(OSError):
        build_engine(spec, target="cpu", out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "pkg"]  # no staging left behind


def test_cli_build_writes_the_default_folder_under_the_home(tmp_path: Path) -> None:
    file = fleet_file(tmp_path)
    done = engine_cli("engine", "build", "mlp", "-f", str(file), "--home", "h", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "h/engines/mlp/cpu/engine.json").is_file()
    assert "built mlp for cpu" in done.stdout


# --- targets ---------------------------------------------------------------------------------------

NO_GPU_BUILDER = importlib.util.find_spec("tensorrt") is None or tensorrt_build.detect_gpu() is None


@pytest.mark.skipif(not NO_GPU_BUILDER, reason="this machine has a GPU and tensorrt: sm80 would really build")
def test_gpu_target_without_gpu_or_tensorrt_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    file = fleet_file(tmp_path)
    line = one_error_line(
        engine_cli("engine", "build", "mlp", "--target", "sm80", "-f", str(file), "--out", "o", cwd=tmp_path)
    )
    assert "--target sm80: building a TensorRT engine needs an NVIDIA GPU and the tensorrt package" in line
    assert "--target cpu" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--target", "sm70"], "no such engine target (engine_targets: sm80)"),
        (["--target", "gpu"], "use cpu or a GPU architecture such as sm80"),
        (["--hardware-compatibility", "turing"], "--hardware-compatibility 'turing': use one of none"),
        (["--out", "fleet.yaml"], "--out fleet.yaml: is a file"),
    ],
)
def test_build_mistakes_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    file = fleet_file(tmp_path)
    line = one_error_line(engine_cli("engine", "build", "mlp", "-f", str(file), *args, cwd=tmp_path))
    assert expected in line


def test_compute_capability_of_architecture_names() -> None:
    # NVIDIA's table: A100 sm80 = 8.0, L4 sm89 = 8.9, H100 sm90 = 9.0, B200 sm100 = 10.0.
    assert [tensorrt_build.compute_capability(a) for a in ("sm80", "sm89", "sm90", "sm100")] == [
        "8.0",
        "8.9",
        "9.0",
        "10.0",
    ]


def test_optimization_profile_spans_batch_one_to_max_batch_size(tmp_path: Path) -> None:
    profile = tensorrt_build.optimization_profile(mlp_spec(tmp_path))
    assert {k: (v.min, v.opt, v.max) for k, v in profile.items()} == {"INPUT": ([1, 16], [8, 16], [8, 16])}
    unbatched = mlp_spec(tmp_path, FLEET.replace("max_batch_size: 8", "max_batch_size: 0"))
    assert tensorrt_build.optimization_profile(unbatched)["INPUT"].max == [16]


def test_variable_dims_cannot_make_a_profile_yet(tmp_path: Path) -> None:
    _onnx_file(tmp_path / "model.onnx", "INPUT")
    spec = mlp_spec(
        tmp_path, _file_fleet(tmp_path).replace("dims: [4]}]\n    outputs", "dims: [-1]}]\n    outputs")
    )
    with pytest.raises(UserError, match=r"inputs\[0\]\.dims \[-1\] has a variable dimension"):
        tensorrt_build.optimization_profile(spec)


def test_precision_flags() -> None:
    assert tensorrt_build.builder_flag_names("fp32") == []
    assert tensorrt_build.builder_flag_names("fp16") == ["FP16"]
    assert tensorrt_build.builder_flag_names("int8") == ["INT8", "FP16"]


def test_int8_needs_an_explicitly_quantized_graph(tmp_path: Path) -> None:
    from gpufleet.builtin_models import build_mlp

    plain = build_mlp(mlp_spec(tmp_path))
    assert "QuantizeLinear/DequantizeLinear" in (tensorrt_build.quantization_problem("int8", plain) or "")
    assert tensorrt_build.quantization_problem("fp16", plain) is None
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("z", TensorProto.INT8, [], [0]),
        ],
    )
    quantized = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    assert tensorrt_build.quantization_problem("int8", quantized) is None


H100 = GpuInfo(name="NVIDIA H100", compute_capability="9.0")


@pytest.mark.parametrize(
    ("target", "level", "runs"),
    [
        ("sm90", "none", True),
        ("sm80", "none", False),  # a plan runs on the compute capability it was built on
        ("sm80", "same_compute_capability", False),
        ("sm80", "ampere_plus", True),  # Ampere+ plans run on any sm80+ GPU
        ("sm75", "ampere_plus", False),  # Turing is not Ampere+
    ],
)
def test_which_plans_run_on_the_target(target: str, level: str, runs: bool) -> None:
    problem = tensorrt_build.compatibility_problem(target, H100, level)  # type: ignore[arg-type]
    assert (problem is None) == runs, problem


# --- on a GPU with tensorrt ------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(NO_GPU_BUILDER, reason="needs an NVIDIA GPU and the tensorrt package")
def test_tensorrt_plan_for_this_gpu_with_metadata_and_timing_cache(tmp_path: Path) -> None:
    import tensorrt as trt

    found = tensorrt_build.detect_gpu()
    assert found is not None
    gpu, _ = found
    major, minor = gpu.compute_capability.split(".")
    arch = f"sm{major}{minor}"
    spec = mlp_spec(tmp_path, FLEET.replace("gpu_arch: sm80", f"gpu_arch: {arch}"))
    cache = tmp_path / "cache"
    built = build_engine(spec, target=arch, out=tmp_path / "pkg", timing_cache=cache)

    meta = built.metadata
    assert (meta.format, meta.runtime, meta.model_file) == ("tensorrt_plan", "tensorrt", "model.plan")
    assert meta.runtime_versions.tensorrt == trt.__version__
    assert meta.gpu == gpu and meta.precision == "fp16" and "FP16" in meta.builder_flags
    assert meta.optimization_profiles[0]["INPUT"].max == [8, 16]
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["engine.json", "model.plan"]
    assert [p.suffix for p in cache.iterdir()] == [".cache"]
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine((tmp_path / "pkg/model.plan").read_bytes())
    assert engine is not None and engine.num_io_tensors == 2


def test_target_spelling_is_normalized(tmp_path: Path) -> None:
    assert build_module.normalized_target(mlp_spec(tmp_path), " SM80 ") == ("sm80", "fp16")
    assert build_module.normalized_target(mlp_spec(tmp_path), "CPU") == ("cpu", "fp32")

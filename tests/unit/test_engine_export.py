"""`source: torch:<file.py>:<function>`: the exporter turns a PyTorch module into the same package.

PyTorch is an optional extra; the tests that export skip without it (with the reason) and the
refusal without it is tested by hiding torch from the import system.
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from gpufleet.errors import UserError
from gpufleet.spec import FleetSpecError, ModelSpec, parse_fleet
from pipelines.engines import export as export_module
from pipelines.engines.build import build_engine
from pipelines.engines.metadata import read_metadata
from tests.unit.test_engine_build import engine_cli, fleet_file, one_error_line

HAS_TORCH = (
    importlib.util.find_spec("torch") is not None and importlib.util.find_spec("onnxscript") is not None
)
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="PyTorch + onnxscript not installed (optional extra: make setup-torch)"
)

# A module with two inputs, a variable dim and a batch axis, so the export has to get names, dtypes
# and dynamic axes right; its weights are seeded so the test can compute the expected output itself.
ENCODER = """
import torch


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.embed = torch.nn.Linear(8, 12)
        self.head = torch.nn.Linear(12, 3)

    def forward(self, tokens: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.embed(tokens)).mean(dim=1)  # pool over the variable-length axis
        return self.head(hidden) * scale


def build() -> torch.nn.Module:
    return Encoder()


def not_a_module() -> int:
    return 7
"""

FLEET = """
name: exp
clusters: [{{name: local-a, cloud: local, wave: 1}}]
model_store: {{bucket: exp-models}}
models:
  - name: encoder
    source: {source}
    inputs:
      - {{name: TOKENS, dtype: FP32, dims: [-1, 8]}}
      - {{name: SCALE, dtype: FP32, dims: [1]}}
    outputs: [{{name: LOGITS, dtype: FP32, dims: [3]}}]
    triton: {{max_batch_size: 4}}
"""


def encoder_spec(tmp_path: Path, source: str = "torch:encoder.py:build") -> ModelSpec:
    (tmp_path / "encoder.py").write_text(ENCODER)
    return parse_fleet(FLEET.format(source=source), base_dir=tmp_path).model("encoder")


# --- the spec ---------------------------------------------------------------------------------------


def test_a_torch_source_resolves_its_file_against_the_fleet_directory(tmp_path: Path) -> None:
    spec = encoder_spec(tmp_path)
    assert spec.source == f"torch:{tmp_path / 'encoder.py'}:build"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("torch:encoder.py", "is not torch:<file.py>:<function>"),
        ("torch:encoder.txt:build", "is not torch:<file.py>:<function>"),
        ("torch:encoder.py:2build", "is not torch:<file.py>:<function>"),
        ("torch:missing.py:build", "file 'missing.py' not found; put the Python file at"),
    ],
)
def test_a_malformed_torch_source_is_one_line_naming_the_field(
    tmp_path: Path, source: str, expected: str
) -> None:
    with pytest.raises(FleetSpecError) as caught:
        encoder_spec(tmp_path, source)
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith("models[0].source:"), caught.value.errors
    assert expected in caught.value.errors[0]


# --- without PyTorch ------------------------------------------------------------------------------


def test_without_torch_a_torch_source_is_refused_with_the_install_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = encoder_spec(tmp_path)
    real_import = builtins.__import__

    def no_torch(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(UserError, match=r"needs PyTorch, which is not installed; install the optional extra"):
        build_engine(spec, target="cpu", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- export ---------------------------------------------------------------------------------------


@needs_torch
def test_export_builds_a_cpu_package_that_computes_what_the_module_computes(tmp_path: Path) -> None:
    import torch

    spec = encoder_spec(tmp_path)
    built = build_engine(spec, target="cpu", out=tmp_path / "pkg")

    # The expected output comes from PyTorch itself, not from the exported graph.
    module = export_module._module_from(str(tmp_path / "encoder.py"), "build", "test").eval()
    rng = np.random.default_rng(0)
    for batch, length in ((1, 5), (4, 2)):  # both differ from the export's example shape (2, 2)
        tokens = rng.standard_normal((batch, length, 8)).astype(np.float32)
        scale = rng.uniform(0.5, 2, (batch, 1)).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(tokens), torch.from_numpy(scale)).numpy()
        session = onnxruntime.InferenceSession(
            (built.folder / "model.onnx").read_bytes(), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(["LOGITS"], {"TOKENS": tokens, "SCALE": scale})
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    metadata = read_metadata(built.folder / "engine.json")
    exported = metadata.source.exported_from
    assert exported is not None
    assert exported.function == "build" and exported.file == str(tmp_path / "encoder.py")
    assert exported.torch == torch.__version__
    assert exported.file_sha256 == __import__("hashlib").sha256(ENCODER.encode()).hexdigest()
    assert metadata.runtime_versions.onnx_opset == export_module.TORCH_EXPORT_OPSET
    assert (
        json.loads((built.folder / "engine.json").read_text())["source"]["exported_from"]["function"]
        == "build"
    )


@needs_torch
def test_the_cli_builds_from_a_torch_source(tmp_path: Path) -> None:
    (tmp_path / "encoder.py").write_text(ENCODER)
    file = fleet_file(tmp_path, FLEET.format(source="torch:encoder.py:build"))
    done = engine_cli("engine", "build", "encoder", "-f", str(file), "--out", "pkg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "built encoder for cpu" in done.stdout
    assert {p.name for p in (tmp_path / "pkg").iterdir()} == {
        "model.onnx",
        "model.py",
        "reference.npz",
        "engine.json",
    }
    # The export is deterministic: a rebuild of an unchanged module pushes no new bytes.
    again = engine_cli("engine", "build", "encoder", "-f", str(file), "--out", "pkg2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "pkg2/model.onnx").read_bytes() == (tmp_path / "pkg/model.onnx").read_bytes()
    assert not done.stderr.strip(), done.stderr  # the exporter's narration and warnings stay out


@needs_torch
@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("not_a_module", "not_a_module() returned int, not a torch.nn.Module; return one"),
        ("absent", "defines no function absent"),
    ],
)
def test_a_factory_that_gives_no_module_is_one_line(tmp_path: Path, function: str, expected: str) -> None:
    (tmp_path / "encoder.py").write_text(ENCODER)
    file = fleet_file(tmp_path, FLEET.format(source=f"torch:encoder.py:{function}"))
    line = one_error_line(
        engine_cli("engine", "build", "encoder", "-f", str(file), "--out", "pkg", cwd=tmp_path)
    )
    assert expected in line
    assert not (tmp_path / "pkg").exists()


@needs_torch
def test_a_module_whose_outputs_do_not_fit_the_spec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "encoder.py").write_text(ENCODER)
    text = FLEET.format(source="torch:encoder.py:build").replace("dims: [3]}]", "dims: [5]}]")
    file = fleet_file(tmp_path, text)
    line = one_error_line(
        engine_cli("engine", "build", "encoder", "-f", str(file), "--out", "pkg", cwd=tmp_path)
    )
    assert "outputs[0]" in line and "[5]" in line, line


@needs_torch
def test_an_error_inside_the_users_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "encoder.py").write_text(ENCODER + "\nraise RuntimeError('weights file missing')\n")
    file = fleet_file(tmp_path, FLEET.format(source="torch:encoder.py:build"))
    line = one_error_line(
        engine_cli("engine", "build", "encoder", "-f", str(file), "--out", "pkg", cwd=tmp_path)
    )
    assert "importing" in line and "RuntimeError: weights file missing" in line
    assert textwrap.dedent(line).count("\n") == 0

"""Only the clouds a fleet uses are imported: checked in fresh subprocesses through sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

PROVIDERS = {
    "aws": "cdktf_cdktf_provider_aws",
    "gcp": "cdktf_cdktf_provider_google",
    "azure": "cdktf_cdktf_provider_azurerm",
}


def one_cloud_fleet(tmp_path: Path, cloud: str) -> Path:
    doc = yaml.safe_load((REPO / "fleet.yaml").read_text())
    doc["clusters"] = [c for c in doc["clusters"] if c["cloud"] in ("local", cloud)]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def loaded_modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_aws_only_synth_never_imports_google_or_azure(tmp_path: Path) -> None:
    fleet = one_cloud_fleet(tmp_path, "aws")
    out = tmp_path / "out"
    modules = loaded_modules_after(
        f"from stacks.__main__ import main\nassert main(['--cloud', 'aws', '--file', {str(fleet)!r}, "
        f"'--out', {str(out)!r}]) == 0"
    )
    assert PROVIDERS["aws"] in modules
    assert PROVIDERS["gcp"] not in modules and PROVIDERS["azure"] not in modules
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stacks"], "aws stacks were synthesized"


def test_cli_and_validate_never_import_cdktf() -> None:
    modules = loaded_modules_after(
        "from typer.testing import CliRunner\nfrom gpufleet.cli import app\n"
        "r = CliRunner().invoke(app, ['validate', 'fleet.yaml'])\nassert r.exit_code == 0, r.output"
    )
    assert "cdktf" not in modules and not (set(PROVIDERS.values()) & modules)


def test_multi_cloud_synth_runs_one_process_per_cloud(tmp_path: Path) -> None:
    # The parent orchestrates; it must not import any provider itself.
    modules = loaded_modules_after(
        "from pathlib import Path\nfrom stacks.synth import SynthOptions, synth_fleet\n"
        f"m = synth_fleet(['aws', 'gcp', 'azure'], SynthOptions(Path({str(REPO / 'fleet.yaml')!r}), 'prod'), "
        f"Path({str(tmp_path / 'out')!r}))\nassert len(m['stacks']) >= 6, m"
    )
    assert not (set(PROVIDERS.values()) & modules)
    assert "cdktf" not in modules

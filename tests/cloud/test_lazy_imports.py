"""Only the clouds a fleet uses are imported: checked in fresh subprocesses through sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from stacks.provider_imports import EAGER_SWITCH
from tests.cloud.conftest import Synthesized, synth_one_cloud
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


def run_probe(code: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_provider_package_imports_resource_modules_on_demand() -> None:
    seen = run_probe(
        """
        import json, sys
        from stacks.provider_imports import import_providers_on_demand
        import_providers_on_demand()
        import cdktf_cdktf_provider_azurerm as azurerm
        before = sum(m.startswith("cdktf_cdktf_provider_azurerm.") for m in sys.modules)
        account = azurerm.storage_account.StorageAccount
        try:
            azurerm.no_such_resource
            missing = "no error"
        except AttributeError as e:
            missing = str(e)
        print(json.dumps({"before": before, "fqn": account.__jsii_type__, "module": account.__module__,
                          "listed": "storage_account" in dir(azurerm), "missing": missing}))
        """
    )
    # The package holds ~1,100 resource modules; only its _jsii helpers load with it.
    assert seen["before"] <= 3, seen
    assert seen["fqn"] == "@cdktf/provider-azurerm.storageAccount.StorageAccount"
    assert seen["module"] == "cdktf_cdktf_provider_azurerm.storage_account"
    assert seen["listed"] is True
    assert "no attribute 'no_such_resource'" in seen["missing"]


def test_jsii_can_find_every_resource_module_synth_loaded(tmp_path: Path) -> None:
    # jsii imports a module itself when JavaScript hands back a type Python has not loaded; the
    # FQN -> module map we register must name the module each loaded type really lives in.
    fleet = one_cloud_fleet(tmp_path, "aws")
    seen = run_probe(
        f"""
        import inspect, json, sys
        from jsii import _reference_map
        from stacks.__main__ import main
        assert main(["--cloud", "aws", "--file", {str(fleet)!r}, "--out", {str(tmp_path / "out")!r}]) == 0
        wrong, checked = [], 0
        for name, module in list(sys.modules.items()):
            if name.count(".") != 1 or not name.startswith("cdktf_cdktf_provider_aws.") or "_jsii" in name:
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                fqn = getattr(cls, "__jsii_type__", None)
                if fqn and cls.__module__ == name:
                    checked += 1
                    if _reference_map._submodule_fqn_map.get(fqn.rsplit(".", 1)[0]) != name:
                        wrong.append(fqn)
        print(json.dumps({{"checked": checked, "wrong": wrong}}))
        """
    )
    assert seen["checked"] > 100 and seen["wrong"] == [], seen


def test_on_demand_imports_synthesize_the_same_json_as_eager_imports(
    tmp_path: Path, synthesized: Synthesized
) -> None:
    # Escape hatch and proof in one: the packages' own eager import gives byte-identical stacks.
    fleet_text = (REPO / "fleet.yaml").read_text()
    eager = synth_one_cloud(tmp_path, fleet_text, "aws", extra_env={EAGER_SWITCH: "eager"})
    assert eager.stack_names()
    for name in eager.stack_names():
        on_demand = (synthesized.outdir / "stacks" / name / "cdk.tf.json").read_bytes()
        eager_bytes = (eager.outdir / "stacks" / name / "cdk.tf.json").read_bytes()
        if b'"local"' in on_demand:
            # A shared stack's bootstrap state path is relative to where each run's fleet file and
            # output folder are (different here by construction); everything else must match.
            on_demand, eager_bytes = (
                _without_local_state_path(on_demand),
                _without_local_state_path(eager_bytes),
            )
        assert eager_bytes == on_demand, name


def _without_local_state_path(stack_json: bytes) -> bytes:
    stack = json.loads(stack_json)
    stack["terraform"]["backend"]["local"].pop("path")
    return json.dumps(stack, sort_keys=True).encode()

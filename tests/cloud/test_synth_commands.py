"""The two ways a user synthesizes: `gpufleet synth --out DIR` and the Node `cdktf synth` (cdktf.json)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from stacks.synth import QUIET_JSII
from tests.conftest import REPO, run_cli

CDKTF = REPO / "node_modules" / ".bin" / "cdktf"
CLUSTER_TYPES = {"aws_eks_cluster", "google_container_cluster", "azurerm_kubernetes_cluster"}


def resource_types(outdir: Path) -> set[str]:
    manifest = json.loads((outdir / "manifest.json").read_text())
    types: set[str] = set()
    for entry in manifest["stacks"].values():
        stack = json.loads((outdir / entry["synthesizedStackPath"]).read_text())
        types |= set(stack.get("resource", {}))
    return types


def test_gpufleet_synth_writes_every_cloud(tmp_path: Path) -> None:
    result = run_cli("synth", "--out", str(tmp_path / "out"), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert resource_types(tmp_path / "out") >= CLUSTER_TYPES
    assert "synthesized 6 stacks" in result.stdout


def test_gpufleet_synth_rejects_a_bad_environment(tmp_path: Path) -> None:
    result = run_cli("synth", "--env", "Prod_1", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--env" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not CDKTF.exists(), reason="cdktf CLI not installed (make setup-all runs npm install)")
def test_cdktf_cli_synth_works_offline_with_the_repo_cdktf_json(tmp_path: Path) -> None:
    env = {**os.environ, **QUIET_JSII, "CHECKPOINT_DISABLE": "1", "CI": "1"}
    result = subprocess.run(
        [str(CDKTF), "synth", "--output", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert resource_types(tmp_path / "out") >= CLUSTER_TYPES
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["stacks"]) == {
        "prod-shared-aws",
        "prod-shared-gcp",
        "prod-shared-azure",
        "prod-aws-use1",
        "prod-gke-usc1",
        "prod-aks-eus",
    }

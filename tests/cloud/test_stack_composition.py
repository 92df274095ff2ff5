"""How the stacks fit together, the same on every cloud: cluster stacks depend on their shared stack, the
shared stacks' bootstrap state is found relative to the fleet file, pv- names are refused outside the
preview options, and previews are sized by fleet.yaml's `previews` section.

Expected values come from fleet.yaml (read as YAML) and from the rules stated in each test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.synth import QUIET_JSII
from tests.cloud.conftest import FLEET_DOC, Synthesized, expected_gpu_pools
from tests.conftest import REPO

CLOUD_PROVIDERS = {"aws": "aws", "gcp": "google", "azure": "azurerm"}


def stack_cloud(synth: Synthesized, name: str) -> str:
    providers = synth.stack(name).get("provider", {})
    (cloud,) = [cloud for cloud, provider in CLOUD_PROVIDERS.items() if provider in providers]
    return cloud


def test_every_cluster_stack_depends_on_its_clouds_shared_stack(synthesized: Synthesized) -> None:
    """A first `cdktf deploy` must create the state bucket (shared stack) before a cluster stack inits
    its backend in it: cdktf orders stacks by the manifest's dependencies."""
    manifest = json.loads((synthesized.outdir / "manifest.json").read_text())["stacks"]
    clusters = {c["name"]: c["cloud"] for c in FLEET_DOC["clusters"] if c["cloud"] != "local"}
    for cluster, cloud in clusters.items():
        entry = manifest[f"prod-{cluster}"]
        assert stack_cloud(synthesized, f"prod-{cluster}") == cloud
        assert entry["dependencies"] == [f"prod-shared-{cloud}"], cluster
    for cloud in set(clusters.values()):
        assert manifest[f"prod-shared-{cloud}"]["dependencies"] == []


def test_preview_cluster_stacks_depend_on_nothing_in_their_app(synthesized_preview: Synthesized) -> None:
    # The base environment's shared stacks already exist and are not part of a preview's app.
    manifest = json.loads((synthesized_preview.outdir / "manifest.json").read_text())["stacks"]
    assert all(entry["dependencies"] == [] for entry in manifest.values())
    assert not any("-shared-" in name for name in manifest)


def test_shared_stacks_keep_bootstrap_state_beside_the_fleet_file(synthesized: Synthesized) -> None:
    """Relative to the stack's working directory (where terraform runs), pointing into the repo: no
    absolute path of the machine synth ran on, and never inside the output that each synth replaces."""
    for cloud in CLOUD_PROVIDERS:
        name = f"prod-shared-{cloud}"
        path = synthesized.stack(name)["terraform"]["backend"]["local"]["path"]
        assert not os.path.isabs(path), path
        workdir = synthesized.outdir / "stacks" / name
        resolved = Path(os.path.normpath(workdir / path))
        assert resolved == REPO / "bootstrap-state" / f"terraform.{name}.tfstate"


SMALL_GCP_FLEET = """
name: small
clusters:
  - name: gke-small
    cloud: gcp
    region: us-central1
    project: small-project
    gpu_pools: [{name: l4, instance_type: g2-standard-4}]
model_store: {bucket: small-models}
"""


def run_stacks(
    args: list[str], cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m stacks ...` as the cdktf CLI runs it (cdktf.json's app), in a clean environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("GPUFLEET_OUTDIR", "GPUFLEET_ENV")}
    env |= QUIET_JSII | (extra_env or {})
    cmd = [sys.executable, "-m", "stacks", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_bootstrap_state_path_does_not_depend_on_where_synth_runs(tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    repo.mkdir()
    (repo / "fleet.yaml").write_text(SMALL_GCP_FLEET)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = repo / "cdktf.out"
    result = run_stacks(["--file", str(repo / "fleet.yaml"), "--out", str(out)], cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-2000:]
    stack = json.loads((out / "stacks" / "prod-shared-gcp" / "cdk.tf.json").read_text())
    # From <repo>/cdktf.out/stacks/<stack> to <repo>/bootstrap-state: three levels up, whoever runs it.
    path = stack["terraform"]["backend"]["local"]["path"]
    assert path == "../../../bootstrap-state/terraform.prod-shared-gcp.tfstate"
    assert str(tmp_path) not in json.dumps(stack)


@pytest.mark.parametrize("how", ["--env", "GPUFLEET_ENV"])
def test_pv_environment_names_are_refused_outside_the_preview_options(how: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--file", str(REPO / "fleet.yaml"), "--out", str(out)]
    if how == "--env":
        result = run_stacks([*args, "--env", "pv-feature-x"], cwd=REPO)
    else:
        result = run_stacks(args, cwd=REPO, extra_env={"GPUFLEET_ENV": "pv-feature-x"})
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --env (or GPUFLEET_ENV): 'pv-feature-x' starts with 'pv-'")
    assert "--preview-env pv-feature-x" in line and "Traceback" not in result.stderr
    assert not out.exists()


# --- previews sized by fleet.yaml's previews section -------------------------------------------------


def preview_synth(
    tmp_path: Path, doc: dict[str, Any], *, owner: str = "Dev.Person@example.com"
) -> Synthesized:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    args = ["--file", str(fleet), "--out", str(out), "--branch", "feature/sizes", "--owner", owner]
    result = run_stacks([*args, "--expires-at", "1900000000"], cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return Synthesized(out, json.loads((out / "manifest.json").read_text()))


def cloud_doc() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "fleet.yaml").read_text())
    doc["clusters"] = [{**c, "wave": 1} for c in doc["clusters"] if c["cloud"] != "local"]
    doc["models"] = []
    return dict(doc)


def gpu_pool_sizes(synth: Synthesized) -> dict[str, dict[str, tuple[int, int, bool]]]:
    """stack -> GPU pool name -> (min, max, spot), read from each cloud's resources."""
    sizes: dict[str, dict[str, tuple[int, int, bool]]] = {}
    for name in synth.stack_names():
        found: dict[str, tuple[int, int, bool]] = {}
        for group in synth.resources(name, "aws_eks_node_group").values():
            if group["node_group_name"].startswith("gpu-"):
                scaling = group["scaling_config"]
                spot = group["capacity_type"] == "SPOT"
                pool = group["node_group_name"].removeprefix("gpu-")
                found[pool] = (scaling["min_size"], scaling["max_size"], spot)
        for pool in synth.resources(name, "google_container_node_pool").values():
            if pool["name"] != "system":
                auto = pool["autoscaling"]
                found[pool["name"]] = (
                    auto["total_min_node_count"],
                    auto["total_max_node_count"],
                    pool["node_config"]["spot"],
                )
        for pool in synth.resources(name, "azurerm_kubernetes_cluster_node_pool").values():
            if pool["name"] != "platform":
                found[pool["name"]] = (pool["min_count"], pool["max_count"], pool["priority"] == "Spot")
        sizes[name] = found
    return sizes


def test_preview_without_gpu_pools_and_with_the_organisations_owner_tag(tmp_path: Path) -> None:
    doc = cloud_doc()
    doc["previews"].update(max_gpu_nodes=0, owner_tag="owner")
    synth = preview_synth(tmp_path, doc)
    sizes = gpu_pool_sizes(synth)
    assert len(sizes) == 3  # one cluster stack per cloud, no shared stacks
    assert all(pools == {} for pools in sizes.values()), sizes  # max_gpu_nodes 0: no GPU pools at all
    for name in synth.stack_names():
        outputs = synth.stack(name)["output"]
        assert not {"node_group_name", "node_pool_name"} & set(outputs)
        # The owner goes under the organisation's key, and only there.
        tagged = [
            r.get("tags") or r.get("labels") or r.get("resource_labels") or {}
            for entries in synth.stack(name)["resource"].values()
            for r in entries.values()
        ]
        owners = [t["owner"] for t in tagged if "owner" in t]
        assert owners and set(owners) == {"dev-person-example-com"}
        assert not any("gpufleet-owner" in t for t in tagged)


def test_preview_gpu_cap_is_per_pool_and_spot_follows_the_file(tmp_path: Path) -> None:
    doc = cloud_doc()
    doc["clusters"] = [c for c in doc["clusters"] if c["cloud"] == "aws"]
    doc["clusters"][0]["gpu_pools"] = [
        {"name": "small", "instance_type": "g5.xlarge", "min_nodes": 1, "max_nodes": 2},
        {"name": "big", "instance_type": "g6.xlarge", "min_nodes": 2, "max_nodes": 5},
        {"name": "spotty", "instance_type": "g6.xlarge", "max_nodes": 4, "spot": True},
    ]
    doc["previews"].update(max_gpu_nodes=3, spot=False)
    synth = preview_synth(tmp_path, doc)
    ((stack, sizes),) = gpu_pool_sizes(synth).items()
    # min(pool max, 3) per pool; previews start at zero; on demand unless the pool itself asks for spot.
    assert sizes == {"small": (0, 2, False), "big": (0, 3, False), "spotty": (0, 3, True)}
    expected = expected_gpu_pools(doc["clusters"][0]["name"], preview=True, doc=doc)
    assert {e.name: (e.min_nodes, e.max_nodes, e.spot) for e in expected} == sizes

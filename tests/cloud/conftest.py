"""Synthesize the example fleet once per test session (provider imports are slow), and one preview."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.context import OUTDIR_ENV
from stacks.synth import QUIET_JSII
from tests.conftest import REPO

PREVIEW_BRANCH = "feature/Ünïcode-and-a-very-long-branch-name-for-previews"
PREVIEW_EXPIRES_AT = 1_900_000_000


@dataclass(frozen=True)
class Synthesized:
    outdir: Path
    manifest: dict[str, Any]

    def stack_names(self) -> list[str]:
        return list(self.manifest["stacks"])

    def stack(self, name: str) -> dict[str, Any]:
        return json.loads((self.outdir / "stacks" / name / "cdk.tf.json").read_text())

    def stacks(self) -> dict[str, dict[str, Any]]:
        return {name: self.stack(name) for name in self.stack_names()}

    def resources(self, stack: str, rtype: str) -> dict[str, dict[str, Any]]:
        return dict(self.stack(stack).get("resource", {}).get(rtype, {}))


def _synth(outdir: Path, **kw: Any) -> Synthesized:
    from stacks.synth import SynthOptions, synth_fleet

    options = SynthOptions(fleet_file=REPO / "fleet.yaml", environment="prod", **kw)
    # As `python -m stacks` does: tell each cloud's process where the output finally lands (the bootstrap
    # state path of shared stacks is relative to it).
    previous = os.environ.get(OUTDIR_ENV)
    os.environ[OUTDIR_ENV] = str(outdir.resolve())
    try:
        manifest = synth_fleet(["aws", "gcp", "azure"], options, outdir)
    finally:
        if previous is None:
            os.environ.pop(OUTDIR_ENV, None)
        else:
            os.environ[OUTDIR_ENV] = previous
    return Synthesized(outdir, manifest)


# --- expectations from the fleet document itself (not from the code that sizes the stacks) ----------

FLEET_DOC: dict[str, Any] = yaml.safe_load((REPO / "fleet.yaml").read_text())


@dataclass(frozen=True)
class ExpectedPool:
    name: str
    min_nodes: int
    max_nodes: int
    spot: bool


def expected_gpu_pools(cluster: str, preview: bool, doc: dict[str, Any] | None = None) -> list[ExpectedPool]:
    """The GPU pools a cluster's stack must contain, read from fleet.yaml: production as written (spec
    defaults: min 0, max 2, on demand); previews start at zero, hold at most previews.max_gpu_nodes per
    pool (no pool at all for 0) and run on spot when previews.spot (spec defaults 1 and true)."""
    doc = doc or FLEET_DOC
    (entry,) = [c for c in doc["clusters"] if c["name"] == cluster]
    previews = doc.get("previews", {})
    cap, preview_spot = previews.get("max_gpu_nodes", 1), previews.get("spot", True)
    pools: list[ExpectedPool] = []
    for pool in entry["gpu_pools"]:
        low, high, spot = pool.get("min_nodes", 0), pool.get("max_nodes", 2), pool.get("spot", False)
        if preview:
            if cap == 0:
                continue
            low, high, spot = 0, min(high, cap), spot or preview_spot
        pools.append(ExpectedPool(pool["name"], low, high, spot))
    return pools


def synth_one_cloud(
    workdir: Path, fleet_text: str, cloud: str, extra_env: dict[str, str] | None = None
) -> Synthesized:
    """`python -m stacks --cloud CLOUD` on a fleet.yaml written from fleet_text, as the cdktf CLI runs it."""
    fleet = workdir / "fleet.yaml"
    fleet.write_text(fleet_text)
    outdir = workdir / "out"
    env = {**os.environ, **QUIET_JSII, **(extra_env or {})}
    cmd = [sys.executable, "-m", "stacks", "--cloud", cloud, "--file", str(fleet), "--out", str(outdir)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return Synthesized(outdir, json.loads((outdir / "manifest.json").read_text()))


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    yield _synth(tmp_path_factory.mktemp("synth-prod"))


@pytest.fixture(scope="session")
def synthesized_preview(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    yield _synth(
        tmp_path_factory.mktemp("synth-preview"),
        branch=PREVIEW_BRANCH,
        owner="dev@example.com",
        expires_at=PREVIEW_EXPIRES_AT,
    )

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
    manifest = synth_fleet(["aws", "gcp", "azure"], options, outdir)
    return Synthesized(outdir, manifest)


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

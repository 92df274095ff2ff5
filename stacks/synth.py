"""Synthesize a fleet's stacks: each cloud in its own process, in parallel, merged into one cdktf.out.

A provider import costs 15-25 s and ~0.5-1 GB; three of them in one process cost the sum. In
separate processes a 3-cloud synth costs about the slowest one, and one cloud's fleet never pays
for the others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import FleetRuntimeError

CLOUD_ORDER = ("aws", "gcp", "azure")
# jsii prints a banner for Node releases it has not tested; the output is fine, the banner is noise.
QUIET_JSII = {
    "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
    "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "1",
}


@dataclass(frozen=True)
class SynthOptions:
    fleet_file: Path
    environment: str
    branch: str | None = None
    owner: str | None = None
    expires_at: int | None = None
    # A preview named directly (a sweep knows the environment from its tags, not the branch).
    preview_environment: str | None = None
    ttl_hours: int | None = None


def option_args(options: SynthOptions) -> list[str]:
    args = ["--file", str(options.fleet_file), "--env", options.environment]
    if options.branch is not None:
        args += ["--branch", options.branch]
    if options.owner is not None:
        args += ["--owner", options.owner]
    if options.expires_at is not None:
        args += ["--expires-at", str(options.expires_at)]
    if options.preview_environment is not None:
        args += ["--preview-env", options.preview_environment]
    if options.ttl_hours is not None:
        args += ["--ttl-hours", str(options.ttl_hours)]
    return args


def synth_cloud_subprocess(cloud: str, options: SynthOptions, outdir: Path) -> None:
    cmd = [sys.executable, "-m", "stacks", "--cloud", cloud, "--out", str(outdir), *option_args(options)]
    env = {**os.environ, **QUIET_JSII}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise FleetRuntimeError(f"synth of {cloud} stacks failed: {' | '.join(tail)}")


def merge_outputs(parts: list[Path], outdir: Path) -> dict[str, object]:
    """Merge per-cloud cdktf.out folders (stacks/ and manifest.json) into one that `cdktf deploy` reads."""
    (outdir / "stacks").mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {"version": None, "stacks": {}}
    stacks: dict[str, object] = {}
    for part in parts:
        data = json.loads((part / "manifest.json").read_text())
        manifest["version"] = data.get("version")
        for name, entry in data.get("stacks", {}).items():
            if name in stacks:
                raise FleetRuntimeError(f"two clouds produced a stack named {name}")
            stacks[name] = entry
            target = outdir / "stacks" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(part / "stacks" / name, target)
    manifest["stacks"] = dict(sorted(stacks.items()))
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def synth_fleet(clouds: Sequence[str], options: SynthOptions, outdir: Path) -> dict[str, object]:
    """Synthesize every cloud of the fleet into `outdir` (replacing stacks of earlier synths)."""
    ordered = [c for c in CLOUD_ORDER if c in clouds]
    if outdir.exists():
        shutil.rmtree(outdir / "stacks", ignore_errors=True)
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpufleet-synth-") as tmp:
        parts = [Path(tmp) / cloud for cloud in ordered]
        with ThreadPoolExecutor(max_workers=max(1, len(ordered))) as pool:
            list(
                pool.map(
                    lambda cp: synth_cloud_subprocess(cp[0], options, cp[1]), zip(ordered, parts, strict=True)
                )
            )
        return merge_outputs(parts, outdir)

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

from gpufleet.errors import FleetRuntimeError, UserError
from stacks.context import OUTDIR_ENV

CLOUD_ORDER = ("aws", "gcp", "azure")
MANIFEST = "manifest.json"
# What a synth writes at the top of its output folder (cdktf's own CLI writes the same two).
SYNTH_TOP_LEVEL = {MANIFEST, "stacks"}
STACK_FILE = "cdk.tf.json"  # what synth writes in each stack's folder
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


def synth_cloud_subprocess(cloud: str, options: SynthOptions, outdir: Path, final_outdir: Path) -> None:
    """Synthesize one cloud into `outdir` (a staging folder); `final_outdir` is where the stacks will
    live, which the bootstrap state path is relative to."""
    cmd = [sys.executable, "-m", "stacks", "--cloud", cloud, "--out", str(outdir), *option_args(options)]
    env = {**os.environ, **QUIET_JSII, OUTDIR_ENV: str(final_outdir)}
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
            shutil.copytree(part / "stacks" / name, outdir / "stacks" / name)
    manifest["stacks"] = dict(sorted(stacks.items()))
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def is_synth_output(folder: Path) -> bool:
    """True for a folder an earlier synth wrote: a cdktf manifest, a stacks/ folder, nothing else on top."""
    try:
        entries = {p.name for p in folder.iterdir()}
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(manifest, dict)
        and isinstance(manifest.get("stacks"), dict)
        and entries <= SYNTH_TOP_LEVEL
        and (folder / "stacks").is_dir()
    )


def output_problem(outdir: Path) -> str | None:
    """Why synth must not write into `outdir`, or None. It replaces the folder's stacks, so it only
    takes a new or empty folder or one that an earlier synth wrote (never, say, the repo itself)."""
    if not outdir.exists():
        return None
    if not outdir.is_dir():
        return f"{outdir} is a file; pass a folder (default cdktf.out)"
    if not any(outdir.iterdir()) or is_synth_output(outdir):
        return None
    return (
        f"{outdir} is neither empty nor an earlier synth output (no {MANIFEST} and stacks/ only); "
        "pass a new or empty folder (default cdktf.out)"
    )


def _carry_working_files(previous: Path, staged: Path) -> None:
    """Keep what Terraform wrote beside an earlier synth's stacks (.terraform/, lock files, local state):
    synth regenerates only its own files, and losing a bootstrap state would orphan real resources."""
    old_stacks = previous / "stacks"
    if not old_stacks.is_dir():
        return
    for stack in old_stacks.iterdir():
        if not stack.is_dir():
            continue
        target = staged / "stacks" / stack.name
        generated = {STACK_FILE, *(p.name for p in target.iterdir())} if target.is_dir() else {STACK_FILE}
        for entry in stack.iterdir():
            if entry.name not in generated:
                target.mkdir(parents=True, exist_ok=True)
                shutil.move(str(entry), str(target / entry.name))


def synth_fleet(clouds: Sequence[str], options: SynthOptions, outdir: Path) -> dict[str, object]:
    """Synthesize every cloud of the fleet and swap the result in as `outdir`.

    Everything is written to a staging folder beside `outdir` first: a failed synth leaves the last
    good output as it was, and the swap itself is two renames on one filesystem."""
    problem = output_problem(outdir)
    if problem:
        raise UserError(f"--out: {problem}")
    ordered = [c for c in CLOUD_ORDER if c in clouds]
    outdir = outdir.absolute()
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.synth-", dir=outdir.parent))
    try:
        parts = [staging / "parts" / cloud for cloud in ordered]
        with ThreadPoolExecutor(max_workers=max(1, len(ordered))) as pool:
            list(
                pool.map(
                    lambda cp: synth_cloud_subprocess(cp[0], options, cp[1], outdir),
                    zip(ordered, parts, strict=True),
                )
            )
        staged = staging / "out"
        manifest = merge_outputs(parts, staged)
        if outdir.exists():
            _carry_working_files(outdir, staged)
            outdir.rename(staging / "previous")
        staged.rename(outdir)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)

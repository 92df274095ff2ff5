"""`python -m stacks`: the cdktf app (see cdktf.json). Synthesizes the fleet's cloud stacks.

Without --cloud it runs one process per cloud in parallel and merges the results into the output
folder (`CDKTF_OUTDIR` when the cdktf CLI runs it, else --out, else cdktf.out). With --cloud it
builds that cloud's stacks in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gpufleet.environments import (
    DEFAULT_ENVIRONMENT,
    PREVIEW_PREFIX,
    environment_problem,
    preview_environment,
    preview_environment_problem,
)
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import FleetSpecError, load_fleet
from stacks.context import OUTDIR_ENV, StackContext
from stacks.synth import CLOUD_ORDER, SynthOptions, synth_fleet


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stacks", description=__doc__)
    p.add_argument("--file", default=os.environ.get("GPUFLEET_FILE", "fleet.yaml"))
    p.add_argument("--env", default=os.environ.get("GPUFLEET_ENV", DEFAULT_ENVIRONMENT))
    p.add_argument("--branch", default=os.environ.get("GPUFLEET_BRANCH"))
    p.add_argument("--owner", default=os.environ.get("GPUFLEET_OWNER"))
    p.add_argument("--expires-at", type=int, default=None)
    p.add_argument("--preview-env", default=None, help="A preview environment by name (pv-...).")
    p.add_argument("--ttl-hours", type=int, default=None)
    p.add_argument("--cloud", choices=CLOUD_ORDER)
    p.add_argument("--out", default=os.environ.get("CDKTF_OUTDIR", "cdktf.out"))
    return p.parse_args(argv)


def context_for(args: argparse.Namespace) -> StackContext:
    fleet = load_fleet(args.file)
    problem = environment_problem(args.env)
    if problem:
        raise UserError(f"--env: {problem}")
    if args.env.startswith(PREVIEW_PREFIX):
        # A pv- name here would synthesize a full-size environment that preview sweeps then treat as
        # a preview; previews are sized, tagged and destroyed only through the preview options.
        raise UserError(
            f"--env (or GPUFLEET_ENV): {args.env!r} starts with {PREVIEW_PREFIX!r}, which is reserved for "
            f"previews; pass --preview-env {args.env} (or --branch BRANCH) for a preview, and a normal "
            "environment (default prod) as --env"
        )
    if args.preview_env or args.branch:
        env = args.preview_env or preview_environment(args.branch)
        problem = preview_environment_problem(env)
        if problem:
            raise UserError(f"--preview-env: {problem}")
        return StackContext.for_preview(
            fleet,
            env,
            args.branch or "unknown",
            args.owner or "unknown",
            args.ttl_hours,
            args.expires_at,
            args.env,
        )
    return StackContext(
        fleet=fleet,
        environment=args.env,
        base_environment=args.env,
        fleet_dir=Path(args.file).resolve().parent,
        # The final output folder: a cloud's process may be synthesizing into a staging folder.
        outdir=Path(os.environ.get(OUTDIR_ENV) or args.out).resolve(),
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        ctx = context_for(args)
        if args.cloud:
            from stacks.app import build_app

            app, _ = build_app(ctx, args.cloud, Path(args.out))
            app.synth()
            return 0
        clouds = sorted({c.cloud for c in ctx.fleet.cloud_clusters()})
        if not clouds:
            raise UserError(f"{args.file}: clusters: no aws, gcp or azure cluster; nothing to synthesize")
        # One expiry for every cloud's process: computed here, passed down; likewise the final folder.
        expires_at = ctx.preview.expires_at if ctx.preview else None
        os.environ[OUTDIR_ENV] = str(Path(args.out).resolve())
        options = SynthOptions(
            Path(args.file), args.env, args.branch, args.owner, expires_at, args.preview_env, args.ttl_hours
        )
        manifest = synth_fleet(clouds, options, Path(args.out))
        stacks = manifest["stacks"]
        assert isinstance(stacks, dict)
        print(f"synthesized {len(stacks)} stacks into {args.out}: {', '.join(stacks)}")
        return 0
    except FleetSpecError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FleetRuntimeError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

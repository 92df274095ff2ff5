"""`gpufleet synth`: the fleet's cloud stacks as Terraform JSON, without the Node cdktf CLI."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli.app import DEFAULT_FILE, FileOption, app, console
from gpufleet.errors import UserError
from gpufleet.spec import load_fleet

EnvOption = Annotated[str, typer.Option("--env", envvar="GPUFLEET_ENV", help="Environment name.")]


def require_cloud_layer() -> None:
    if importlib.util.find_spec("cdktf") is None:
        raise UserError(
            "the cloud layer is not installed (no cdktf); run `make setup-all` or pip install -e '.[cloud]'"
        )


@app.command()
def synth(
    file: FileOption = DEFAULT_FILE,
    env: EnvOption = "prod",
    out: Annotated[Path, typer.Option("--out", help="Output folder (what `cdktf deploy` reads).")] = Path(
        "cdktf.out"
    ),
) -> None:
    """Synthesize the fleet's cloud stacks (Terraform JSON) without the Node cdktf CLI.

    The output replaces OUT only when synth succeeds; OUT must be new, empty or an earlier synth's."""
    from gpufleet.environments import base_environment_problem

    problem = base_environment_problem(env)
    if problem:
        raise UserError(f"--env: {problem}")
    fleet = load_fleet(file)
    clouds = sorted({c.cloud for c in fleet.cloud_clusters()})
    if not clouds:
        raise UserError(f"{file}: clusters: no aws, gcp or azure cluster; nothing to synthesize")
    from stacks.synth import output_problem  # plain Python: no cdktf import

    problem = output_problem(out)  # checked before synth runs, not after
    if problem:
        raise UserError(f"--out: {problem}")
    require_cloud_layer()
    from stacks.synth import SynthOptions, synth_fleet

    started = time.perf_counter()
    with console.status(f"synthesizing {', '.join(clouds)} stacks (one process per cloud)"):
        manifest = synth_fleet(clouds, SynthOptions(file, env), out)
    stacks = manifest["stacks"]
    assert isinstance(stacks, dict)
    console.print(f"synthesized {len(stacks)} stacks into {out} in {time.perf_counter() - started:.0f}s")
    for name in stacks:
        console.print(f"  {out}/stacks/{name}/cdk.tf.json", soft_wrap=True)

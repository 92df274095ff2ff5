"""`gpufleet validate`: check a fleet file and summarise it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpufleet.cli.app import DEFAULT_FILE, app, console
from gpufleet.spec import Fleet, load_fleet

# Sections a fleet file may declare that no command acts on yet, with what will act on them. An entry
# leaves this table when its command lands, so `validate` never implies that a setting has an effect.
NOT_YET_ACTED_ON = {
    "dr": "disaster-recovery rebuilds (`gpufleet dr`) are not built yet",
}


def declared_but_not_acted_on(fleet: Fleet) -> list[str]:
    """The NOT_YET_ACTED_ON sections this fleet sets explicitly (defaults do not count)."""
    declared = set(fleet.model_fields_set)
    return [section for section in NOT_YET_ACTED_ON if section in declared]


@app.command()
def validate(
    path: Annotated[
        Path | None, typer.Argument(help="Fleet file to check (same as --file).", show_default=False)
    ] = None,
    file: Annotated[
        Path, typer.Option("--file", "-f", envvar="GPUFLEET_FILE", help="Fleet file.")
    ] = DEFAULT_FILE,
) -> None:
    """Check a fleet file; print a summary, or one line per mistake (exit 2)."""
    file = path or file
    fleet = load_fleet(file)
    table = Table(title=f"{file}: fleet '{fleet.name}' is valid")
    for col in ("cluster", "cloud", "wave", "where", "capacity"):
        table.add_column(col)
    for c in sorted(fleet.clusters, key=lambda c: (c.wave, c.name)):
        if c.cloud == "local":
            where, capacity = "127.0.0.1", f"{c.replicas} triton replicas (CPU)"
        else:
            where = f"{c.region}, Kubernetes {c.kubernetes_version}"
            capacity = ", ".join(
                f"{p.name}: {p.min_nodes}-{p.max_nodes} x {p.instance_type} ({p.gpu_count} x {p.gpu_type})"
                + (" spot" if p.spot else "")
                for p in c.gpu_pools
            )
        table.add_row(c.name, c.cloud, str(c.wave), where, capacity)
    console.print(table)
    models = ", ".join(m.name for m in fleet.models) or "none"
    steps = " → ".join(f"{s}%" for s in fleet.rollout.steps)
    console.print(
        f"models: {models}   rollout: {steps}   store: {fleet.model_store.bucket}/{fleet.model_store.prefix}"
    )
    for section in declared_but_not_acted_on(fleet):
        console.print(
            f"note: {section} is declared but no command acts on it yet ({NOT_YET_ACTED_ON[section]})",
            soft_wrap=True,
        )

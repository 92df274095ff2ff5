"""The Typer application every command group registers on, and what they share: consoles and options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpufleet import __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gpufleet {__version__}")
        raise typer.Exit()


app = typer.Typer(
    help="Declare a GPU inference fleet in fleet.yaml; run it locally or on EKS/GKE/AKS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Declare a GPU inference fleet in fleet.yaml; run it locally or on EKS/GKE/AKS."""


console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width

DEFAULT_FILE = Path("fleet.yaml")
DEFAULT_HOME = Path(".gpufleet")

FileOption = Annotated[
    Path, typer.Option("--file", "-f", envvar="GPUFLEET_FILE", help="Fleet file.", show_default=True)
]
HomeOption = Annotated[
    Path,
    typer.Option(
        "--home", envvar="GPUFLEET_HOME", help="Where the local fleet keeps pids, ports, configs, logs."
    ),
]
# For commands on a running fleet: default is the file the fleet was started from.
RunningFileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", envvar="GPUFLEET_FILE", help="Fleet file (default: the running one's)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

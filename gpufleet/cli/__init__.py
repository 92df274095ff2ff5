"""The `gpufleet` command line: one module per command group, all on one Typer app.

Commands import their heavy parts inside the command, so that `gpufleet --help` and
`gpufleet status` stay fast (no cdktf, no provider bindings)."""

from __future__ import annotations

from gpufleet.cli import configure, engine, fleet, model, preview, rollout, serve, synth, validate  # noqa: F401  (registers the commands)
from gpufleet.cli.app import app
from gpufleet.cli.errors import run

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: every error ends in one line and its exit code (see gpufleet.cli.errors)."""
    run(app)

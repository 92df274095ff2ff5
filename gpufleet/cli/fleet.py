"""The local fleet's lifecycle: `up`, `down`, `status`, `logs`."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gpufleet.cli.app import DEFAULT_FILE, DEFAULT_HOME, FileOption, HomeOption, JsonOption, app, console
from gpufleet.cli.running import local_fleet, usable_home
from gpufleet.errors import UserError
from gpufleet.spec import load_fleet

if TYPE_CHECKING:
    from gpufleet.local.fleet import FleetEndpoints, ProcessStatus


@app.command()
def up(
    file: FileOption = DEFAULT_FILE,
    home: HomeOption = DEFAULT_HOME,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each stage to be healthy.")] = 180.0,
) -> None:
    """Start (or converge) the local fleet: S3 store, Triton replicas, proxies, Prometheus."""
    fleet_up(file, home, timeout)


def fleet_up(file: Path, home: Path, timeout: float = 180.0) -> FleetEndpoints:
    from pipelines.engines.local_fleet import publish_missing, serve_recorded

    fleet = load_fleet(file)  # before the home is touched: a bad file creates nothing
    local = local_fleet(usable_home(home, create=True))

    def publish(endpoints: FleetEndpoints) -> None:
        publish_missing(fleet, file, local.object_store(endpoints), local.home, local.report)

    def serve(endpoints: FleetEndpoints) -> None:
        serve_recorded(fleet, local, endpoints, local.object_store(endpoints), local.report)

    with console.status("bringing the local fleet up (store, Triton replicas, proxies, Prometheus)"):
        endpoints = local.up(fleet, file, timeout_s=timeout, on_store_ready=publish, on_replicas_ready=serve)
    console.print(
        f"[green]local fleet up[/green] ({len(endpoints.clusters)} clusters); `gpufleet status` shows it"
    )
    return endpoints


@app.command()
def down(home: HomeOption = DEFAULT_HOME) -> None:
    """Stop everything `up` started (also after a crash); leaves logs in place."""
    if not home.exists():
        console.print(f"no local fleet in {home}; nothing to stop")
        return
    stopped = local_fleet(home).down()
    console.print(f"stopped {len(stopped)} processes" + (f": {', '.join(stopped)}" if stopped else ""))


def _status_json(rows: list[ProcessStatus], endpoints: FleetEndpoints | None) -> str:
    return json.dumps(
        {
            "running": bool(rows),
            "ready": bool(rows) and all(r.ready for r in rows),
            "processes": [asdict(r) for r in rows],
            "endpoints": asdict(endpoints) if endpoints else None,
        },
        indent=2,
    )


@app.command()
def status(home: HomeOption = DEFAULT_HOME, as_json: JsonOption = False) -> None:
    """Show every local process: ready or not, models and versions loaded, URLs.

    Exit 0 when every process is ready, 1 otherwise (nothing running included)."""
    show_status(home, as_json)


def show_status(home: Path, as_json: bool = False) -> None:
    local = local_fleet(home)
    rows = local.status() if home.exists() else []
    endpoints = local.endpoints() if rows else None
    if as_json:
        typer.echo(_status_json(rows, endpoints))
    elif not rows:
        console.print(f"no local fleet is running from {home}; start one with `gpufleet up`")
    else:
        console.print(_status_table(rows))
        if endpoints:
            console.print(
                f"Prometheus: {endpoints.prometheus_url}   model store (S3 API): {endpoints.store_url}",
                soft_wrap=True,
            )
    if not rows or not all(r.ready for r in rows):
        raise typer.Exit(1)


def _status_table(rows: list[ProcessStatus]) -> Table:
    table = Table(title="local fleet")
    # A cut URL (http://127.0.0.…) or process name (what `gpufleet logs` takes) cannot be copied:
    # those columns are as wide as their longest value; the others give way.
    table.add_column("cluster")
    table.add_column("process", no_wrap=True, min_width=max(len(r.name) for r in rows))
    for col in ("pid", "ready", "models loaded"):
        table.add_column(col)
    table.add_column("url", no_wrap=True, min_width=max(len(r.url) for r in rows))
    for r in rows:
        ready = (
            "[green]ready[/green]"
            if r.ready
            else ("[yellow]up, not ready[/yellow]" if r.alive else "[red]down[/red]")
        )
        table.add_row(r.cluster or "-", r.name, str(r.pid), ready, ", ".join(r.models) or "-", r.url)
    return table


def _log_file(home: Path, process: str) -> Path:
    logs = home / "logs"
    tracked = local_fleet(home).table.tracked() if home.exists() else {}
    if process in tracked:
        return Path(tracked[process].log)
    candidate = logs / f"{process}.log"
    if candidate.is_file():  # a process of an earlier run: its log stays after `down`
        return candidate
    known = sorted({*tracked, *(p.stem for p in logs.glob("*.log"))}) if logs.is_dir() else sorted(tracked)
    if not known:
        raise UserError(f"no logs in {home}; start the fleet with `gpufleet up`")
    raise UserError(f"no process '{process}' in {home}; use one of: {', '.join(known)}")


@app.command()
def logs(
    process: Annotated[str, typer.Argument(help="Process name as `gpufleet status` shows it.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="Lines from the end to show first.")
    ] = 50,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Print a local process's log (every error names the log; this is how to read it)."""
    path = _log_file(home, process)
    with path.open("r", errors="replace") as log:
        for line in deque(log, maxlen=lines) if lines else ():
            typer.echo(line, nl=False)
        if not lines:
            log.seek(0, 2)
        try:
            while follow:
                line = log.readline()
                if line:
                    typer.echo(line, nl=False)
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:  # the way out of --follow, not a failure
            return

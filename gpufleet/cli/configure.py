"""`gpufleet configure CLUSTER`: driver, container toolkit, GPU operator, autoscaler, monitoring (Ansible)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gpufleet.cli.app import DEFAULT_FILE, DEFAULT_HOME, FileOption, HomeOption, app, console
from gpufleet.errors import FleetRuntimeError
from gpufleet.spec import load_fleet

if TYPE_CHECKING:
    from pipelines.configure.runner import RunProgress, TaskFailure, TaskNote

CONFIGURE_DIR = "configure"  # under the home: one ansible-runner private data dir per cluster
COLUMNS = ("host", "ok", "changed", "failed", "skipped", "unreachable")


def _counts_table(progress: RunProgress, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "host" else "right")
    for host, counts in sorted(progress.hosts.items()):
        ok, changed, failed, skipped, unreachable = counts.as_row()
        bad = "[red]" if failed or unreachable else ""
        table.add_row(
            host,
            str(ok),
            f"[yellow]{changed}[/yellow]" if changed else "0",
            f"{bad}{failed}" if failed else "0",
            str(skipped),
            f"{bad}{unreachable}" if unreachable else "0",
        )
    return table


def _live_view(progress: RunProgress) -> Group:
    task = Text.assemble(("task ", "dim"), (progress.task or "starting", "bold"))
    play = Text(progress.play, style="dim")
    return Group(play, task, _counts_table(progress, "so far"))


@app.command()
def configure(
    cluster: Annotated[str, typer.Argument(help="The cluster to configure (a name in the fleet file).")],
    check: Annotated[
        bool, typer.Option("--check", help="Ansible check mode: report what would change, change nothing.")
    ] = False,
    outputs: Annotated[
        Path | None,
        typer.Option(
            "--outputs",
            help="Stack outputs file from `cdktf deploy --outputs-file` (default: `terraform output` "
            "in the synthesized stack).",
        ),
    ] = None,
    file: FileOption = DEFAULT_FILE,
    home: HomeOption = DEFAULT_HOME,
    env: Annotated[
        str, typer.Option("--env", envvar="GPUFLEET_ENV", help="Environment of the stacks.")
    ] = "prod",
    out: Annotated[Path, typer.Option("--out", help="Synth output folder (where the stacks are).")] = Path(
        "cdktf.out"
    ),
) -> None:
    """Make the cluster's GPUs schedulable: run playbooks/site.yml on it with ansible-runner.

    Cloud clusters: inventory and kubeconfig from the deployed stack's outputs (its API must be reachable
    from here). Local clusters: localhost; the roles find no GPU or Kubernetes API and say so."""
    from gpufleet.cli.running import usable_home
    from pipelines.configure.inventory import prepare
    from pipelines.configure.runner import require_ansible, run_playbook

    fleet = load_fleet(file)
    require_ansible()
    workdir = usable_home(home, create=True).resolve() / CONFIGURE_DIR / cluster
    prepared = prepare(fleet, cluster, workdir, environment=env, outputs_file=outputs, synth_dir=out)
    target = prepared.target
    mode = " (check mode: nothing is changed)" if check else ""
    console.print(f"configuring [bold]{cluster}[/bold] (node kind {target.node_kind}){mode}")
    if prepared.kubeconfig:
        console.print(f"kubeconfig: {prepared.kubeconfig}", soft_wrap=True)

    with Live(_live_view_placeholder(), console=console, transient=True, refresh_per_second=8) as live:

        def on_event(progress: RunProgress, shown: TaskNote | TaskFailure | None) -> None:
            from pipelines.configure.runner import TaskFailure

            if isinstance(shown, TaskFailure):
                live.console.print(f"[red]{shown.line()}[/red]", soft_wrap=True, highlight=False)
            elif shown is not None:
                live.console.print(
                    f"[dim]{shown.host}:[/dim] {shown.message}", soft_wrap=True, highlight=False
                )
            live.update(_live_view(progress))

        result = run_playbook(
            workdir, prepared.inventory, prepared.extra_vars, check=check, on_event=on_event
        )

    verdict = "[green]ok[/green]" if result.ok else "[red]failed[/red]"
    console.print(_counts_table(result.progress, f"{cluster}: per-host summary{mode}"))
    console.print(f"{verdict}; ansible-runner artifacts: {result.artifacts}", soft_wrap=True)
    if not result.ok:
        raise FleetRuntimeError(result.failure_line())


def _live_view_placeholder() -> Text:
    return Text("starting ansible-playbook", style="dim")

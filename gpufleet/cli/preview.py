"""`gpufleet preview`: per-branch preview environments on the fleet's clouds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gpufleet.cli.app import DEFAULT_FILE, FileOption, app, console
from gpufleet.errors import UserError
from gpufleet.spec import Fleet, load_fleet

if TYPE_CHECKING:
    from pipelines.previews.inventory import PreviewSummary
    from pipelines.previews.pricing import CostEstimate

preview_app = typer.Typer(help="Per-branch preview environments on the fleet's clouds.", no_args_is_help=True)
app.add_typer(preview_app, name="preview")

BranchOption = Annotated[str, typer.Option("--branch", "-b", help="Git branch the preview is for.")]
BaseEnvOption = Annotated[
    str,
    typer.Option("--env", envvar="GPUFLEET_ENV", help="Environment whose state bucket and store it reuses."),
]
PreviewOutOption = Annotated[
    Path, typer.Option("--out", help="Where previews' synthesized stacks go (one folder per preview).")
]
DEFAULT_PREVIEW_OUT = Path("cdktf.out.previews")


def _git_owner() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _print_estimate(estimate: CostEstimate, cap: float) -> None:
    from pipelines.previews.pricing import ESTIMATE_COLUMNS, estimate_rows

    table = Table(title="estimated preview cost (upper bound: every node pool at its maximum, all day)")
    for col in ESTIMATE_COLUMNS:
        table.add_column(col, justify="right" if col == "$/h" else "left")
    for row in estimate_rows(estimate):
        table.add_row(*row)
    console.print(table)
    verdict = "[green]within[/green]" if estimate.usd_per_day <= cap else "[red]above[/red]"
    console.print(
        f"total ${estimate.usd_per_hour:.2f}/h = ${estimate.usd_per_day:.2f}/day, {verdict} "
        f"previews.cost_cap_usd_per_day ${cap:g}"
    )


def _warn_unverified(lines: tuple[str, ...]) -> None:
    for line in lines:
        console.print(f"[yellow]not verified:[/yellow] {line}", soft_wrap=True)


@preview_app.command("up")
def preview_up_command(
    branch: BranchOption,
    file: FileOption = DEFAULT_FILE,
    env: BaseEnvOption = "prod",
    owner: Annotated[str | None, typer.Option(help="Owner tag (default: git user.email).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without Terraform's prompts.")] = False,
    out: PreviewOutOption = DEFAULT_PREVIEW_OUT,
) -> None:
    """Synthesize the branch's preview, price what it builds, refuse it above the cap, then deploy it."""
    from gpufleet.environments import base_environment_problem, preview_environment
    from pipelines.previews.lifecycle import preview_up

    problem = base_environment_problem(env)
    if problem:
        raise UserError(f"--env: {problem}")
    fleet = load_fleet(file)
    environment = preview_environment(branch)
    console.print(f"preview environment for branch {branch!r}: [bold]{environment}[/bold]")
    # No spinner: Terraform may prompt on this terminal (without --yes).
    console.print(f"synthesizing {environment} to price what it builds")
    result = preview_up(
        file,
        fleet,
        branch,
        owner or _git_owner(),
        out / environment,
        yes=yes,
        base_environment=env,
        show_estimate=lambda estimate: _print_estimate(estimate, fleet.previews.cost_cap_usd_per_day),
    )
    console.print(f"[green]preview {result.environment} deployed[/green]: {', '.join(result.stacks)}")


@preview_app.command("down")
def preview_down_command(
    branch: BranchOption,
    file: FileOption = DEFAULT_FILE,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Base environment; only for a preview whose clusters are gone (else read from its tags).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Destroy without Terraform's prompts.")] = False,
    out: PreviewOutOption = DEFAULT_PREVIEW_OUT,
) -> None:
    """`cdktf destroy` the branch's preview in the state its own tags name, then check it is gone."""
    from gpufleet.environments import preview_environment
    from pipelines.previews.lifecycle import preview_down

    fleet = load_fleet(file)
    environment = preview_environment(branch)
    result = preview_down(file, fleet, branch, out / environment, yes=yes, base_environment=env)
    _warn_unverified(result.unverified)
    console.print(f"preview {result.environment} destroyed: {', '.join(result.stacks)}")


def _previews(fleet: Fleet, estimate: CostEstimate | None = None) -> list[PreviewSummary]:
    from pipelines.previews.inventory import group_previews, list_previews

    inventory = list_previews(fleet)
    for note in inventory.notes:
        console.print(note, soft_wrap=True, markup=False)
    return group_previews(inventory.records, fleet=fleet, estimate=estimate)


@preview_app.command("list")
def preview_list_command(
    file: FileOption = DEFAULT_FILE,
    cost: Annotated[
        bool,
        typer.Option("--cost", help="Also estimate the cost so far (synthesizes a preview to price)."),
    ] = False,
    out: PreviewOutOption = DEFAULT_PREVIEW_OUT,
) -> None:
    """Every preview found by its tags: age, TTL left, and with --cost the estimated cost so far."""
    fleet = load_fleet(file)
    estimate = None
    if cost:
        from pipelines.previews.pricing import estimate_preview

        with console.status("synthesizing a preview of this fleet to price it"):
            estimate = estimate_preview(file, fleet, out / "cost-estimate")
    summaries = _previews(fleet, estimate)
    table = Table(title=f"previews ({len(summaries)})")
    for col in ("environment", "fleet", "branch", "owner", "clouds", "age h", "ttl left h", "cost so far $"):
        table.add_column(col)
    for p in summaries:
        spent = "-" if p.cost_so_far_usd is None else f"{p.cost_so_far_usd:.2f}"
        ttl = (
            f"{p.ttl_left_hours:.1f}"
            if p.ttl_left_hours >= 0
            else f"[red]expired {-p.ttl_left_hours:.1f}h ago[/red]"
        )
        table.add_row(
            p.environment, p.fleet, p.branch, p.owner, ",".join(p.clouds), f"{p.age_hours:.1f}", ttl, spent
        )
    console.print(table)


def _ask_before_destroying(expired: list[PreviewSummary]) -> bool:
    import sys

    if not sys.stdin.isatty():  # a job with nobody to answer: refuse rather than hang or guess
        raise UserError(
            f"preview sweep: {len(expired)} expired previews to destroy and no terminal to confirm on; "
            "pass --yes to destroy them without asking (or --dry-run to list them)"
        )
    console.print(f"{len(expired)} expired previews will be destroyed:")
    for p in expired:
        console.print(f"  {p.environment} (branch {p.branch}, owner {p.owner}, clouds {','.join(p.clouds)})")
    return typer.confirm("destroy them?", default=False)


@preview_app.command("sweep")
def preview_sweep_command(
    file: FileOption = DEFAULT_FILE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be destroyed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Destroy without asking first.")] = False,
    out: PreviewOutOption = DEFAULT_PREVIEW_OUT,
) -> None:
    """Destroy every expired preview of this fleet (found by tags), each in the state its tags name."""
    import time

    from pipelines.previews.lifecycle import preview_destroyer, sweep

    fleet = load_fleet(file)
    mine = [p for p in _previews(fleet) if p.fleet == fleet.name]
    destroyer = preview_destroyer(file, fleet, out)
    outcome = sweep(
        mine,
        time.time(),
        destroyer,
        confirm=(lambda _expired: True) if yes else _ask_before_destroying,
        dry_run=dry_run,
    )
    _warn_unverified(outcome.unverified)
    if outcome.declined:
        console.print("nothing destroyed (not confirmed)")
        return
    chosen = outcome.expired if dry_run else outcome.destroyed
    verb = "would destroy" if dry_run else "destroyed"
    console.print(
        f"{verb} {len(chosen)} expired previews"
        + (": " if chosen else "")
        + ", ".join(p.environment for p in chosen)
    )

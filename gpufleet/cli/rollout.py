"""`gpufleet rollout`: canary a model version through the fleet's clusters, wave by wave.

start · status · abort · resume · report. The driver (pipelines/rollout/driver.py) persists every
transition in the model store before applying it, so a killed `start` is continued by `resume` (or
by the same `start` again) from exactly where it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gpufleet.cli.app import DEFAULT_HOME, HomeOption, JsonOption, RunningFileOption, app, console
from gpufleet.cli.running import local_fleet, model_of, running_endpoints
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import load_fleet

if TYPE_CHECKING:
    from gpufleet.local.fleet import FleetEndpoints
    from gpufleet.spec import Fleet, ModelSpec
    from pipelines.rollout.driver import RolloutDriver, Update
    from pipelines.rollout.local import LocalRolloutCluster
    from pipelines.rollout.state import RolloutState, RolloutStore
    from pipelines.rollout.waves import ClusterJudgement

rollout_app = typer.Typer(
    help="Canary rollouts: a new model version through every cluster, step by step, judged and rolled "
    "back automatically.",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")

ModelArgument = Annotated[str, typer.Argument(help="Model name from the fleet file.")]
ReportDir = Annotated[
    Path | None, typer.Option("--report-dir", help="Where the rollout report goes (default: <home>/reports).")
]
LoadRps = Annotated[
    float | None,
    typer.Option(
        "--load-rps",
        min=1,
        max=5000,
        help="Local fleet: send this many requests per second through each cluster's proxy while the "
        "rollout runs (the judge needs traffic; a real fleet has its own).",
    ),
]


@dataclass(frozen=True)
class Context:
    fleet: Fleet
    spec: ModelSpec
    endpoints: FleetEndpoints
    clusters: dict[str, LocalRolloutCluster]
    rollouts: RolloutStore
    home: Path


def _context(home: Path, file: Path | None, model: str) -> Context:
    from pipelines.rollout.local import local_clusters
    from pipelines.rollout.state import RolloutStore

    endpoints = running_endpoints(home)
    fleet = load_fleet(file or Path(endpoints.fleet_file))
    spec = model_of(fleet, model)
    local = local_fleet(home)
    store = local.object_store(endpoints)
    clusters = local_clusters(fleet, local, endpoints, store, lambda m: None)
    return Context(fleet, spec, endpoints, clusters, RolloutStore(store), home)


@rollout_app.command("start")
def start_command(
    model: ModelArgument,
    version: Annotated[int, typer.Argument(min=1, help="The candidate version (published in the store).")],
    min_bake_seconds: Annotated[
        float | None, typer.Option(min=1, help="Override rollout.min_bake_seconds (e.g. to try it out).")
    ] = None,
    min_samples: Annotated[
        int | None, typer.Option(min=10, help="Override rollout.min_samples (canary requests per step).")
    ] = None,
    max_bake_seconds: Annotated[
        float | None, typer.Option(min=1, help="Longest a step may bake without being shown healthy.")
    ] = None,
    window_seconds: Annotated[
        float, typer.Option(min=2, max=300, help="How often the judge looks (at least the scrape interval).")
    ] = 5.0,
    load_rps: LoadRps = None,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    report_dir: ReportDir = None,
) -> None:
    """Roll VERSION of MODEL out: gate, then 1% → 10% → 50% → 100% per wave, or roll back."""
    final = start_rollout(
        home,
        file,
        model,
        version,
        min_bake_seconds=min_bake_seconds,
        min_samples=min_samples,
        max_bake_seconds=max_bake_seconds,
        window_seconds=window_seconds,
        load_rps=load_rps,
        report_dir=report_dir,
    )
    _exit_unless_promoted(final)


def start_rollout(
    home: Path,
    file: Path | None,
    model: str,
    version: int,
    *,
    min_bake_seconds: float | None = None,
    min_samples: int | None = None,
    max_bake_seconds: float | None = None,
    window_seconds: float = 5.0,
    load_rps: float | None = None,
    report_dir: Path | None = None,
) -> RolloutState:
    """`rollout start` without the exit code: the final state (the demo runs two of them)."""
    from pipelines.rollout.driver import plan_rollout, plan_waves, settings_from_spec
    from pipelines.rollout.state import RolloutInProgress, lease_is_live

    ctx = _context(home, file, model)
    settings = settings_from_spec(
        ctx.fleet.rollout,
        min_bake_seconds=min_bake_seconds,
        min_samples=min_samples,
        max_bake_seconds=max_bake_seconds,
        window_seconds=window_seconds,
    )
    if settings.max_bake_seconds < settings.min_bake_seconds:
        raise UserError(
            f"--max-bake-seconds {settings.max_bake_seconds:g} is below the minimum bake "
            f"({settings.min_bake_seconds:g} s); give a larger one"
        )
    waves, left_out = plan_waves(ctx.fleet, ctx.clusters)
    if left_out:
        console.print(
            f"[dim]not in this rollout: {', '.join(left_out)} (not running here; the local fleet runs "
            f"{', '.join(ctx.clusters)})[/dim]",
            soft_wrap=True,
        )
    active = ctx.rollouts.active(model)
    if active is not None:
        same = active.state.candidate == version and not active.state.finished
        if not same or lease_is_live(active.state.driver, time.time()):
            raise RolloutInProgress(active.state)
        console.print(
            f"rollout {active.state.rollout_id} of version {version} was left by a dead driver: resuming it"
        )
        return _drive(ctx, lambda d: d.resume(), load_rps, report_dir)
    state = plan_rollout(
        ctx.spec,
        version,
        list(ctx.fleet.rollout.steps),
        settings,
        waves,
        ctx.clusters,
        ctx.rollouts.store,
        time.time(),
    )
    console.print(
        f"rollout {state.rollout_id}: {model} {state.stable} → {state.candidate}, steps {state.steps}, "
        f"waves {' → '.join('+'.join(w) for w in state.waves)}",
        soft_wrap=True,
        highlight=False,
    )
    return _drive(ctx, lambda d: d.start(state), load_rps, report_dir)


@rollout_app.command("resume")
def resume_command(
    model: ModelArgument,
    force: Annotated[
        bool, typer.Option("--force", help="Take over even though the recorded driver looks alive.")
    ] = False,
    load_rps: LoadRps = None,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    report_dir: ReportDir = None,
) -> None:
    """Continue the model's rollout after its driver died: reconcile every cluster, then go on."""
    ctx = _context(home, file, model)
    if ctx.rollouts.active(model) is None:  # said before the live view starts, so it is the only output
        raise UserError(f"model {model} has no rollout in progress; start one with `gpufleet rollout start`")
    _exit_unless_promoted(_drive(ctx, lambda d: d.resume(force=force), load_rps, report_dir))


@rollout_app.command("abort")
def abort_command(
    model: ModelArgument,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    report_dir: ReportDir = None,
) -> None:
    """Stop the model's rollout: every touched cluster returns to the stable version."""
    from pipelines.rollout.driver import ABORT_WAIT_S, request_abort

    ctx = _context(home, file, model)
    claim, live = request_abort(ctx.rollouts, model, time.time())
    if live:
        driver = claim.state.driver
        assert driver is not None
        with console.status(f"the driver (pid {driver.pid} on {driver.host}) is rolling back"):
            deadline = time.monotonic() + ABORT_WAIT_S
            while time.monotonic() < deadline:
                if ctx.rollouts.active(model) is None:
                    final = ctx.rollouts.find(model, claim.state.rollout_id)
                    if final is not None:
                        _summary(final, _write_report(ctx, final, report_dir))
                    return
                time.sleep(0.5)
        raise FleetRuntimeError(
            f"abort recorded, but the driver (pid {driver.pid}) has not finished rolling back within "
            f"{ABORT_WAIT_S:.0f} s; if it is stuck, stop it and run `gpufleet rollout resume {model}`"
        )
    _drive(ctx, lambda d: d.resume(force=True), None, report_dir)  # aborted: exit 0


@rollout_app.command("status")
def status_command(
    model: ModelArgument,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    as_json: JsonOption = False,
) -> None:
    """The model's rollout in progress (or the last one): phase, step, weights, why."""
    ctx = _context(home, file, model)
    state = ctx.rollouts.find(model)
    promoted = ctx.rollouts.promoted(model)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "rollout": state.model_dump(mode="json") if state else None,
                    "promoted": promoted.model_dump(mode="json") if promoted else None,
                },
                indent=2,
            )
        )
        return
    if state is None:
        console.print(f"{model}: no rollout yet")
        return
    console.print(_view(state, "", {}))
    if promoted:
        console.print(
            f"promoted: version {promoted.version} (rollout {promoted.rollout_id})", highlight=False
        )


@rollout_app.command("report")
def report_command(
    model: ModelArgument,
    rollout_id: Annotated[str | None, typer.Argument(help="Default: the latest rollout.")] = None,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    report_dir: ReportDir = None,
) -> None:
    """Write the HTML and PNG report of a rollout (the latest by default)."""
    ctx = _context(home, file, model)
    state = ctx.rollouts.find(model, rollout_id)
    if state is None:
        raise UserError(f"model {model}: no rollout {rollout_id or ''} in the store".replace("  ", " "))
    for path in _write_report(ctx, state, report_dir):
        console.print(f"report: {path}", soft_wrap=True)


# --- driving ----------------------------------------------------------------------------------


def _drive(
    ctx: Context,
    how: Callable[[RolloutDriver], RolloutState],
    load_rps: float | None,
    report_dir: Path | None,
) -> RolloutState:
    """Drive the rollout with the live view (and the optional load), then summarise and report."""
    from pipelines.rollout.driver import RolloutDriver

    live = Live(Text("starting"), console=console, refresh_per_second=4, transient=False)

    last: dict[str, ClusterJudgement] = {}

    def show(update: Update) -> None:
        last.update(update.judged)  # a state change without a window keeps the latest verdicts shown
        live.update(_view(update.state, update.message, last))

    driver = RolloutDriver(ctx.rollouts, ctx.spec, ctx.clusters, on_update=show)
    with ExitStack() as stack:
        stack.enter_context(_background_load(ctx, load_rps))
        stack.enter_context(live)
        final = how(driver)
    if not console.is_terminal:
        console.line()  # a non-terminal Live ends without a newline after its last frame
    _summary(final, _write_report(ctx, final, report_dir))
    return final


def _exit_unless_promoted(final: RolloutState) -> None:
    if final.phase != "promoted":
        raise typer.Exit(1)


@contextmanager
def _background_load(ctx: Context, rps: float | None) -> Iterator[None]:
    if rps is None:
        yield
        return
    from gpufleet.loadgen import BackgroundLoad

    loads = [BackgroundLoad(c.proxy_url, ctx.spec, rps) for c in ctx.endpoints.clusters]
    for load in loads:
        load.start()
    try:
        yield
    finally:
        for load in loads:
            load.stop()


def _write_report(ctx: Context, state: RolloutState, report_dir: Path | None) -> list[Path]:
    from pipelines.rollout.journal import WindowJournal
    from pipelines.rollout.report import write_rollout_report

    records = WindowJournal(ctx.rollouts.store, state.model, state.rollout_id).records()
    folder = report_dir or ctx.home / "reports"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return list(write_rollout_report(folder, state, records))
    except OSError as exc:
        raise UserError(
            f"--report-dir {folder}: cannot write the report ({exc.strerror or exc}); pass a writable folder"
        ) from None


def _summary(state: RolloutState, reports: list[Path]) -> None:
    colour = {"promoted": "green", "rolled_back": "red", "aborted": "yellow"}.get(state.phase, "white")
    took = state.updated_at - state.started_at
    console.print(
        f"[bold {colour}]{state.model} version {state.candidate}: {state.phase.replace('_', ' ')}[/] "
        f"after {took:.0f} s" + (f" — {state.reason}" if state.reason else ""),
        soft_wrap=True,
        highlight=False,
    )
    for path in reports:
        console.print(f"report: {path}", soft_wrap=True)


def _view(state: RolloutState, message: str, judged: Mapping[str, ClusterJudgement]) -> Table:
    """The live view: one row per cluster (weight, traffic and errors per version, verdict)."""
    table = Table(
        title=f"rollout {state.rollout_id}: {state.model} {state.stable} → {state.candidate} · {state.phase}",
        title_justify="left",
    )
    for col in ("wave", "cluster", "status", "canary %", "canary req/err", "stable req/err", "verdict"):
        table.add_column(col, justify="right" if "req" in col or "%" in col else "left")
    for index, wave in enumerate(state.waves, start=1):
        for name in wave:
            progress = state.clusters[name]
            found = judged.get(name)
            verdict = found.verdict if found else None
            canary = stable = why = ""
            if verdict is not None:
                canary = f"{verdict.canary_requests_total}/{verdict.canary_errors_total}"
                stable = f"{verdict.baseline_requests_total}/{verdict.baseline_errors_total}"
                why = f"{verdict.decision.value}: {verdict.reason}"
            table.add_row(str(index), name, progress.status, str(progress.weight), canary, stable, why)
    table.caption = message
    return table

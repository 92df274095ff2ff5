"""The `gpufleet` command line. Commands import their heavy parts inside the command, so that
`gpufleet --help` and `gpufleet status` stay fast (no cdktf, no provider bindings)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import Fleet, FleetSpecError, load_fleet

if TYPE_CHECKING:
    from gpufleet.local.fleet import FleetEndpoints, LocalFleet
    from gpufleet.spec import ModelSpec
    from pipelines.previews.inventory import PreviewSummary
    from pipelines.previews.pricing import CostEstimate

app = typer.Typer(
    help="Declare a GPU inference fleet in fleet.yaml; run it locally or on EKS/GKE/AKS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width

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
DEFAULT_FILE = Path("fleet.yaml")
DEFAULT_HOME = Path(".gpufleet")


def _fleet_for_running(home: Path, file: Path | None) -> tuple[Fleet, Path]:
    """The fleet file given, else the one the running local fleet was started from."""
    from gpufleet.local.fleet import LocalFleet

    if file is None:
        endpoints = LocalFleet(home).endpoints()
        file = Path(endpoints.fleet_file) if endpoints else DEFAULT_FILE
    return load_fleet(file), file


def _local(home: Path) -> LocalFleet:
    from gpufleet.local.fleet import LocalFleet

    return LocalFleet(home, report=lambda msg: console.log(msg))


def _running_endpoints(home: Path) -> FleetEndpoints:
    endpoints = _local(home).endpoints()
    if endpoints is None:
        raise UserError(f"no local fleet is running from {home}; start one with `gpufleet up`")
    return endpoints


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Fleet file to check.")] = DEFAULT_FILE) -> None:
    """Check a fleet file; print a summary, or one line per mistake (exit 2)."""
    fleet = load_fleet(file)
    table = Table(title=f"{file}: fleet '{fleet.name}' is valid")
    for col in ("cluster", "cloud", "wave", "where", "capacity"):
        table.add_column(col)
    for c in sorted(fleet.clusters, key=lambda c: (c.wave, c.name)):
        if c.cloud == "local":
            where, capacity = "127.0.0.1", f"{c.replicas} triton replicas (CPU)"
        else:
            where = c.region
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


@app.command()
def up(
    file: FileOption = DEFAULT_FILE,
    home: HomeOption = DEFAULT_HOME,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each stage to be healthy.")] = 180.0,
) -> None:
    """Start (or converge) the local fleet: S3 store, Triton replicas, proxies, Prometheus."""
    fleet = load_fleet(file)
    with console.status("bringing the local fleet up"):
        endpoints = _local(home).up(fleet, file, timeout_s=timeout)
    console.print(
        f"[green]local fleet up[/green] ({len(endpoints.clusters)} clusters); `gpufleet status` shows it"
    )


@app.command()
def down(home: HomeOption = DEFAULT_HOME) -> None:
    """Stop everything `up` started (also after a crash); leaves logs in place."""
    stopped = _local(home).down()
    console.print(f"stopped {len(stopped)} processes" + (f": {', '.join(stopped)}" if stopped else ""))


@app.command()
def status(home: HomeOption = DEFAULT_HOME) -> None:
    """Show every local process: ready or not, models and versions loaded, URLs."""
    local = _local(home)
    rows = local.status()
    if not rows:
        console.print(f"no local fleet is running from {home}; start one with `gpufleet up`")
        return
    table = Table(title="local fleet")
    for col in ("cluster", "process", "pid", "ready", "models loaded", "url"):
        table.add_column(col)
    for r in rows:
        ready = (
            "[green]ready[/green]"
            if r.ready
            else ("[yellow]up, not ready[/yellow]" if r.alive else "[red]down[/red]")
        )
        table.add_row(r.cluster or "-", r.name, str(r.pid), ready, ", ".join(r.models) or "-", r.url)
    console.print(table)
    endpoints = local.endpoints()
    if endpoints:
        console.print(f"Prometheus: {endpoints.prometheus_url}   model store (S3 API): {endpoints.store_url}")
    if not all(r.ready for r in rows):
        raise typer.Exit(1)


@app.command()
def infer(
    cluster: Annotated[str, typer.Argument(help="Local cluster to send the request to (through its proxy).")],
    model: Annotated[str, typer.Argument(help="Model name from the fleet file.")],
    version: Annotated[
        str, typer.Option(help="Ask for one version (default: the one the proxy routes to).")
    ] = "",
    home: HomeOption = DEFAULT_HOME,
    file: RunningFileOption = None,
) -> None:
    """Send one inference request through a cluster's proxy and print the result."""
    from gpufleet.loadgen import infer_once

    spec, endpoints = _running_model(home, file, model)
    target = endpoints.cluster(cluster)
    try:
        outputs = infer_once(target.proxy_url, spec, version)
    except Exception as exc:
        raise FleetRuntimeError(f"infer {model} on {cluster} via {target.proxy_url} failed: {exc}") from exc
    for name, value in outputs.items():
        shown = value.astype(float).round(4).tolist()  # float64 first: float32 digits print as noise
        console.print(f"{cluster}/{model} {name} {list(value.shape)}: {shown}")


def _running_model(home: Path, file: Path | None, model: str) -> tuple[ModelSpec, FleetEndpoints]:
    """A model of the running local fleet, and where that fleet answers."""
    fleet, _ = _fleet_for_running(home, file)
    return _model(fleet, model), _running_endpoints(home)


def _model(fleet: Fleet, name: str) -> ModelSpec:
    try:
        return fleet.model(name)
    except KeyError:
        known = ", ".join(m.name for m in fleet.models) or "none declared"
        raise UserError(f"model '{name}' is not in the fleet file; use one of: {known}") from None


@app.command()
def load(
    model: Annotated[str, typer.Argument(help="Model name from the fleet file.")],
    clusters: Annotated[
        list[str] | None, typer.Option("--cluster", "-c", help="Cluster(s); default: all.")
    ] = None,
    requests: Annotated[int, typer.Option(min=1, max=1_000_000, help="Requests per cluster.")] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Parallel connections.")] = 4,
    max_seconds: Annotated[float, typer.Option(min=1, help="Stop after this long per cluster.")] = 120.0,
    home: HomeOption = DEFAULT_HOME,
    file: RunningFileOption = None,
) -> None:
    """Send a bounded load through each cluster's proxy; print p50/p99 latency and throughput."""
    spec, endpoints = _running_model(home, file, model)
    names = clusters or [c.name for c in endpoints.clusters]
    _load_table(endpoints, spec, names, requests, concurrency, max_seconds)


def _load_table(
    endpoints: FleetEndpoints,
    spec: ModelSpec,
    clusters: list[str],
    requests: int,
    concurrency: int,
    max_seconds: float,
) -> dict[str, float]:
    """Run the load per cluster, print the table, return successful requests per cluster."""
    from gpufleet.loadgen import run_load

    results = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for name in clusters:
            target = endpoints.cluster(name)
            task = progress.add_task(f"{name} ← {spec.name}", total=requests)
            results[name] = run_load(
                target.proxy_url,
                spec,
                requests,
                concurrency,
                max_seconds,
                on_done=lambda n, t=task: progress.advance(t, n),  # type: ignore[misc]
            )
    table = Table(title=f"{spec.name}: load through each cluster's proxy (concurrency {concurrency})")
    for col in ("cluster", "requests", "errors", "p50 ms", "p99 ms", "throughput req/s"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            str(r.requests),
            str(r.errors),
            f"{r.percentile_ms(50):.2f}",
            f"{r.percentile_ms(99):.2f}",
            f"{r.throughput_rps:.0f}",
        )
    console.print(table)
    from gpufleet.reports import write_load_report

    console.print(f"report: {write_load_report(Path('reports'), spec.name, concurrency, results)}")
    if any(r.errors for r in results.values()):
        raise FleetRuntimeError("some requests failed; see the table above and `gpufleet status`")
    return {name: float(r.requests - r.errors) for name, r in results.items()}


@app.command()
def demo(
    file: FileOption = DEFAULT_FILE,
    home: HomeOption = DEFAULT_HOME,
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="Requests per cluster.")] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, max=64)] = 4,
) -> None:
    """The local story: fleet up, demo model served on every replica, load through each proxy."""
    fleet = load_fleet(file)
    if not fleet.models:
        raise UserError(f"{file}: models: none declared; add one (e.g. source: builtin:mlp) to run the demo")
    local = _local(home)
    with console.status("bringing the local fleet up (store, Triton replicas, proxies, Prometheus)"):
        endpoints = local.up(fleet, file)
    status(home)
    first = fleet.models[0]
    for c in endpoints.clusters:
        infer(c.name, first.name, home=home, file=file)
    sent = _load_table(endpoints, first, [c.name for c in endpoints.clusters], requests, concurrency, 300.0)

    from gpufleet.metrics import wait_for_successes

    with console.status("waiting for Prometheus to scrape the replicas"):
        seen = wait_for_successes(endpoints.prometheus_url, first.name, sent)
    console.print(
        "Prometheus sees nv_inference_request_success: "
        + ", ".join(f"{c} {seen.get(c, 0):.0f}" for c in sent)
        + f" (≥ {requests} sent through each proxy)"
    )
    console.print(
        "\n[bold]The fleet is still up.[/bold]\n"
        f"  look:  gpufleet status   ·   Prometheus {endpoints.prometheus_url}/graph"
        "?g0.expr=sum%20by%20(cluster%2Cversion)%20(rate(nv_inference_request_success%5B30s%5D))\n"
        f"  ask:   gpufleet infer {endpoints.clusters[0].name} {first.name}\n"
        "  stop:  gpufleet down",
        soft_wrap=True,
    )


@app.command()
def synth(
    file: FileOption = DEFAULT_FILE,
    env: Annotated[str, typer.Option("--env", envvar="GPUFLEET_ENV", help="Environment name.")] = "prod",
    out: Annotated[Path, typer.Option("--out", help="Output folder (what `cdktf deploy` reads).")] = Path(
        "cdktf.out"
    ),
) -> None:
    """Synthesize the fleet's cloud stacks (Terraform JSON) without the Node cdktf CLI."""
    import time

    from gpufleet.environments import environment_problem

    problem = environment_problem(env)
    if problem:
        raise UserError(f"--env: {problem}")
    fleet = load_fleet(file)
    clouds = sorted({c.cloud for c in fleet.cloud_clusters()})
    if not clouds:
        raise UserError(f"{file}: clusters: no aws, gcp or azure cluster; nothing to synthesize")
    import importlib.util

    if importlib.util.find_spec("cdktf") is None:
        raise UserError(
            "the cloud layer is not installed (no cdktf); run `make setup-all` or pip install -e '.[cloud]'"
        )
    from stacks.synth import SynthOptions, synth_fleet

    started = time.perf_counter()
    with console.status(f"synthesizing {', '.join(clouds)} stacks (one process per cloud)"):
        manifest = synth_fleet(clouds, SynthOptions(file, env), out)
    stacks = manifest["stacks"]
    assert isinstance(stacks, dict)
    console.print(f"synthesized {len(stacks)} stacks into {out} in {time.perf_counter() - started:.0f}s")
    for name in stacks:
        console.print(f"  {out}/stacks/{name}/cdk.tf.json")


preview_app = typer.Typer(help="Per-branch preview environments on the fleet's clouds.", no_args_is_help=True)
app.add_typer(preview_app, name="preview")
BranchOption = Annotated[str, typer.Option("--branch", "-b", help="Git branch the preview is for.")]
BaseEnvOption = Annotated[
    str,
    typer.Option("--env", envvar="GPUFLEET_ENV", help="Environment whose state bucket and store it reuses."),
]


def _git_owner() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _print_estimate(estimate: CostEstimate, cap: float) -> None:
    table = Table(title="estimated preview cost (upper bound: every GPU pool at 1 node, all day)")
    for col in ("cluster", "cloud", "item", "detail", "$/h"):
        table.add_column(col, justify="right" if col == "$/h" else "left")
    for cluster in estimate.clusters:
        for item in cluster.items:
            table.add_row(cluster.cluster, cluster.cloud, item.name, item.detail, f"{item.usd_per_hour:.4f}")
    console.print(table)
    verdict = "[green]within[/green]" if estimate.usd_per_day <= cap else "[red]above[/red]"
    console.print(
        f"total ${estimate.usd_per_hour:.2f}/h = ${estimate.usd_per_day:.2f}/day, {verdict} "
        f"previews.cost_cap_usd_per_day ${cap:g}"
    )


@preview_app.command("up")
def preview_up_command(
    branch: BranchOption,
    file: FileOption = DEFAULT_FILE,
    env: BaseEnvOption = "prod",
    owner: Annotated[str | None, typer.Option(help="Owner tag (default: git user.email).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without Terraform's prompts.")] = False,
) -> None:
    """Estimate the cost, refuse it above the cap, then `cdktf deploy` the branch's preview."""
    from gpufleet.environments import preview_environment
    from pipelines.previews.lifecycle import preview_up
    from pipelines.previews.pricing import estimate_preview

    fleet = load_fleet(file)
    environment = preview_environment(branch)
    console.print(f"preview environment for branch {branch!r}: [bold]{environment}[/bold]")
    _print_estimate(estimate_preview(fleet), fleet.previews.cost_cap_usd_per_day)
    result = preview_up(
        file,
        fleet,
        branch,
        owner or _git_owner(),
        Path("cdktf.out.previews") / environment,
        yes=yes,
        base_environment=env,
    )
    console.print(f"[green]preview {result.environment} deployed[/green]: {', '.join(result.stacks)}")


@preview_app.command("down")
def preview_down_command(
    branch: BranchOption,
    file: FileOption = DEFAULT_FILE,
    env: BaseEnvOption = "prod",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Destroy without Terraform's prompts.")] = False,
) -> None:
    """`cdktf destroy` the branch's preview."""
    from gpufleet.environments import preview_environment
    from pipelines.previews.lifecycle import preview_down

    fleet = load_fleet(file)
    environment = preview_environment(branch)
    result = preview_down(
        file,
        fleet,
        branch,
        _git_owner(),
        Path("cdktf.out.previews") / environment,
        yes=yes,
        base_environment=env,
    )
    console.print(f"preview {result.environment} destroyed: {', '.join(result.stacks)}")


def _previews(fleet: Fleet) -> list[PreviewSummary]:
    from pipelines.previews.inventory import group_previews, list_previews

    inventory = list_previews(fleet)
    for note in inventory.notes:
        console.print(note, soft_wrap=True, markup=False)
    return group_previews(inventory.records, fleet=fleet)


@preview_app.command("list")
def preview_list_command(file: FileOption = DEFAULT_FILE) -> None:
    """Every preview found by its tags: age, TTL left, estimated cost so far."""
    fleet = load_fleet(file)
    summaries = _previews(fleet)
    table = Table(title=f"previews ({len(summaries)})")
    for col in ("environment", "fleet", "branch", "owner", "clouds", "age h", "ttl left h", "cost so far $"):
        table.add_column(col)
    for p in summaries:
        cost = "?" if p.cost_so_far_usd is None else f"{p.cost_so_far_usd:.2f}"
        ttl = (
            f"{p.ttl_left_hours:.1f}"
            if p.ttl_left_hours >= 0
            else f"[red]expired {-p.ttl_left_hours:.1f}h ago[/red]"
        )
        table.add_row(
            p.environment, p.fleet, p.branch, p.owner, ",".join(p.clouds), f"{p.age_hours:.1f}", ttl, cost
        )
    console.print(table)


@preview_app.command("sweep")
def preview_sweep_command(
    file: FileOption = DEFAULT_FILE,
    env: BaseEnvOption = "prod",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be destroyed.")] = False,
) -> None:
    """Destroy every expired preview of this fleet (found by tags)."""
    import time

    from pipelines.previews.lifecycle import preview_destroyer, sweep

    fleet = load_fleet(file)
    mine = [p for p in _previews(fleet) if p.fleet == fleet.name]
    destroyer = preview_destroyer(file, fleet, Path("cdktf.out.previews"), base_environment=env)
    expired = sweep(mine, time.time(), destroyer, dry_run=dry_run)
    verb = "would destroy" if dry_run else "destroyed"
    console.print(
        f"{verb} {len(expired)} expired previews"
        + (": " if expired else "")
        + ", ".join(p.environment for p in expired)
    )


def main() -> None:
    """Entry point: user mistakes → one line and exit 2; runtime failures → one line and exit 1."""
    try:
        app()
    except FleetSpecError as exc:
        for line in exc.errors:
            err_console.print(f"error: {line}", markup=False, highlight=False)
        sys.exit(2)
    except UserError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except FleetRuntimeError as exc:
        err_console.print(f"failed: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)

"""Talking to the running local fleet's models: `infer`, `load`, and the whole story, `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpufleet.cli.app import (
    DEFAULT_FILE,
    DEFAULT_HOME,
    FileOption,
    HomeOption,
    RunningFileOption,
    app,
    console,
)
from gpufleet.cli.fleet import fleet_up, show_status
from gpufleet.cli.running import running_model
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import load_fleet

if TYPE_CHECKING:
    from gpufleet.local.fleet import FleetEndpoints
    from gpufleet.spec import ModelSpec
    from pipelines.rollout.state import RolloutState

ReportDirOption = Annotated[
    Path | None,
    typer.Option("--report-dir", help="Where the HTML load report goes (default: <home>/reports)."),
]


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
    spec, endpoints = running_model(home, file, model)
    infer_one(endpoints, cluster, spec, version)


def infer_one(endpoints: FleetEndpoints, cluster: str, spec: ModelSpec, version: str = "") -> None:
    from gpufleet.loadgen import infer_once

    target = endpoints.cluster(cluster)
    try:
        outputs = infer_once(target.proxy_url, spec, version)
    except Exception as exc:  # any client/server failure of the request: one line naming the target
        raise FleetRuntimeError(
            f"infer {spec.name} on {cluster} via {target.proxy_url} failed: {exc}"
        ) from exc
    for name, value in outputs.items():
        shown = value.astype(float).round(4).tolist()  # float64 first: float32 digits print as noise
        console.print(f"{cluster}/{spec.name} {name} {list(value.shape)}: {shown}")


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
    report_dir: ReportDirOption = None,
) -> None:
    """Send a bounded load through each cluster's proxy; print p50/p99 latency and throughput."""
    spec, endpoints = running_model(home, file, model)
    names = clusters or [c.name for c in endpoints.clusters]
    for name in names:
        endpoints.cluster(name)  # an unknown cluster is refused before any load runs
    load_table(endpoints, spec, names, requests, concurrency, max_seconds, report_dir or home / "reports")


def load_table(
    endpoints: FleetEndpoints,
    spec: ModelSpec,
    clusters: list[str],
    requests: int,
    concurrency: int,
    max_seconds: float,
    report_dir: Path,
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

    try:
        report = write_load_report(report_dir, spec.name, concurrency, results)
    except OSError as exc:
        raise UserError(
            f"--report-dir {report_dir}: cannot write the report ({exc.strerror or exc}); "
            "pass a writable folder"
        ) from None
    console.print(f"report: {report}", soft_wrap=True)
    if any(r.errors for r in results.values()):
        raise FleetRuntimeError("some requests failed; see the table above and `gpufleet status`")
    return {name: float(r.requests - r.errors) for name, r in results.items()}


@app.command()
def demo(
    file: FileOption = DEFAULT_FILE,
    home: HomeOption = DEFAULT_HOME,
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="Requests per cluster.")] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, max=64)] = 4,
    report_dir: ReportDirOption = None,
) -> None:
    """The local story: fleet up, demo model served on every replica, load through each proxy."""
    fleet = load_fleet(file)
    if not fleet.models:
        raise UserError(f"{file}: models: none declared; add one (e.g. source: builtin:mlp) to run the demo")
    endpoints = fleet_up(file, home)
    try:
        show_status(home)
    except typer.Exit as exc:
        if exc.exit_code:
            raise FleetRuntimeError(
                "the fleet came up but a process is not ready; see the table above"
            ) from None
    first = fleet.models[0]
    for c in endpoints.clusters:
        infer_one(endpoints, c.name, first)
    sent = load_table(
        endpoints,
        first,
        [c.name for c in endpoints.clusters],
        requests,
        concurrency,
        300.0,
        report_dir or home / "reports",
    )

    from gpufleet.metrics import wait_for_successes

    with console.status("waiting for Prometheus to scrape the replicas"):
        seen = wait_for_successes(endpoints.prometheus_url, first.name, sent)
    console.print(
        "Prometheus sees nv_inference_request_success: "
        + ", ".join(f"{c} {seen.get(c, 0):.0f}" for c in sent)
        + f" (≥ {requests} sent through each proxy)"
    )
    _engine_story(file, home, endpoints, first)
    console.print(
        "\n[bold]The fleet is still up.[/bold]\n"
        f"  look:  gpufleet status   ·   Prometheus {endpoints.prometheus_url}/graph"
        "?g0.expr=sum%20by%20(cluster%2Cversion)%20(rate(nv_inference_request_success%5B30s%5D))\n"
        f"  ask:   gpufleet infer {endpoints.clusters[0].name} {first.name}\n"
        "  stop:  gpufleet down",
        soft_wrap=True,
    )


def _engine_story(file: Path, home: Path, endpoints: FleetEndpoints, model: ModelSpec) -> None:
    """Build, push and load a new version of the demo model with the `engine` commands themselves."""
    from gpufleet.cli.engine import build_command, push_engine
    from gpufleet.cli.model import list_command

    console.rule(f"a new version of {model.name}: engine build → engine push → rollout")
    console.print(
        f"(`gpufleet up` published the first version the same way: engine build + engine push of the "
        f"cpu package.) Rebuilding {model.name}: the same ONNX file and runner, a new engine.json.",
        soft_wrap=True,
    )
    build_command(model.name, target="cpu", file=file, out=None, home=home, hardware_compatibility=None)
    pushed = push_engine(model.name, file=file, home=home)
    console.print(
        f"unchanged files were not uploaded again: {', '.join(pushed.copied) or 'none'} (copied inside "
        f"the store from the previous version); uploaded: {', '.join(pushed.uploaded) or 'none'}",
        soft_wrap=True,
        highlight=False,
    )
    list_command(file=file, home=home, store_url=None, endpoint=None, as_json=False)
    _rollout_story(file, home, model, pushed.version)


# The demo bakes each step for seconds, not the fleet file's minutes, and drives its own traffic.
DEMO_MIN_BAKE_S = 10.0
DEMO_MIN_SAMPLES = 50
DEMO_LOAD_RPS = 150.0
# v3's regression: 5 % of calls fail, and 1 in 10 is 40 ms slower, after each model instance's first 60
# calls (the gate's few dozen requests see a healthy version; the canary traffic does not).
DEMO_FAULT = {"error_rate": "0.05", "latency_ms": "40", "slow_share": "0.1", "after": "60"}


def _rollout_story(file: Path, home: Path, model: ModelSpec, healthy: int) -> None:
    """Canary the healthy version through every wave, then a regressed one that must roll back."""
    from gpufleet.cli.engine import build_command, push_engine
    from gpufleet.cli.rollout import start_rollout

    def roll_out(version: int) -> RolloutState:
        return start_rollout(
            home,
            file,
            model.name,
            version,
            min_bake_seconds=DEMO_MIN_BAKE_S,
            min_samples=DEMO_MIN_SAMPLES,
            load_rps=DEMO_LOAD_RPS,
        )

    console.rule(f"canary rollout of {model.name} version {healthy} (healthy)")
    console.print(
        f"gate on every replica, then steps through each wave; the demo bakes {DEMO_MIN_BAKE_S:g} s and "
        f"{DEMO_MIN_SAMPLES} canary requests per step (fleet.yaml's rollout section has the real minimums) "
        f"and sends {DEMO_LOAD_RPS:g} req/s through each cluster's proxy",
        soft_wrap=True,
    )
    first = roll_out(healthy)
    console.rule(f"a regressed version of {model.name}: errors and a slow tail, injected at build")
    build_command(
        model.name,
        target="cpu",
        file=file,
        out=None,
        home=home,
        hardware_compatibility=None,
        inject_error_rate=DEMO_FAULT["error_rate"],
        inject_latency_ms=DEMO_FAULT["latency_ms"],
        inject_slow_share=DEMO_FAULT["slow_share"],
        inject_after=DEMO_FAULT["after"],
    )
    regressed = push_engine(model.name, file=file, home=home)
    second = roll_out(regressed.version)
    table = Table(title="rollouts")
    for col in ("rollout", "version", "outcome", "took", "why"):
        table.add_column(col)
    for state in (first, second):
        table.add_row(
            state.rollout_id,
            f"{state.stable} → {state.candidate}",
            state.phase.replace("_", " "),
            f"{state.updated_at - state.started_at:.0f} s",
            state.reason or "",
        )
    console.print(table)
    if (first.phase, second.phase) != ("promoted", "rolled_back"):
        raise FleetRuntimeError(
            f"the demo expected version {first.candidate} promoted and {second.candidate} rolled back; got "
            f"{first.phase} and {second.phase}: see the reports above"
        )

"""`gpufleet engine`: build a model's serving package, push it into the model store as a new version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer

from gpufleet.cli.app import (
    DEFAULT_FILE,
    DEFAULT_HOME,
    FileOption,
    HomeOption,
    RunningFileOption,
    app,
    console,
)
from gpufleet.cli.running import local_fleet, model_of, usable_home
from gpufleet.errors import UserError
from gpufleet.spec import load_fleet

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from gpufleet.local.fleet import FleetEndpoints, LocalFleet
    from gpufleet.objectstore import ObjectStore
    from gpufleet.spec import Fleet, ModelSpec
    from pipelines.engines.push import PushResult

engine_app = typer.Typer(
    help="Engines: build a model's serving package, push it into the model store.", no_args_is_help=True
)
app.add_typer(engine_app, name="engine")

ModelArgument = Annotated[str, typer.Argument(help="Model name from the fleet file.")]
TargetOption = Annotated[
    str,
    typer.Option(
        "--target", "-t", help="cpu, or a GPU architecture from the model's engine_targets (e.g. sm80)."
    ),
]


@engine_app.command("build")
def build_command(
    model: ModelArgument,
    target: TargetOption = "cpu",
    file: FileOption = DEFAULT_FILE,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Package folder (default: <home>/engines/<model>/<target>)."),
    ] = None,
    home: HomeOption = DEFAULT_HOME,
    hardware_compatibility: Annotated[
        str | None,
        typer.Option(
            "--hardware-compatibility",
            help="TensorRT plans only: none, same_compute_capability, or ampere_plus (runs on any sm80+); "
            "default: the engine target's hardware_compatibility in the fleet file.",
            show_default=False,
        ),
    ] = None,
    inject_error_rate: Annotated[
        str | None,
        typer.Option(
            "--inject-error-rate",
            metavar="R",
            help="cpu only, for demos and tests: share (0..1) of execute() calls that fail.",
            show_default=False,
        ),
    ] = None,
    inject_latency_ms: Annotated[
        str | None,
        typer.Option(
            "--inject-latency-ms",
            metavar="MS",
            help="cpu only: extra milliseconds a slow call sleeps.",
            show_default=False,
        ),
    ] = None,
    inject_slow_share: Annotated[
        str | None,
        typer.Option(
            "--inject-slow-share",
            metavar="S",
            help="cpu only: share (0..1) of calls that get the extra latency (default 1; 0.05 = a tail-only "
            "p99 regression).",
            show_default=False,
        ),
    ] = None,
    inject_after: Annotated[
        str | None,
        typer.Option(
            "--inject-after",
            metavar="N",
            help="cpu only: each replica serves its first N calls normally before the fault starts "
            "(default 0).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Build MODEL's package for one target: model files plus engine.json (versions, GPU, signature).

    The --inject-* options build a deliberately faulty CPU package (fault.json, recorded in engine.json
    as injected_fault): a regressed version for demos and tests of rollouts."""
    from pipelines.engines.build import ENGINES_FOLDER, build_engine, default_package_dir
    from pipelines.engines.fault import fault_from_options
    from pipelines.engines.metadata import HardwareCompatibility

    fault = fault_from_options(
        target=target,
        error_rate=inject_error_rate,
        latency_ms=inject_latency_ms,
        slow_share=inject_slow_share,
        after=inject_after,
    )
    levels: tuple[str, ...] = get_args(HardwareCompatibility)
    if hardware_compatibility is not None and hardware_compatibility not in levels:
        raise UserError(
            f"--hardware-compatibility {hardware_compatibility!r}: use one of {', '.join(levels)}"
        )
    spec = model_of(load_fleet(file), model)
    if hardware_compatibility is None:
        declared = next((t for t in spec.engine_targets if t.gpu_arch == target.strip().lower()), None)
        hardware_compatibility = declared.hardware_compatibility if declared else "none"
    folder = out or default_package_dir(usable_home(home, create=True), model, target.strip().lower())
    built = build_engine(
        spec,
        target=target,
        out=folder,
        timing_cache=home / ENGINES_FOLDER / ".timing-cache",
        hardware_compatibility=hardware_compatibility,  # type: ignore[arg-type]  # checked against levels
        fault=fault,
    )
    meta = built.metadata
    where = f"{meta.gpu.name} ({meta.gpu.compute_capability})" if meta.gpu else "CPU"
    console.print(
        f"built {model} for {meta.target}: {meta.format} ({meta.runtime}, {meta.precision}) on {where} "
        f"in {built.folder}",
        soft_wrap=True,
    )
    if meta.injected_fault is not None:
        console.print(
            f"warning: injected fault: {meta.injected_fault.describe()} (fault.json, engine.json "
            "injected_fault); a regressed version for demos and tests, not for serving",
            style="yellow",
            soft_wrap=True,
            highlight=False,
        )


@engine_app.command("push")
def push_command(
    model: ModelArgument,
    version: Annotated[
        int | None,
        typer.Option("--version", min=1, help="Publish as this version number (default: the next free one)."),
    ] = None,
    from_dir: Annotated[
        Path | None,
        typer.Option("--from", help="Package folder (default: <home>/engines/<model>/<target>)."),
    ] = None,
    target: TargetOption = "cpu",
    store_url: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or a Blob container URL (default: the running local "
            "fleet's store).",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="With --store: an S3-compatible endpoint URL or the GCS emulator's."),
    ] = None,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Push a built package as a new version: files, config.pbtxt, then manifest.json last.

    A push that was killed completes when run again; an unchanged package uploads nothing."""
    push_engine(model, version, from_dir, target, store_url, endpoint, file, home)


def push_engine(
    model: str,
    version: int | None = None,
    from_dir: Path | None = None,
    target: str = "cpu",
    store_url: str | None = None,
    endpoint: str | None = None,
    file: Path | None = None,
    home: Path = DEFAULT_HOME,
) -> PushResult:
    """`engine push` as a function (the demo runs it too): push, print the outcome, return it."""
    from pipelines.engines.build import default_package_dir
    from pipelines.engines.local_fleet import JOURNAL_FOLDER
    from pipelines.engines.package import read_package
    from pipelines.engines.push import git_lineage, push_package

    if endpoint and not store_url:
        raise UserError("--endpoint: only with --store (the local fleet's store has its own endpoint)")
    spec, store, fleet_file = _model_and_store(home, file, model, store_url, endpoint)
    folder = from_dir or default_package_dir(home, model, target.strip().lower())
    package = read_package(folder)
    journal_dir = usable_home(home, create=True) / JOURNAL_FOLDER
    with _ByteProgress(f"pushing {model}") as progress:
        result = push_package(
            store,
            spec,
            package,
            journal_dir=journal_dir,
            version=version,
            lineage=git_lineage(fleet_file.resolve().parent),
            progress=progress,
        )
    _print_result(result, store.url)
    return result


def _model_and_store(
    home: Path, file: Path | None, model: str, store_url: str | None, endpoint: str | None
) -> tuple[ModelSpec, ObjectStore, Path]:
    from gpufleet.objectstore import open_store

    if store_url:
        fleet_file = file or DEFAULT_FILE
        return model_of(load_fleet(fleet_file), model), open_store(store_url, endpoint=endpoint), fleet_file
    endpoints = local_fleet(home).endpoints() if home.exists() else None
    if endpoints is None:
        raise UserError(
            f"no local fleet is running from {home}: start one with `gpufleet up`, or pass --store URL"
        )
    fleet_file = file or Path(endpoints.fleet_file)
    return model_of(load_fleet(fleet_file), model), local_fleet(home).object_store(endpoints), fleet_file


def _print_result(result: PushResult, url: str) -> None:
    if result.already_published:
        console.print(
            f"{result.model} version {result.version} in {url} already holds this package; nothing uploaded",
            soft_wrap=True,
            highlight=False,
        )
    else:
        how = " (completed an interrupted push)" if result.resumed else ""
        console.print(
            f"pushed {result.model} version {result.version} to {url}{how}", soft_wrap=True, highlight=False
        )
    typer.echo(
        f"version={result.version} bytes_uploaded={result.bytes_uploaded} "
        f"files_uploaded={len(result.uploaded)} files_copied={len(result.copied)} "
        f"files_skipped={len(result.skipped)}"
    )


class _ByteProgress:
    """A Rich bar of bytes for a terminal; notes as plain lines either way."""

    def __init__(self, label: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.label = label
        self.bar: Progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> _ByteProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def note(self, text: str) -> None:
        self.bar.console.print(text, soft_wrap=True)

    def begin(self, total_bytes: int) -> None:
        self.task = self.bar.add_task(self.label, total=total_bytes)

    def advance(self, done_bytes: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, done_bytes)


ClusterArgument = Annotated[
    str, typer.Argument(help="Cluster from the fleet file (local clusters are loaded).")
]
VersionArgument = Annotated[int, typer.Argument(min=1, help="A published version of the model.")]


@engine_app.command("load")
def load_command(
    cluster: ClusterArgument,
    model: ModelArgument,
    version: VersionArgument,
    only: Annotated[
        bool, typer.Option("--only", help="Serve only this version (the others are unloaded).")
    ] = False,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Serve VERSION on every replica of CLUSTER, beside what it serves (--only: instead of it).

    Refused before any replica is touched when the engine cannot run on the cluster's GPUs (or CPU),
    when its signature differs from the versions served, or when a stored file does not match the
    manifest's sha256. Each replica is loaded through its own repository API and checked on its own."""
    from pipelines.engines.local_fleet import currently_served

    fleet, spec, endpoints, local = _running(home, file, model, cluster)
    served = [] if only else currently_served(local, endpoints, cluster, model)
    versions = sorted({*served, version})
    _serve(local, endpoints, fleet, cluster, spec, versions, f"loaded {model} version {version}")


@engine_app.command("unload")
def unload_command(
    cluster: ClusterArgument,
    model: ModelArgument,
    version: VersionArgument,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Stop serving VERSION on every replica of CLUSTER; the other versions stay."""
    from pipelines.engines.local_fleet import currently_served

    fleet, spec, endpoints, local = _running(home, file, model, cluster)
    served = currently_served(local, endpoints, cluster, model)
    if version not in served:
        shown = ", ".join(map(str, served)) or "none"
        raise UserError(f"{cluster} does not serve {model} version {version} (it serves: {shown})")
    rest = [v for v in served if v != version]
    if not rest:
        raise UserError(
            f"{model} version {version} is the only version {cluster} serves; load another one first "
            f"(`gpufleet engine load {cluster} {model} N --only` swaps them)"
        )
    _serve(local, endpoints, fleet, cluster, spec, rest, f"unloaded {model} version {version}")


def _running(
    home: Path, file: Path | None, model: str, cluster: str
) -> tuple[Fleet, ModelSpec, FleetEndpoints, LocalFleet]:
    """The fleet file, the model, the running fleet and its runtime; a cloud cluster is refused."""
    from gpufleet.cli.running import running_endpoints
    from pipelines.engines.local_fleet import cluster_spec

    endpoints = running_endpoints(home)
    fleet = load_fleet(file or Path(endpoints.fleet_file))
    spec = model_of(fleet, model)
    target = cluster_spec(fleet, cluster)
    if target.cloud != "local":
        raise UserError(
            f"{cluster} is an {target.cloud} cluster: `engine load` reaches the replicas of local clusters "
            "only; loading on cloud clusters comes with the in-cluster serving layer (not built yet)"
        )
    return fleet, spec, endpoints, local_fleet(home)


def _serve(
    local: LocalFleet,
    endpoints: FleetEndpoints,
    fleet: Fleet,
    cluster: str,
    spec: ModelSpec,
    versions: list[int],
    done: str,
) -> None:
    from pipelines.engines.local_fleet import serve_on_cluster
    from pipelines.rollout.state import RolloutStore

    store = local.object_store(endpoints)
    active = RolloutStore(store).active(spec.name)
    if active is not None and not active.state.finished:
        raise UserError(
            f"{spec.name}: rollout {active.state.rollout_id} is in progress and decides which versions "
            f"the clusters serve; wait for it, or `gpufleet rollout abort {spec.name}`"
        )
    with console.status(f"{cluster}: serving {spec.name} {versions} on every replica"):
        outcome = serve_on_cluster(
            local, endpoints, fleet, cluster, spec, store, versions, lambda m: console.log(m)
        )
    checked = (
        f"; stored files of version {', '.join(map(str, outcome.verified))} match the manifest (sha256)"
        if outcome.verified
        else ""
    )
    what = done if outcome.changed else f"nothing to do: {cluster} already serves exactly that"
    console.print(
        f"{what}: {cluster} serves {spec.name} {outcome.versions} on {len(outcome.replicas)} replicas "
        f"({', '.join(outcome.replicas)}){checked}",
        soft_wrap=True,
        highlight=False,
    )

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

    from gpufleet.objectstore import ObjectStore
    from gpufleet.spec import ModelSpec
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
JOURNAL_FOLDER = "push-journal"


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
        str,
        typer.Option(
            "--hardware-compatibility",
            help="TensorRT plans only: none, same_compute_capability, or ampere_plus (runs on any sm80+).",
        ),
    ] = "none",
) -> None:
    """Build MODEL's package for one target: model files plus engine.json (versions, GPU, signature)."""
    from pipelines.engines.build import ENGINES_FOLDER, build_engine, default_package_dir
    from pipelines.engines.metadata import HardwareCompatibility

    levels: tuple[str, ...] = get_args(HardwareCompatibility)
    if hardware_compatibility not in levels:
        raise UserError(
            f"--hardware-compatibility {hardware_compatibility!r}: use one of {', '.join(levels)}"
        )
    spec = model_of(load_fleet(file), model)
    folder = out or default_package_dir(usable_home(home, create=True), model, target.strip().lower())
    built = build_engine(
        spec,
        target=target,
        out=folder,
        timing_cache=home / ENGINES_FOLDER / ".timing-cache",
        hardware_compatibility=hardware_compatibility,  # type: ignore[arg-type]  # checked against levels
    )
    meta = built.metadata
    where = f"{meta.gpu.name} ({meta.gpu.compute_capability})" if meta.gpu else "CPU"
    console.print(
        f"built {model} for {meta.target}: {meta.format} ({meta.runtime}, {meta.precision}) on {where} "
        f"in {built.folder}",
        soft_wrap=True,
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
    from pipelines.engines.build import default_package_dir
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


def _model_and_store(
    home: Path, file: Path | None, model: str, store_url: str | None, endpoint: str | None
) -> tuple[ModelSpec, ObjectStore, Path]:
    from gpufleet.objectstore import TransferSettings, open_store

    if store_url:
        fleet_file = file or DEFAULT_FILE
        return model_of(load_fleet(fleet_file), model), open_store(store_url, endpoint=endpoint), fleet_file
    from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS
    from gpufleet.objectstore.s3 import S3Store

    endpoints = local_fleet(home).endpoints() if home.exists() else None
    if endpoints is None:
        raise UserError(
            f"no local fleet is running from {home}: start one with `gpufleet up`, or pass --store URL"
        )
    spec = model_of(load_fleet(file or Path(endpoints.fleet_file)), model)
    store = S3Store.connect(
        f"s3://{endpoints.bucket}/{endpoints.prefix}",
        endpoint_url=endpoints.store_url,
        settings=TransferSettings(),
        credentials=LOCAL_S3_CREDENTIALS,
    )
    return spec, store, file or Path(endpoints.fleet_file)


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
        f"files_uploaded={len(result.uploaded)} files_skipped={len(result.skipped)}"
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

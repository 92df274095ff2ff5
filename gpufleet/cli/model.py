"""`gpufleet model list|show`: the versions in the model store, their manifests, and where each is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from gpufleet.cli.app import DEFAULT_HOME, HomeOption, JsonOption, RunningFileOption, app, console
from gpufleet.cli.running import local_fleet, model_of
from gpufleet.errors import UserError
from gpufleet.spec import load_fleet

if TYPE_CHECKING:
    from gpufleet.local.fleet import FleetEndpoints
    from gpufleet.objectstore import ObjectStore
    from pipelines.engines.load import PublishedVersion

model_app = typer.Typer(
    help="Models in the store: versions, manifests, where they are loaded.", no_args_is_help=True
)
app.add_typer(model_app, name="model")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or a Blob container URL (default: the running local "
        "fleet's store; then it also shows where each version is loaded).",
    ),
]
EndpointOption = Annotated[
    str | None,
    typer.Option("--endpoint", help="With --store: an S3-compatible endpoint URL or the GCS emulator's."),
]


@model_app.command("list")
def list_command(
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    store_url: StoreOption = None,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every declared model's published versions: engine, size, when, by whom, loaded where."""
    store, endpoints, fleet_file = _store(home, file, store_url, endpoint)
    models = [m.name for m in load_fleet(fleet_file).models]
    rows = {name: [_summary(v, endpoints) for v in _versions(store, name)] for name in models}
    if as_json:
        typer.echo(json.dumps({"store": store.url, "models": rows}, indent=2))
        return
    table = Table(title=f"models in {store.url}")
    for col in ("model", "version", "engine", "files", "size", "pushed", "loaded on"):
        table.add_column(col, overflow="fold")
    for name, versions in rows.items():
        if not versions:
            table.add_row(name, "-", "no version published", "", "", "", "")
        for v in versions:
            table.add_row(
                name,
                str(v["version"]),
                v["engine"],
                str(v["files"]),
                _size(v["size"]),
                f"{v['pushed_at']} by {v['pushed_by']}",
                _where(v["loaded_on"]),
            )
    console.print(table)


@model_app.command("show")
def show_command(
    model: Annotated[str, typer.Argument(help="Model name from the fleet file.")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="One version (default: all).")
    ] = None,
    file: RunningFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    store_url: StoreOption = None,
    endpoint: EndpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """One model's versions in full: every file with its sha256 and size, engine metadata, lineage."""
    from pipelines.engines.load import read_published

    store, endpoints, fleet_file = _store(home, file, store_url, endpoint)
    model_of(load_fleet(fleet_file), model)  # an unknown model is named with the known ones
    numbers = [version] if version is not None else [v.version for v in _versions(store, model)]
    versions = [read_published(store, model, n) for n in numbers]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "store": store.url,
                    "model": model,
                    "versions": [
                        {"manifest": v.manifest, "loaded_on": _loaded_on(v, endpoints)} for v in versions
                    ],
                },
                indent=2,
            )
        )
        return
    if not versions:
        console.print(f"{model}: no version published in {store.url}", soft_wrap=True)
    for v in versions:
        _print_version(v, endpoints)


# --- reading ---------------------------------------------------------------------------------------


def _store(
    home: Path, file: Path | None, store_url: str | None, endpoint: str | None
) -> tuple[ObjectStore, FleetEndpoints | None, Path]:
    """The store to read, the running fleet's endpoints (None with --store), and the fleet file."""
    from gpufleet.cli.app import DEFAULT_FILE
    from gpufleet.objectstore import open_store

    if endpoint and not store_url:
        raise UserError("--endpoint: only with --store (the local fleet's store has its own endpoint)")
    if store_url:
        return open_store(store_url, endpoint=endpoint), None, file or DEFAULT_FILE
    endpoints = local_fleet(home).endpoints() if home.exists() else None
    if endpoints is None:
        raise UserError(
            f"no local fleet is running from {home}: start one with `gpufleet up`, or pass --store URL"
        )
    return local_fleet(home).object_store(endpoints), endpoints, file or Path(endpoints.fleet_file)


def _versions(store: ObjectStore, model: str) -> list[PublishedVersion]:
    from pipelines.engines.load import published_versions, read_published

    return [read_published(store, model, n) for n in published_versions(store, model)]


def _loaded_on(version: PublishedVersion, endpoints: FleetEndpoints | None) -> dict[str, list[str]]:
    """cluster -> the replicas serving this version READY (a replica that does not answer is left out)."""
    from gpufleet.triton_admin import serving_versions

    found: dict[str, list[str]] = {}
    for cluster in endpoints.clusters if endpoints else []:
        for replica in cluster.replicas:
            try:
                serving = serving_versions(replica.http_url, version.model)
            except Exception:  # noqa: BLE001 - a replica that does not answer serves nothing we can show
                continue
            if version.version in serving:
                found.setdefault(cluster.name, []).append(replica.name)
    return found


def _summary(v: PublishedVersion, endpoints: FleetEndpoints | None) -> dict[str, Any]:
    lineage = v.manifest.get("lineage") or {}
    return {
        "version": v.version,
        "engine": _engine(v),
        "files": len(v.files),
        "size": v.size,
        "pushed_at": lineage.get("pushed_at") or v.manifest.get("created_at"),
        "pushed_by": lineage.get("pushed_by", "?"),
        "git_commit": lineage.get("git_commit"),
        "loaded_on": _loaded_on(v, endpoints),
    }


# --- printing --------------------------------------------------------------------------------------


def _engine(v: PublishedVersion) -> str:
    m = v.metadata
    gpu = f" built on {m.gpu.name} ({m.gpu.compute_capability})" if m.gpu else ""
    return f"{m.target}: {m.format} via {m.runtime}, {m.precision}{gpu}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _where(loaded: dict[str, list[str]]) -> str:
    return ", ".join(f"{cluster} ({len(replicas)})" for cluster, replicas in loaded.items()) or "-"


def _print_version(v: PublishedVersion, endpoints: FleetEndpoints | None) -> None:
    m, lineage = v.metadata, v.manifest.get("lineage") or {}
    versions = m.runtime_versions
    runtime = ", ".join(f"{k} {val}" for k, val in versions.model_dump().items() if val is not None)
    console.print(f"[bold]{v.model} version {v.version}[/bold]  {_engine(v)}", highlight=False)
    facts = [
        ("runtime", runtime or "-"),
        ("hardware compatibility", m.hardware_compatibility or "-"),
        ("builder flags", " ".join(m.builder_flags) or "-"),
        ("inputs", ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in m.inputs)),
        ("outputs", ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in m.outputs)),
        ("max batch size", str(m.max_batch_size)),
        ("source", f"{m.source.uri} (sha256 {m.source.sha256[:12]}…, {_size(m.source.size)})"),
        ("built", f"{m.built_at} by {m.builder.user}@{m.builder.host} (gpufleet {m.builder.gpufleet})"),
        ("pushed", f"{lineage.get('pushed_at', '?')} by {lineage.get('pushed_by', '?')}"),
        (
            "git commit",
            f"{lineage.get('git_commit') or '-'}" + (" (dirty)" if lineage.get("git_dirty") else ""),
        ),
        ("loaded on", ", ".join(f"{c}: {', '.join(r)}" for c, r in _loaded_on(v, endpoints).items()) or "-"),
    ]
    for label, value in facts:
        console.print(f"  {label:<24}{value}", soft_wrap=True, highlight=False)
    files = Table(show_edge=False, box=None, padding=(0, 2))
    for col in ("file", "size", "sha256"):
        files.add_column(col, overflow="fold")
    for name, entry in sorted(v.files.items()):
        files.add_row(name, _size(int(entry["size"])), str(entry["sha256"]))
    console.print(files)

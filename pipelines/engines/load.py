"""`engine load` / `unload`: what the store holds for a version, checked before a replica is touched.

Order of checks, all before anything moves: the version is published (its manifest exists); its engine
can run on the cluster (gpufleet.compatibility, from the manifest's engine metadata); its signature is
the one of every other version the cluster serves (Triton has one config per model); every stored file
is, byte for byte, what the manifest says (sha256 and size, streamed from the store). Only then is each
replica told, through its own repository API, to serve the new set, and each is checked on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from pydantic import ValidationError

from gpufleet.compatibility import engine_problem
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.objectstore import ObjectStore
from gpufleet.spec import Cluster, ModelSpec
from gpufleet.store import MANIFEST
from gpufleet.triton_admin import apply_versions
from pipelines.engines.metadata import EngineMetadata, signature_problem
from pipelines.engines.triton_config import engine_model_config

Report = Callable[[str], None]
CHECKSUM_WORKERS = 4


@dataclass(frozen=True)
class PublishedVersion:
    """One version as its manifest describes it."""

    model: str
    version: int
    manifest: dict[str, Any]
    metadata: EngineMetadata

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        files: dict[str, dict[str, Any]] = self.manifest["files"]
        return files

    @property
    def size(self) -> int:
        return sum(int(entry["size"]) for entry in self.files.values())

    def signature(self) -> tuple[object, ...]:
        m = self.metadata
        return (m.max_batch_size, m.inputs, m.outputs)


@dataclass(frozen=True)
class Replica:
    name: str
    url: str


def published_versions(store: ObjectStore, model: str) -> list[int]:
    """Version numbers of `model` that have a manifest (the only versions that exist), ascending."""
    found = []
    for prefix in store.list_prefixes(f"{model}/"):
        name = prefix.rstrip("/").rsplit("/", 1)[-1]
        if name.isdigit() and store.stored_metadata(f"{model}/{name}/{MANIFEST}") is not None:
            found.append(int(name))
    return sorted(found)


def read_published(store: ObjectStore, model: str, version: int) -> PublishedVersion:
    """The version's manifest, checked for the fields loading needs; a missing version is one line."""
    data = store.get_bytes(f"{model}/{version}/{MANIFEST}")
    if data is None:
        known = published_versions(store, model)
        listed = ", ".join(map(str, known)) or "none"
        raise UserError(
            f"{model} version {version} is not published in {store.url} (published: {listed}); "
            f"push it with `gpufleet engine push {model}`"
        )
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        if not isinstance(files, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int)
            for e in files.values()
        ):
            raise TypeError("files")
        metadata = EngineMetadata.model_validate(manifest["engine"])
    except (ValueError, KeyError, TypeError, ValidationError):
        raise FleetRuntimeError(
            f"{store.url}: {model}/{version}/{MANIFEST} is not a manifest gpufleet can read (an older "
            f"gpufleet, or edited by hand); push that version again with `gpufleet engine push {model}`"
        ) from None
    return PublishedVersion(model, version, manifest, metadata)


def compatibility_refusal(cluster: Cluster, published: PublishedVersion) -> str | None:
    meta = published.metadata
    problem = engine_problem(
        cluster,
        target=meta.target,
        format=meta.format,
        hardware_compatibility=meta.hardware_compatibility,
        tensorrt=meta.runtime_versions.tensorrt,
    )
    if problem is None:
        return None
    return f"{published.model} version {published.version} ({meta.target} {meta.format}): {problem}"


def signature_refusal(
    model: ModelSpec, versions: Sequence[PublishedVersion], new: int, where: str
) -> str | None:
    """Why `versions` cannot be served together under the fleet file's signature for `model`.

    Triton serves every version of a model with one config, built from the fleet file's signature: each
    version must have been built for exactly that signature (so they all agree with each other too)."""
    for v in versions:
        problem = signature_problem(model, v.metadata)
        if problem is None:
            continue
        if v.version == new:
            return f"{model.name} version {v.version}: {problem}; load a version built for this fleet file"
        return (
            f"{model.name} version {v.version}, which {where} serves, does not fit the fleet file "
            f"({problem}); Triton has one config per model: serve version {new} alone with --only"
        )
    return None


def verify_checksums(store: ObjectStore, published: PublishedVersion) -> None:
    """Every file the manifest names is stored with exactly its sha256 and size, or FleetRuntimeError."""
    prefix = f"{published.model}/{published.version}"

    def check(item: tuple[str, dict[str, Any]]) -> str | None:
        name, entry = item
        found = store.sha256_and_size(f"{prefix}/{name}")
        if found is None:
            return f"{name} is missing"
        digest, size = found
        if (digest, size) != (entry["sha256"], entry["size"]):
            return (
                f"{name} is {size} bytes with sha256 {digest[:12]}…, the manifest says "
                f"{entry['size']} bytes with sha256 {str(entry['sha256'])[:12]}…"
            )
        return None

    with ThreadPoolExecutor(max_workers=CHECKSUM_WORKERS) as pool:
        problems = [p for p in pool.map(check, sorted(published.files.items())) if p]
    if problems:
        raise FleetRuntimeError(
            f"{published.model} version {published.version} in {store.url}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + "; refused to load it: push that version again"
        )


def load_config_json(model: ModelSpec, versions: Sequence[PublishedVersion]) -> str:
    """The load-API override serving exactly `versions`: the stored config's message, repinned."""
    newest = max(versions, key=lambda v: v.version)
    message = engine_model_config(model, newest.metadata, [v.version for v in versions])
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))


def serve_on_replicas(
    replicas: Sequence[Replica],
    model: str,
    config_json: str,
    versions: Sequence[int],
    report: Report,
    settle_s: float = 0.0,
) -> None:
    """Every replica serves exactly `versions`, each verified on its own; all replicas are tried.

    One replica at a time, each back to ready before the next: Triton reports itself not ready while
    it unloads a version, and the proxy in front stops sending to a replica that is not ready, so
    changing all of them at once would leave the cluster serving nothing for that moment. `settle_s`:
    how long the proxy takes to send to a replica again once it is ready (its health-check interval).
    FleetRuntimeError names every replica that did not get there, with Triton's reason.
    """
    failures = []
    for i, replica in enumerate(replicas):
        if i and settle_s:
            time.sleep(settle_s)
        try:
            apply_versions(replica.url, model, config_json, versions)
        except Exception as exc:  # noqa: BLE001 - one replica's failure, whatever it is, is reported with the rest
            failures.append(f"{replica.name}: {' '.join(str(exc).split())[:300]}")
            continue
        report(f"{replica.name}: serving {model} {list(versions)}")
    if failures:
        raise FleetRuntimeError(
            f"{model} {list(versions)} did not come up on {len(failures)} of {len(replicas)} replicas: "
            + "; ".join(failures)
        )

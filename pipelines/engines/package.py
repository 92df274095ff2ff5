"""An engine package folder as push sees it: its metadata and every file with its sha256 and size."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import UserError
from pipelines.engines.fault import FAULT_FILE
from pipelines.engines.metadata import ENGINE_FILE, EngineMetadata, read_metadata


@dataclass(frozen=True)
class PackageFile:
    name: str  # path inside the version folder, '/'-separated
    path: Path
    size: int


class EnginePackage:
    """The files of a package; each file's sha256 is computed once, when first asked for.

    Hashing on demand lets a push hash one file while it uploads another, instead of reading the
    whole package before the first byte moves.
    """

    def __init__(self, folder: Path, metadata: EngineMetadata, files: tuple[PackageFile, ...]) -> None:
        self.folder, self.metadata, self.files = folder, metadata, files  # files sorted by name
        self._hashes: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def sha256(self, file: PackageFile) -> str:
        with self._lock:
            known = self._hashes.get(file.name)
        if known is None:
            known = file_sha256(file.path)
            with self._lock:
                self._hashes[file.name] = known
        return known

    def hash_all(self, workers: int = 4) -> None:
        # hashlib releases the GIL on big buffers: files hash in parallel on several cores.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(self.sha256, self.files))

    def sizes(self) -> dict[str, int]:
        return {f.name: f.size for f in self.files}

    def file_entries(self) -> dict[str, dict[str, object]]:
        """The manifest's `files`: name -> sha256 and size (hashes whatever is not hashed yet)."""
        self.hash_all()
        return {f.name: {"sha256": self.sha256(f), "size": f.size} for f in self.files}

    @property
    def digest(self) -> str:
        """One sha256 over every file's name, sha256 and size: equal packages have equal digests."""
        return files_digest(self.file_entries())


def files_digest(entries: dict[str, dict[str, object]]) -> str:
    lines = "".join(f"{name}\0{e['sha256']}\0{e['size']}\n" for name, e in sorted(entries.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_package(folder: Path) -> EnginePackage:
    """The package in `folder`: engine.json checked, every (non-hidden) file listed with its size."""
    if not folder.is_dir():
        raise UserError(
            f"--from {folder}: no engine package there; build one with `gpufleet engine build` "
            "or pass the folder it wrote"
        )
    metadata = read_metadata(folder / ENGINE_FILE)
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not (folder / metadata.model_file).is_file():
        raise UserError(
            f"{folder}: engine.json names {metadata.model_file} but the folder has no such file; "
            "rebuild the package with `gpufleet engine build`"
        )
    _check_fault_recorded(folder, metadata)
    files = tuple(
        PackageFile(name=p.relative_to(folder).as_posix(), path=p, size=p.stat().st_size) for p in paths
    )
    return EnginePackage(folder=folder, metadata=metadata, files=files)


def _check_fault_recorded(folder: Path, metadata: EngineMetadata) -> None:
    """fault.json is pushed (the runner reads it) only when engine.json says so, where people look."""
    has_file = (folder / FAULT_FILE).is_file()
    if has_file and metadata.injected_fault is None:
        raise UserError(
            f"{folder}: has {FAULT_FILE} but engine.json records no injected_fault; "
            "rebuild the package with `gpufleet engine build` (with --inject-* options for a faulty one)"
        )
    if not has_file and metadata.injected_fault is not None:
        raise UserError(
            f"{folder}: engine.json records an injected_fault but {FAULT_FILE} is missing; "
            "rebuild the package with `gpufleet engine build`"
        )

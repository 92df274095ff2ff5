"""An engine package folder as push sees it: its metadata and every file with its sha256 and size."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import UserError
from pipelines.engines.metadata import ENGINE_FILE, EngineMetadata, read_metadata


@dataclass(frozen=True)
class PackageFile:
    name: str  # path inside the version folder, '/'-separated
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class EnginePackage:
    folder: Path
    metadata: EngineMetadata
    files: tuple[PackageFile, ...]  # sorted by name

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file_entries(self) -> dict[str, dict[str, object]]:
        """The manifest's `files`: name -> sha256 and size."""
        return {f.name: {"sha256": f.sha256, "size": f.size} for f in self.files}

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


def read_package(folder: Path, *, hash_workers: int = 4) -> EnginePackage:
    """The package in `folder`: engine.json checked, every (non-hidden) file hashed, in parallel."""
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
    # hashlib releases the GIL on big buffers: files hash in parallel on several cores.
    with ThreadPoolExecutor(max_workers=max(1, hash_workers)) as pool:
        digests = list(pool.map(file_sha256, paths))
    files = tuple(
        PackageFile(name=p.relative_to(folder).as_posix(), path=p, sha256=d, size=p.stat().st_size)
        for p, d in zip(paths, digests, strict=True)
    )
    return EnginePackage(folder=folder, metadata=metadata, files=files)

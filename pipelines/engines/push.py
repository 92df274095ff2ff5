"""`engine push`: an engine package becomes a new version in the model store, atomically and resumably.

Protocol (keys relative to the store's prefix; see pipelines/engines/__init__.py for the layout):

1. Reserve a version number: conditional create of `<model>/<N>/.reservation.json` holding a random
   owner token. Refused means someone else has N: take the next number (or, with an explicit
   `--version N`, stop with one line). The token and N are written to a local journal *before* the
   request, so a push killed at any moment knows on its next run which number it may own.
2. Upload every package file to `<model>/<N>/`, in parallel, each with its sha256 in metadata. A
   resumed push skips every file already stored with the same sha256. A file whose sha256 is one
   of the newest published version's files (by that version's manifest, so only published bytes
   are reused; any name) is copied from there inside the store instead of uploaded again.
3. Check the reservation is still this push's, write `<model>/config.pbtxt` (pinned to N), then
   `<model>/<N>/manifest.json` LAST (conditional create): sha256 + size of every file, the engine
   metadata, lineage. Until it exists no reader lists version N; once it exists every file it names
   is stored with that sha256.
4. Delete the journal. The reservation stays: it records who pushed N and keeps the number taken.

A re-run of a killed push (same package, same store, same machine) finds its journal, unlocked (each
running push holds a file lock on its own journal, released by the OS however the process ends),
and completes the same version. A push of a package identical to the newest published version
writes nothing and reports that version. Stores whose conditional create is not honoured (the GCS
emulator; real GCS honours it) cannot keep two concurrent pushes apart.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import socket
import subprocess
import threading
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.objectstore import ByteProgress, ObjectStore
from gpufleet.spec import ModelSpec
from gpufleet.store import MANIFEST
from pipelines.engines.metadata import signature_problem, utc_now
from pipelines.engines.package import EnginePackage, PackageFile
from pipelines.engines.triton_config import engine_config_pbtxt

RESERVATION = ".reservation.json"
CONFIG_FILE = "config.pbtxt"
MANIFEST_VERSION = 1
_RESERVE_ATTEMPTS = 100
# Files uploading at once. Each already has TransferSettings.max_concurrency parts in flight; a second
# file keeps the connection busy while one starts or ends (more measured no faster against moto).
FILE_WORKERS = 2


class PushProgress(Protocol):
    """`advance` is called with bytes as they go out (from the transfer threads, several at once), and
    with a whole file's size when it is skipped or copied; the calls add up to `begin`'s total."""

    def note(self, text: str) -> None: ...
    def begin(self, total_bytes: int) -> None: ...
    def advance(self, done_bytes: int) -> None: ...


class _Silent:
    def note(self, text: str) -> None:
        pass

    def begin(self, total_bytes: int) -> None:
        pass

    def advance(self, done_bytes: int) -> None:
        pass


@dataclass
class PushResult:
    model: str
    version: int
    bytes_uploaded: int = 0  # every byte written to the store: files, config, manifest, reservation
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already stored with the same sha256
    # Copied inside the store from the newest published version (same sha256): not in bytes_uploaded.
    copied: list[str] = field(default_factory=list)
    resumed: bool = False  # completed a push interrupted earlier
    already_published: bool = False  # nothing to do: this package is that version already


# --- the local journal ------------------------------------------------------------------------------


@dataclass
class Journal:
    """What an unfinished push needs to finish: its version number, owner token and reservation."""

    path: Path
    lock: FileLock
    owner: str
    version: int = 0
    reservation: str = ""

    @classmethod
    def claim_unfinished(cls, folder: Path, stem: str) -> Journal | None:
        """An unfinished push of this package whose process is gone (its lock is free), now held by us."""
        for path in sorted(folder.glob(f"{stem}-*.json")):
            lock = FileLock(str(path) + ".lock")
            try:
                lock.acquire(blocking=False)
            except Timeout:
                continue  # that push is running right now
            try:
                raw = json.loads(path.read_text())
                return cls(path, lock, raw["owner"], int(raw["version"]), str(raw["reservation"]))
            except (OSError, ValueError, KeyError, TypeError):
                # Finished (deleted) while we waited, or unreadable: not something to resume.
                lock.release()
        return None

    @classmethod
    def start(cls, folder: Path, stem: str) -> Journal:
        folder.mkdir(parents=True, exist_ok=True)
        owner = uuid.uuid4().hex
        path = folder / f"{stem}-{owner[:12]}.json"
        lock = FileLock(str(path) + ".lock")
        lock.acquire(blocking=False)
        journal = cls(path, lock, owner)
        journal.record(0, "")  # from now on a re-run finds it (and cleans it up if it got no further)
        return journal

    def record(self, version: int, reservation: str) -> None:
        self.version, self.reservation = version, reservation
        staging = self.path.with_name(f".{self.path.name}.tmp")
        staging.write_text(json.dumps({"owner": self.owner, "version": version, "reservation": reservation}))
        staging.replace(self.path)  # a crash mid-write leaves the previous record, never half of one

    def finish(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.release()
        with contextlib.suppress(FileNotFoundError):
            Path(self.lock.lock_file).unlink()

    def release(self) -> None:
        self.lock.release()


def journal_stem(store: ObjectStore, model: str, package: EnginePackage) -> str:
    """Journals are per store, model and package folder: a re-run of the same push finds its own.

    Not per package content, so no file has to be hashed before the first upload; a folder rebuilt
    between a killed push and its re-run still completes that version, with the files now there.
    """
    store_id = hashlib.sha256(store.url.encode()).hexdigest()[:12]
    folder_id = hashlib.sha256(str(package.folder.resolve()).encode()).hexdigest()[:12]
    return f"{model}-{store_id}-{folder_id}"


# --- lineage -----------------------------------------------------------------------------------------


def git_lineage(folder: Path) -> dict[str, Any]:
    """The commit `folder` is checked out at and whether tracked files differ; nulls outside a repo."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# --- the push ----------------------------------------------------------------------------------------


def push_package(
    store: ObjectStore,
    model: ModelSpec,
    package: EnginePackage,
    *,
    journal_dir: Path,
    version: int | None = None,
    lineage: dict[str, Any] | None = None,
    progress: PushProgress | None = None,
    file_workers: int = FILE_WORKERS,
) -> PushResult:
    """Publish `package` as a version of `model` in `store` (see the module docstring for the protocol)."""
    problem = signature_problem(model, package.metadata)
    if problem:
        raise UserError(
            f"--from {package.folder}: {problem}; rebuild it with `gpufleet engine build {model.name}`"
        )
    if any(f.name == MANIFEST for f in package.files):
        raise UserError(f"--from {package.folder}: a package file may not be named {MANIFEST} (the store's)")
    if version is not None and version < 1:
        raise UserError(f"--version {version}: version numbers start at 1")
    return _Push(store, model, package, progress or _Silent(), lineage or {}, file_workers).run(
        journal_dir, version
    )


class _Push:
    def __init__(
        self,
        store: ObjectStore,
        model: ModelSpec,
        package: EnginePackage,
        progress: PushProgress,
        lineage: dict[str, Any],
        file_workers: int,
    ) -> None:
        self.store, self.model, self.package = store, model, package
        self.progress, self.lineage, self.file_workers = progress, lineage, max(1, file_workers)
        # Byte-level callbacks only for someone listening: without, uploads run as they always did.
        self.sent: ByteProgress | None = None if isinstance(progress, _Silent) else progress.advance
        self.result = PushResult(model=model.name, version=0)
        self._count = threading.Lock()

    def key(self, version: int, name: str) -> str:
        return f"{self.model.name}/{version}/{name}"

    def run(self, journal_dir: Path, requested: int | None) -> PushResult:
        stem = journal_stem(self.store, self.model.name, self.package)
        journal = Journal.claim_unfinished(journal_dir, stem)
        if journal is not None and requested not in (None, journal.version):
            journal.release()  # another number was asked for: leave that push for a later re-run
            journal = None
        if journal is not None:
            state = self._reclaim(journal)
            if state == "published":
                journal.finish()
                self.result.resumed = True
                return self._already(journal.version)
            if state == "lost":
                journal.finish()  # someone else holds that number now; ours is a fresh push
                journal = None
            else:
                self.result.resumed = True
                self.progress.note(
                    f"resuming the interrupted push of {self.model.name} version {journal.version}"
                )
        if journal is None:
            published = self._identical_published(requested)
            if published is not None:
                return self._already(published)
            journal = Journal.start(journal_dir, stem)
            try:
                self._reserve(journal, requested)
            except BaseException:
                journal.release()
                raise
            self.progress.note(f"reserved {self.model.name} version {journal.version}")
        try:
            self.result.version = journal.version
            self._upload(journal.version, resumed=self.result.resumed)
            self._publish(journal)
        except BaseException:
            journal.release()  # the journal stays: the next run completes this version
            raise
        journal.finish()
        return self.result

    def _already(self, version: int) -> PushResult:
        self.result.version, self.result.already_published = version, True
        self.result.skipped = [f.name for f in self.package.files]
        return self.result

    # -- numbers --------------------------------------------------------------------------------

    def _numbers(self) -> list[int]:
        """Every version number in use: each version folder, with or without a manifest."""
        found = []
        for prefix in self.store.list_prefixes(f"{self.model.name}/"):
            name = prefix.rstrip("/").rsplit("/", 1)[-1]
            if name.isdigit():
                found.append(int(name))
        return sorted(found)

    def _manifest(self, version: int) -> dict[str, Any] | None:
        data = self.store.get_bytes(self.key(version, MANIFEST))
        if data is None:
            return None
        try:
            parsed = json.loads(data)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    def _holds_package(self, manifest: dict[str, Any] | None) -> bool:
        files = manifest.get("files") if manifest else None
        if not isinstance(files, dict):
            return False
        sizes = {
            name: entry.get("size") if isinstance(entry, dict) else None for name, entry in files.items()
        }
        # Names and sizes first: a different package is told apart without hashing anything.
        return sizes == self.package.sizes() and files == self.package.file_entries()

    def _identical_published(self, requested: int | None) -> int | None:
        """The version this exact package already is: the requested one, or else the newest one."""
        if requested is not None:
            manifest = self._manifest(requested)
            if manifest is None:
                return None
            if self._holds_package(manifest):
                return requested
            raise UserError(
                f"--version {requested}: {self.model.name} version {requested} is already published "
                "with other files; omit --version to take the next free number"
            )
        for number in reversed(self._numbers()):
            manifest = self._manifest(number)
            if manifest is not None:
                return number if self._holds_package(manifest) else None
        return None

    def _reservation(self, journal: Journal, version: int) -> str:
        return json.dumps(
            {
                "owner": journal.owner,
                "model": self.model.name,
                "version": version,
                "by": _who(),
                "pid": os.getpid(),
                "reserved_at": utc_now(),
                "from": str(self.package.folder.resolve()),
            },
            sort_keys=True,
        )

    def _reserve(self, journal: Journal, requested: int | None) -> None:
        numbers = self._numbers()
        candidate = requested or (numbers[-1] + 1 if numbers else 1)
        for _ in range(_RESERVE_ATTEMPTS):
            text = self._reservation(journal, candidate)
            journal.record(candidate, text)  # before the request: a crash after it still knows the number
            if self._claim(candidate, text):
                return
            if requested is not None:
                raise UserError(
                    f"--version {requested}: {self.model.name} version {requested} is taken "
                    f"({self._holder(requested)}); omit --version to take the next free number"
                )
            numbers = self._numbers()
            candidate = max(candidate + 1, numbers[-1] + 1 if numbers else 1)
        raise FleetRuntimeError(
            f"{self.model.name}: no free version number after {_RESERVE_ATTEMPTS} tries "
            "(concurrent pushes?); run the push again"
        )

    def _claim(self, version: int, text: str) -> bool:
        """Create the reservation; True only when N is ours and holds nothing but it."""
        key = self.key(version, RESERVATION)
        if not self.store.create_if_absent(key, text.encode()):
            return False
        self._count_bytes(len(text))
        foreign = [k for k in self.store.list_keys(f"{self.model.name}/{version}/") if k != key]
        if foreign:
            # Files nobody reserved (an upload by another publisher): the number is not free after all.
            self.store.delete(key)
            return False
        return True

    def _holder(self, version: int) -> str:
        data = self.store.get_bytes(self.key(version, RESERVATION))
        try:
            held = json.loads(data) if data else None
        except ValueError:
            held = None
        if not isinstance(held, dict):
            return "it has files but no reservation"
        return f"reserved by {held.get('by', '?')} at {held.get('reserved_at', '?')}"

    def _reclaim(self, journal: Journal) -> str:
        """An interrupted push's number: `owned` (finish it), `published` (already done), `lost`."""
        if journal.version < 1 or not journal.reservation:
            return "lost"
        manifest = self._manifest(journal.version)
        if manifest is not None:
            return "published" if self._holds_package(manifest) else "lost"
        stored = self.store.get_bytes(self.key(journal.version, RESERVATION))
        if stored == journal.reservation.encode():
            return "owned"
        # Killed between writing the journal and the reservation request landing: ask again.
        if stored is None and self._claim(journal.version, journal.reservation):
            return "owned"
        return "lost"

    # -- files ----------------------------------------------------------------------------------

    def _count_bytes(self, size: int) -> None:
        with self._count:
            self.result.bytes_uploaded += size

    def _published_files(self, version: int) -> dict[str, tuple[str, int]]:
        """sha256 -> (key, size) of a file of the newest version with a manifest, other than `version`.

        A manifest exists only once every file it names is stored with its sha256: those objects are
        safe copy sources. Versions still being pushed (no manifest) are passed over.
        """
        for number in reversed(self._numbers()):
            manifest = self._manifest(number) if number != version else None
            if manifest is None:
                continue
            files = manifest.get("files")
            found: dict[str, tuple[str, int]] = {}
            for name, entry in files.items() if isinstance(files, dict) else []:
                digest = entry.get("sha256") if isinstance(entry, dict) else None
                size = entry.get("size") if isinstance(entry, dict) else None
                if isinstance(digest, str) and isinstance(size, int):
                    found.setdefault(digest, (self.key(number, name), size))
            return found
        return {}

    def _upload(self, version: int, *, resumed: bool) -> None:
        files = sorted(self.package.files, key=lambda f: -f.size)  # big first: the workers finish together
        self.progress.begin(self.package.total_bytes)
        present: set[str] = set()
        if resumed:
            present = set(self.store.list_keys(f"{self.model.name}/{version}/"))
            wanted = {self.key(version, f.name) for f in files} | {self.key(version, RESERVATION)}
            for stale in sorted(present - wanted):  # from the package as it was when the push died
                self.store.delete(stale)
        published = self._published_files(version)

        def copy_source(f: PackageFile, digest: str) -> str | None:
            source, size = published.get(digest, ("", -1))
            # The HEAD: a published file deleted (or replaced) since is uploaded instead.
            if size != f.size or self.store.stored_sha256(source) != digest:
                return None
            return source

        def send(f: PackageFile) -> None:
            key, digest = self.key(version, f.name), hashes[f.name].result()
            if key in present and self.store.stored_sha256(key) == digest:
                self._record(self.result.skipped, f.name)
                self.progress.advance(f.size)
            elif (source := copy_source(f, digest)) is not None:
                self.store.copy(source, key, sha256=digest)
                self._record(self.result.copied, f.name)
                self.progress.advance(f.size)
            else:
                self.store.put_file(key, f.path, sha256=digest, progress=self.sent)
                self._count_bytes(f.size)
                self._record(self.result.uploaded, f.name)

        # Files are hashed ahead, in upload order, while earlier files upload.
        with ThreadPoolExecutor(max_workers=2) as hasher:
            hashes = {f.name: hasher.submit(self.package.sha256, f) for f in files}
            try:
                with ThreadPoolExecutor(max_workers=self.file_workers) as pool:
                    futures = [pool.submit(send, f) for f in files]
                    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                    for future in pending:
                        future.cancel()
            finally:
                hasher.shutdown(cancel_futures=True)
        for future in done:
            future.result()  # the first failure, as it was raised
        for names in (self.result.uploaded, self.result.skipped, self.result.copied):
            names.sort()

    def _record(self, names: list[str], name: str) -> None:
        with self._count:
            names.append(name)

    def _publish(self, journal: Journal) -> None:
        version = journal.version
        if self.store.get_bytes(self.key(version, RESERVATION)) != journal.reservation.encode():
            raise FleetRuntimeError(
                f"{self.model.name} version {version}: its reservation is no longer this push's "
                f"({self._holder(version)}); nothing was published; run the push again"
            )
        config = engine_config_pbtxt(self.model, self.package.metadata, [version]).encode()
        config_sha = hashlib.sha256(config).hexdigest()
        config_key = f"{self.model.name}/{CONFIG_FILE}"
        if self.store.stored_sha256(config_key) != config_sha:
            self.store.put_file(config_key, config, sha256=config_sha)
            self._count_bytes(len(config))
        manifest = json.dumps(
            self._manifest_document(journal, config_sha, len(config)), indent=2, sort_keys=True
        )
        if self.store.create_if_absent(self.key(version, MANIFEST), manifest.encode()):
            self._count_bytes(len(manifest))
        elif not self._holds_package(self._manifest(version)):
            raise FleetRuntimeError(
                f"{self.model.name} version {version}: another manifest with other files appeared "
                "while pushing; nothing of this push was published"
            )

    def _manifest_document(self, journal: Journal, config_sha: str, config_size: int) -> dict[str, Any]:
        metadata = self.package.metadata
        now = utc_now()
        return {
            "manifest_version": MANIFEST_VERSION,
            "model": self.model.name,
            "version": journal.version,
            "files": self.package.file_entries(),
            "config_pbtxt": {"sha256": config_sha, "size": config_size},
            "created_at": now,
            "source": metadata.source.uri,  # as gpufleet/store.py's publisher writes it
            "engine": metadata.model_dump(mode="json"),
            "lineage": {
                "source": metadata.source.model_dump(mode="json"),
                "git_commit": self.lineage.get("git_commit"),
                "git_dirty": self.lineage.get("git_dirty"),
                "builder": f"{metadata.builder.user}@{metadata.builder.host}",
                "built_at": metadata.built_at,
                "pushed_by": _who(),
                "pushed_at": now,
                "push_owner": journal.owner,
                "package_digest": self.package.digest,
            },
        }

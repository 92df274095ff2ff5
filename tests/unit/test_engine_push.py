"""`engine push` against a real moto S3 server: what the fleet's store reader sees, re-pushes, concurrent
pushes, a push that crashes before or after each of its store writes, and the CLI's lines.

Every check of a listed version reads it with an independent boto3 reader (tests/store_reader.py) and
hashes the stored bytes itself, independent of the push code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from gpufleet.errors import UserError
from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS
from gpufleet.objectstore import ObjectStore
from gpufleet.objectstore.emulators import KINDS, Emulator, EmulatorKind
from gpufleet.spec import ModelSpec, parse_fleet
from pipelines.engines.build import build_engine
from pipelines.engines.package import read_package
from pipelines.engines.push import Journal, PushResult, git_lineage, journal_stem, push_package
from tests.conftest import GPUFLEET
from tests.objectstore_servers import emulator_or_skip
from tests.store_reader import StoreReader

REPO = Path(__file__).resolve().parents[2]
BUCKET = "engine-push"
ENGINE_CLI = GPUFLEET  # python -m gpufleet

FLEET = """
name: eng
clusters: [{name: local-a, cloud: local, wave: 1}]
model_store: {bucket: engine-push}
models:
  - name: mlp
    source: builtin:mlp
    inputs: [{name: INPUT, dtype: FP32, dims: [16]}]
    outputs: [{name: OUTPUT, dtype: FP32, dims: [4]}]
    triton: {max_batch_size: 8}
"""


def mlp_spec(text: str = FLEET) -> ModelSpec:
    return parse_fleet(text).model("mlp")


def make_package(folder: Path, extra: dict[str, bytes] | None = None, spec: ModelSpec | None = None) -> Path:
    """A CPU package of the builtin MLP plus `extra` files (stand-ins for weights, tokenizers...)."""
    build_engine(spec or mlp_spec(), target="cpu", out=folder)
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    return folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the server and a fresh prefix per test --------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator_or_skip("s3", tmp_path_factory.mktemp("moto")) as server:
        server.open(BUCKET).ensure_bucket()
        yield server


@pytest.fixture
def prefix() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(moto: Emulator, prefix: str) -> ObjectStore:
    return moto.open(BUCKET, prefix)


@pytest.fixture
def reader(moto: Emulator, prefix: str) -> StoreReader:
    """How `gpufleet up` reads the store."""
    return StoreReader(BUCKET, prefix, moto.endpoint, credentials=LOCAL_S3_CREDENTIALS)


def stored_version_problem(reader: StoreReader, model: str, version: int) -> str | None:
    """Why a listed version is not whole: a file of its manifest missing, or not the bytes it names."""
    manifest = reader.manifest(model, version)
    if manifest is None:
        return "no manifest"
    for name, entry in manifest["files"].items():
        try:
            body = reader.s3.get_object(Bucket=reader.bucket, Key=reader.key(model, version, name))[
                "Body"
            ].read()
        except reader.s3.exceptions.NoSuchKey:
            return f"{name} is missing"
        if len(body) != entry["size"] or sha(body) != entry["sha256"]:
            return f"{name} does not match the manifest"
    return None


def push(
    store: ObjectStore, folder: Path, journal: Path, *, spec: ModelSpec | None = None, **options: Any
) -> PushResult:
    return push_package(store, spec or mlp_spec(), read_package(folder), journal_dir=journal, **options)


# --- what readers see ------------------------------------------------------------------------------


def test_pushed_version_is_listed_by_the_fleet_reader_and_every_file_matches(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    folder = make_package(tmp_path / "pkg", {"weights.bin": os.urandom(300_000)})
    result = push(store, folder, tmp_path / "journal", lineage=git_lineage(REPO))

    assert (result.version, result.resumed, result.already_published) == (1, False, False)
    assert reader.versions("mlp") == [1]
    manifest = reader.manifest("mlp", 1)
    assert manifest is not None
    on_disk = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert manifest["files"] == {n: {"sha256": sha(b), "size": len(b)} for n, b in on_disk.items()}
    assert stored_version_problem(reader, "mlp", 1) is None
    assert result.bytes_uploaded >= sum(len(b) for b in on_disk.values())
    assert result.uploaded == sorted(on_disk) and result.skipped == []

    assert manifest["engine"] == json.loads(on_disk["engine.json"])
    lineage = manifest["lineage"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert lineage["git_commit"] == head.stdout.strip()
    assert lineage["source"]["sha256"] == sha(on_disk["model.onnx"])
    assert lineage["builder"] and lineage["pushed_by"] and lineage["pushed_at"]

    config = text_format.Parse(
        reader.s3.get_object(Bucket=BUCKET, Key=reader.key("mlp", "config.pbtxt"))["Body"].read().decode(),
        model_config_pb2.ModelConfig(),
    )
    assert config.backend == "python" and list(config.version_policy.specific.versions) == [1]
    assert manifest["config_pbtxt"]["sha256"] == sha(
        reader.s3.get_object(Bucket=BUCKET, Key=reader.key("mlp", "config.pbtxt"))["Body"].read()
    )
    assert not list((tmp_path / "journal").glob("*.json"))  # a finished push leaves no journal


def test_unchanged_re_push_uploads_nothing_and_a_changed_one_is_the_next_version(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    folder = make_package(tmp_path / "pkg", {"weights.bin": b"w" * 50_000})
    push(store, folder, tmp_path / "j")

    again = push(store, folder, tmp_path / "j")
    assert (again.version, again.already_published, again.bytes_uploaded, again.uploaded) == (1, True, 0, [])
    assert sorted(again.skipped) == sorted(p.name for p in folder.iterdir())
    assert reader.versions("mlp") == [1]

    (folder / "weights.bin").write_bytes(b"v" * 50_000)
    changed = push(store, folder, tmp_path / "j")
    assert changed.version == 2 and "weights.bin" in changed.uploaded
    assert reader.versions("mlp") == [1, 2]
    assert stored_version_problem(reader, "mlp", 2) is None


def test_a_package_for_another_signature_is_refused_before_anything_moves(
    tmp_path: Path, store: ObjectStore
) -> None:
    folder = make_package(tmp_path / "pkg")
    other = mlp_spec(FLEET.replace("max_batch_size: 8", "max_batch_size: 4"))
    with pytest.raises(UserError, match="built with max_batch_size 8, the fleet file says 4; rebuild"):
        push(store, folder, tmp_path / "j", spec=other)
    assert store.list_keys() == []


# --- numbers ---------------------------------------------------------------------------------------


def test_concurrent_pushes_of_one_model_get_distinct_versions(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    pushers = 6
    packages = [
        make_package(tmp_path / f"pkg{i}", {"weights.bin": os.urandom(20_000)}) for i in range(pushers)
    ]
    loaded = [read_package(p) for p in packages]
    start = threading.Barrier(pushers)
    results: dict[int, PushResult] = {}

    def one(i: int) -> None:
        start.wait()
        results[i] = push_package(store, mlp_spec(), loaded[i], journal_dir=tmp_path / "j")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(pushers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(r.version for r in results.values()) == list(range(1, pushers + 1))
    assert reader.versions("mlp") == list(range(1, pushers + 1))
    for i, result in results.items():
        manifest = reader.manifest("mlp", result.version)
        assert manifest is not None and manifest["files"] == loaded[i].file_entries()
        assert stored_version_problem(reader, "mlp", result.version) is None


def test_explicit_version_taken_by_another_push_fails_cleanly(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    first = make_package(tmp_path / "a", {"w": b"a" * 1000})
    second = make_package(tmp_path / "b", {"w": b"b" * 1000})
    assert push(store, first, tmp_path / "j", version=3).version == 3
    with pytest.raises(UserError, match="--version 3: mlp version 3 is already published with other files"):
        push(store, second, tmp_path / "j", version=3)
    assert push(store, first, tmp_path / "j", version=3).already_published  # the same package: fine
    assert reader.versions("mlp") == [3]
    manifest = reader.manifest("mlp", 3)
    assert manifest is not None and manifest["files"]["w"]["sha256"] == sha(b"a" * 1000)


def test_two_pushes_asking_for_one_number_at_once_one_fails_cleanly(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    packages = [read_package(make_package(tmp_path / f"p{i}", {"w": bytes([i]) * 5000})) for i in range(4)]
    start = threading.Barrier(len(packages))
    outcomes: dict[int, object] = {}

    def one(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = push_package(store, mlp_spec(), packages[i], journal_dir=tmp_path / "j", version=7)
        except UserError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(packages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, o in outcomes.items() if isinstance(o, PushResult)]
    assert len(winners) == 1, outcomes
    losers = [o for o in outcomes.values() if isinstance(o, UserError)]
    assert len(losers) == len(packages) - 1 and all("--version 7" in str(e) for e in losers)
    manifest = reader.manifest("mlp", 7)
    assert manifest is not None and manifest["files"] == packages[winners[0]].file_entries()
    assert reader.versions("mlp") == [7]


def test_a_number_whose_folder_has_files_but_no_reservation_is_not_reused(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    # What gpufleet/store.py's publisher leaves when it dies before its manifest: files, no manifest.
    store.put_file("mlp/1/model.onnx", b"half", sha256=sha(b"half"))
    folder = make_package(tmp_path / "pkg")
    assert push(store, folder, tmp_path / "j").version == 2
    with pytest.raises(UserError, match="--version 1: mlp version 1 is taken"):
        push(store, make_package(tmp_path / "other", {"x": b"x"}), tmp_path / "j", version=1)
    assert store.get_bytes("mlp/1/model.onnx") == b"half"


def test_a_running_push_is_never_resumed_by_another_and_a_dead_one_is(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    folder = make_package(tmp_path / "pkg")
    package = read_package(folder)
    # A push of this very package that reserved version 1 and is still running (holds its journal lock).
    live = Journal.start(tmp_path / "j", journal_stem(store, "mlp", package))
    reservation = json.dumps({"owner": live.owner, "version": 1})
    live.record(1, reservation)
    assert store.create_if_absent("mlp/1/.reservation.json", reservation.encode())

    other = push(store, folder, tmp_path / "j")
    assert other.version == 2 and not other.resumed

    live.release()  # that process died: its journal is free to take over
    taken_over = push(store, folder, tmp_path / "j")
    assert (taken_over.version, taken_over.resumed) == (1, True)
    assert reader.versions("mlp") == [1, 2]
    assert stored_version_problem(reader, "mlp", 1) is None


# --- crashes ---------------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: no `except Exception` in the push may catch it."""


WRITES = ("put_file", "copy", "create_if_absent", "replace_if_unchanged", "delete")


def crashing_at(store: ObjectStore, at: int, when: str) -> list[str]:
    """Make `store` die just before (or just after) its `at`-th write; return the writes it saw."""
    seen: list[str] = []
    lock = threading.Lock()
    for name in WRITES:
        real: Callable[..., Any] = getattr(store, name)

        def wrapper(*args: Any, _real: Callable[..., Any] = real, _name: str = name, **kwargs: Any) -> Any:
            with lock:
                seen.append(f"{_name} {args[0]}")
                index = len(seen)
            if index == at and when == "before":
                raise Crash(seen[-1])
            result = _real(*args, **kwargs)
            if index == at and when == "after":
                raise Crash(seen[-1])
            return result

        setattr(store, name, wrapper)
    return seen


@pytest.mark.parametrize("before", ["nothing", "a published version"])
def test_a_push_dying_around_any_write_shows_no_partial_version_and_a_rerun_completes_it(
    tmp_path: Path, moto: Emulator, prefix: str, before: str
) -> None:
    """Over a published version 1 the push of version 2 copies its unchanged files: dying around
    each copy is covered too."""
    folder = make_package(tmp_path / "pkg", {"a.bin": os.urandom(10_000), "b.bin": os.urandom(20_000)})
    earlier = tmp_path / "earlier"
    if before == "a published version":
        shutil.copytree(folder, earlier)
        (folder / "b.bin").write_bytes(os.urandom(20_000))  # one file changes, four stay
    expected = 1 if before == "nothing" else 2

    def fresh_store(case: str) -> ObjectStore:
        store = moto.open(BUCKET, case)
        if before == "a published version":
            assert push(store, earlier, tmp_path / f"j-earlier-{case}").version == 1
        return store

    counting = fresh_store(f"{prefix}-count")
    writes = crashing_at(counting, at=0, when="never")
    push(counting, folder, tmp_path / "j0")
    # reservation, 6 files (uploaded, or 5 copied and 1 uploaded), config.pbtxt, manifest
    assert len(writes) == 9, writes
    assert len([w for w in writes if w.startswith("copy ")]) == (0 if before == "nothing" else 5), writes

    for at in range(1, len(writes) + 1):
        for when in ("before", "after"):
            case = f"{prefix}-{at}-{when}"
            journal = tmp_path / f"j-{case}"
            dying = fresh_store(case)
            crashing_at(dying, at, when)
            with pytest.raises(Crash):
                push(dying, folder, journal)
            reader = StoreReader(BUCKET, case, moto.endpoint, credentials=LOCAL_S3_CREDENTIALS)
            listed = reader.versions("mlp")
            assert listed in (list(range(1, expected)), list(range(1, expected + 1))), (at, when, listed)
            for version in listed:
                assert stored_version_problem(reader, "mlp", version) is None, (at, when)

            rerun = push(moto.open(BUCKET, case), folder, journal)
            assert rerun.version == expected, (at, when)
            assert reader.versions("mlp") == list(range(1, expected + 1)), (at, when)
            assert stored_version_problem(reader, "mlp", expected) is None, (at, when)
            assert not list(journal.glob("*.json")), (at, when)


def test_a_rerun_uploads_only_what_the_dead_push_had_not(
    tmp_path: Path, moto: Emulator, prefix: str, reader: StoreReader
) -> None:
    folder = make_package(tmp_path / "pkg", {"a.bin": os.urandom(40_000)})
    files = sorted(p.name for p in folder.iterdir())
    dying = moto.open(BUCKET, prefix)
    # Writes: the reservation, each file, config.pbtxt, the manifest: die just before the manifest.
    crashing_at(dying, at=len(files) + 3, when="before")
    with pytest.raises(Crash, match="create_if_absent mlp/1/manifest.json"):
        push(dying, folder, tmp_path / "j")
    assert reader.versions("mlp") == []

    rerun = push(moto.open(BUCKET, prefix), folder, tmp_path / "j")
    assert rerun.resumed and rerun.uploaded == [] and rerun.skipped == files
    manifest = reader.s3.get_object(Bucket=BUCKET, Key=reader.key("mlp", 1, "manifest.json"))["Body"].read()
    assert rerun.bytes_uploaded == len(manifest)  # nothing but the manifest went up again
    assert stored_version_problem(reader, "mlp", 1) is None


# --- the CLI ---------------------------------------------------------------------------------------


def engine_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
    env |= {"COLUMNS": "300", **LOCAL_S3_CREDENTIALS}
    return subprocess.run([*ENGINE_CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=env)


def test_cli_push_prints_bytes_uploaded_and_an_unchanged_re_push_uploads_zero(
    tmp_path: Path, moto: Emulator, prefix: str, reader: StoreReader
) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    folder = make_package(tmp_path / "pkg")
    args = ("engine", "push", "mlp", "--from", str(folder), "--store", f"s3://{BUCKET}/{prefix}")
    args += ("--endpoint", moto.endpoint, "--home", "home")

    first = engine_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    total = sum(p.stat().st_size for p in folder.iterdir())
    counts = dict(pair.split("=") for pair in first.stdout.strip().splitlines()[-1].split())
    assert counts["version"] == "1" and counts["files_uploaded"] == "4" and counts["files_skipped"] == "0"
    assert int(counts["bytes_uploaded"]) > total

    again = engine_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "version=1 bytes_uploaded=0 files_uploaded=0 files_copied=0 files_skipped=4" in again.stdout
    assert "already holds this package" in again.stdout
    assert reader.versions("mlp") == [1]


def test_cli_push_mistakes_are_one_line_exit_2(tmp_path: Path, moto: Emulator, prefix: str) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    store = ("--store", f"s3://{BUCKET}/{prefix}", "--endpoint", moto.endpoint)
    push(moto.open(BUCKET, prefix), make_package(tmp_path / "a", {"w": b"a"}), tmp_path / "j", version=2)
    other = str(make_package(tmp_path / "b", {"w": b"b"}))
    cases = [
        (
            ("mlp", "--from", other, "--version", "2", *store),
            "--version 2: mlp version 2 is already published",
        ),
        (
            ("mlp", "--from", other),
            "no local fleet is running from home: start one with `gpufleet up`, or pass --store",
        ),
        (("mlp", "--from", "nowhere", *store), "--from nowhere: no engine package there"),
        (("bert", "--from", other, *store), "model 'bert' is not in the fleet file"),
        (("mlp", "--from", other, "--endpoint", moto.endpoint), "--endpoint: only with --store"),
    ]
    for args, expected in cases:
        done = engine_cli("engine", "push", *args, "--home", "home", cwd=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (expected, done.stderr)
        assert expected in lines[0], (expected, lines[0])


def test_engine_commands_are_on_the_gpufleet_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gpufleet", "engine", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "push" in done.stdout and "build" in done.stdout, done.stderr


# --- the other clouds' stores ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=KINDS)
def cloud(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    kind: EmulatorKind = request.param
    if kind == "s3":
        yield request.getfixturevalue("moto")
        return
    with emulator_or_skip(kind, tmp_path_factory.mktemp(f"{kind}-emulator")) as server:
        server.open(BUCKET).ensure_bucket()
        yield server


def test_push_and_unchanged_re_push_on_every_cloud(tmp_path: Path, cloud: Emulator) -> None:
    store = cloud.open(BUCKET, f"p-{uuid.uuid4().hex[:8]}")
    folder = make_package(tmp_path / "pkg", {"weights.bin": os.urandom(100_000)})
    first = push(store, folder, tmp_path / "j")
    assert first.version == 1 and first.bytes_uploaded > 100_000
    manifest = json.loads(store.get_bytes("mlp/1/manifest.json") or b"{}")
    for name, entry in manifest["files"].items():
        assert (
            sha(store.get_bytes(f"mlp/1/{name}") or b"")
            == entry["sha256"]
            == sha((folder / name).read_bytes())
        )
    again = push(store, folder, tmp_path / "j")
    assert (again.version, again.bytes_uploaded) == (1, 0)


def test_a_new_version_copies_the_files_the_last_one_already_has(tmp_path: Path, cloud: Emulator) -> None:
    store = cloud.open(BUCKET, f"p-{uuid.uuid4().hex[:8]}")
    weights, vocab = os.urandom(300_000), b'{"tokens": ["a", "b"]}'
    folder = make_package(tmp_path / "pkg", {"weights.bin": weights, "vocab.json": vocab})
    first = push(store, folder, tmp_path / "j")
    assert first.version == 1 and first.copied == []

    (folder / "vocab.json").write_bytes(vocab + b"\n")  # one byte more: changed
    (folder / "weights.bin").rename(folder / "weights-00.bin")  # same bytes, another name
    on_disk = {p.name: p.read_bytes() for p in folder.iterdir()}
    second = push(store, folder, tmp_path / "j")

    assert second.version == 2
    assert second.uploaded == ["vocab.json"]
    assert second.copied == sorted(set(on_disk) - {"vocab.json"})
    assert second.skipped == []
    assert len(vocab) + 1 <= second.bytes_uploaded < sum(len(b) for b in on_disk.values())
    assert second.bytes_uploaded < len(weights)  # the weights did not go up again
    manifest = json.loads(store.get_bytes("mlp/2/manifest.json") or b"{}")
    assert manifest["files"] == {n: {"sha256": sha(b), "size": len(b)} for n, b in on_disk.items()}
    for name, entry in manifest["files"].items():
        # The bytes really stored (not their metadata), and the sha256 recorded with each object.
        assert store.sha256_and_size(f"mlp/2/{name}") == (entry["sha256"], entry["size"]), name
        assert store.stored_sha256(f"mlp/2/{name}") == entry["sha256"], name
    assert store.sha256_and_size("mlp/1/weights.bin") == (sha(weights), len(weights))


def test_only_files_of_a_published_version_are_copied(
    tmp_path: Path, store: ObjectStore, reader: StoreReader
) -> None:
    shard, weights, gone = os.urandom(20_000), os.urandom(30_000), os.urandom(10_000)
    push(store, make_package(tmp_path / "v1", {"weights.bin": weights, "gone.bin": gone}), tmp_path / "j")
    # Version 2 has the shard but no manifest (a push that died, or is still going): not a source.
    store.put_file("mlp/2/shard.bin", shard, sha256=sha(shard))
    # A file of version 1 deleted since: its manifest entry no longer makes it a source either.
    store.delete("mlp/1/gone.bin")
    folder = make_package(tmp_path / "v3", {"weights.bin": weights, "shard.bin": shard, "gone.bin": gone})

    third = push(store, folder, tmp_path / "j")
    assert third.version == 3
    assert {"weights.bin", "model.onnx"} <= set(third.copied)
    assert {"shard.bin", "gone.bin"} <= set(third.uploaded)
    assert stored_version_problem(reader, "mlp", 3) is None


class RecordedProgress:
    def __init__(self) -> None:
        self.total = -1
        self.advances: list[int] = []
        self._lock = threading.Lock()

    def note(self, text: str) -> None:
        pass

    def begin(self, total_bytes: int) -> None:
        self.total = total_bytes

    def advance(self, done_bytes: int) -> None:
        with self._lock:
            self.advances.append(done_bytes)


def test_progress_moves_with_bytes_and_copied_files_count_whole(tmp_path: Path, store: ObjectStore) -> None:
    big = os.urandom(12 * 1024 * 1024)  # above the multipart threshold: in parts
    folder = make_package(tmp_path / "pkg", {"weights.bin": big})
    total = sum(p.stat().st_size for p in folder.iterdir())
    first = RecordedProgress()
    push(store, folder, tmp_path / "j", progress=first)
    assert first.total == total and sum(first.advances) == total
    assert len(first.advances) > 2 * len(list(folder.iterdir()))  # many moves per file, not one
    assert max(first.advances) < len(big)

    (folder / "engine.json").write_bytes((folder / "engine.json").read_bytes() + b" ")
    second = RecordedProgress()
    result = push(store, folder, tmp_path / "j", progress=second)
    assert "weights.bin" in result.copied
    assert second.total == total + 1 and sum(second.advances) == total + 1
    assert len(big) in second.advances  # the copied file: its size at once

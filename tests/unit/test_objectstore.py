"""One contract for the three object stores, each against its real local server (moto, gcp-storage-emulator,
Azurite), plus the failures a user sees as one StoreError line.

gcp-storage-emulator ignores `ifGenerationMatch`: the conditional-write tests run on it as strict xfails,
so they show the gap and turn red the day the emulator starts honouring preconditions.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gpufleet.local.ports import LOOPBACK, free_port
from gpufleet.objectstore import MiB, ObjectStore, ProgressFromTotals, StoreError, TransferSettings
from gpufleet.objectstore.emulators import KINDS, Emulator, EmulatorKind
from gpufleet.objectstore.s3 import S3Store
from tests.objectstore_servers import emulator_or_skip

BUCKET = "gpufleet-contract"
GCS_IGNORES_PRECONDITIONS = pytest.mark.xfail(
    reason="gcp-storage-emulator ignores ifGenerationMatch (real GCS honours it)", strict=True
)
# Fast failures for the error tests: one try, short timeouts.
NO_RETRY = TransferSettings(retry_attempts=1, timeout_s=5)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session", params=KINDS)
def emulator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    kind: EmulatorKind = request.param
    with emulator_or_skip(kind, tmp_path_factory.mktemp(f"{kind}-emulator")) as server:
        server.open(BUCKET).ensure_bucket()
        yield server


@pytest.fixture
def store(emulator: Emulator) -> ObjectStore:
    """A fresh prefix in the shared bucket: tests never see each other's keys."""
    return emulator.open(BUCKET, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def strict_conditions(request: pytest.FixtureRequest, emulator: Emulator) -> None:
    if emulator.kind == "gcs":
        request.applymarker(GCS_IGNORES_PRECONDITIONS)


# --- files and metadata -------------------------------------------------------------------------


def test_bytes_round_trip_with_sha256_and_metadata(store: ObjectStore) -> None:
    data = b"engine bytes \x00\xff"
    store.put_file("m/1/model.plan", data, sha256=sha(data), metadata={"precision": "fp16"})
    assert store.get_bytes("m/1/model.plan") == data
    assert store.stored_sha256("m/1/model.plan") == sha(data)
    assert store.stored_metadata("m/1/model.plan") == {"precision": "fp16", "sha256": sha(data)}


def test_file_from_disk_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(os.urandom(100_000))
    store.put_file("m/1/model.onnx", path, sha256=sha(path.read_bytes()))
    assert store.get_bytes("m/1/model.onnx") == path.read_bytes()


def test_missing_key_reads_as_none(store: ObjectStore) -> None:
    assert store.get_bytes("nothing/here") is None
    assert store.read("nothing/here") is None
    assert store.stored_sha256("nothing/here") is None
    assert store.stored_metadata("nothing/here") is None


def test_changed_file_is_told_apart_from_unchanged(store: ObjectStore) -> None:
    first, second = b"version one", b"version two"
    store.put_file("m/config.pbtxt", first, sha256=sha(first))
    assert store.stored_sha256("m/config.pbtxt") == sha(first)  # a re-push can skip it
    store.put_file("m/config.pbtxt", second, sha256=sha(second))
    assert store.stored_sha256("m/config.pbtxt") == sha(second)
    assert store.get_bytes("m/config.pbtxt") == second


def test_listing_keys_and_prefixes(store: ObjectStore) -> None:
    for key in ("m/1/a", "m/1/b", "m/2/a", "m/config.pbtxt", "other/x"):
        store.put_file(key, key.encode(), sha256=sha(key.encode()))
    assert store.list_keys("m/") == ["m/1/a", "m/1/b", "m/2/a", "m/config.pbtxt"]
    assert store.list_keys() == ["m/1/a", "m/1/b", "m/2/a", "m/config.pbtxt", "other/x"]
    assert store.list_prefixes("m/") == ["m/1/", "m/2/"]
    assert store.list_prefixes() == ["m/", "other/"]
    assert store.list_keys("absent/") == [] and store.list_prefixes("absent/") == []


def test_delete_and_delete_of_missing_key(store: ObjectStore) -> None:
    store.put_file("k", b"x", sha256=sha(b"x"))
    store.delete("k")
    assert store.get_bytes("k") is None
    store.delete("k")  # already gone: fine


# --- progress of uploads ---------------------------------------------------------------------------


class Increments:
    """A put_file progress callback that keeps every increment (called from the SDKs' threads)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, n_bytes: int) -> None:
        with self._lock:
            self.seen.append(n_bytes)


def test_totals_that_go_back_or_arrive_out_of_order_add_nothing() -> None:
    """A retried chunk read again (GCS) or parallel blocks' totals out of order (Blob) count once."""
    increments = Increments()
    totals = ProgressFromTotals(increments)
    for done in (100, 250, 100, 250, 400, 300, 500):
        totals(done)
    assert increments.seen == [100, 150, 150, 100]


def test_progress_of_small_uploads_adds_up_to_their_size(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(os.urandom(70_001))
    from_file, from_bytes = Increments(), Increments()
    store.put_file("a", path, sha256=sha(path.read_bytes()), progress=from_file)
    store.put_file("b", b"x" * 333, sha256=sha(b"x" * 333), progress=from_bytes)
    assert sum(from_file.seen) == 70_001 and sum(from_bytes.seen) == 333
    assert store.sha256_and_size("a") == (sha(path.read_bytes()), 70_001)


# --- the real digest of stored bytes ---------------------------------------------------------------


def test_sha256_and_size_hashes_the_stored_bytes(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)  # several read chunks, the last one short
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    store.put_file("m/1/weights.bin", path, sha256=sha(data))
    assert store.sha256_and_size("m/1/weights.bin") == (hashlib.sha256(data).hexdigest(), len(data))


def test_sha256_and_size_ignores_a_lying_metadata_digest(store: ObjectStore) -> None:
    data, lie = b"the bytes really stored", sha(b"some other bytes")
    store.put_file("m/1/model.plan", data, sha256=lie)
    assert store.stored_sha256("m/1/model.plan") == lie  # the metadata does lie
    assert store.sha256_and_size("m/1/model.plan") == (sha(data), len(data))


def test_sha256_and_size_of_a_missing_or_empty_object(store: ObjectStore) -> None:
    assert store.sha256_and_size("nothing/here") is None
    store.put_file("empty", b"", sha256=sha(b""))
    assert store.sha256_and_size("empty") == (sha(b""), 0)


# --- server-side copies ---------------------------------------------------------------------------


def test_copy_makes_an_equal_object_carrying_the_given_sha256(store: ObjectStore) -> None:
    data = os.urandom(50_000)
    store.put_file("m/1/weights.bin", data, sha256=sha(data), metadata={"precision": "fp16"})
    store.copy("m/1/weights.bin", "m/2/weights.bin", sha256=sha(data))
    assert store.sha256_and_size("m/2/weights.bin") == (sha(data), len(data))
    assert store.stored_sha256("m/2/weights.bin") == sha(data)
    assert store.sha256_and_size("m/1/weights.bin") == (sha(data), len(data))  # the source stays
    assert store.list_keys("m/") == ["m/1/weights.bin", "m/2/weights.bin"]


def test_copy_records_its_own_sha256_not_the_sources(store: ObjectStore) -> None:
    data, lie = b"real bytes", sha(b"not these bytes")
    store.put_file("src", data, sha256=lie)
    store.copy("src", "dst", sha256=sha(data))
    assert store.stored_sha256("dst") == sha(data)
    assert store.stored_sha256("src") == lie


def test_copy_of_a_missing_source_is_one_line_and_creates_nothing(store: ObjectStore) -> None:
    with pytest.raises(StoreError) as caught:
        store.copy("m/1/gone.bin", "m/2/gone.bin", sha256=sha(b""))
    assert str(caught.value) == (
        f"object store {store.url}: copy 'm/1/gone.bin -> m/2/gone.bin' failed: "
        "the source object does not exist"
    )
    assert store.list_keys() == []


# --- one big file in parts ----------------------------------------------------------------------

BIG = 20 * MiB
PARTS = math.ceil(BIG / TransferSettings().part_size)  # 20 MiB in 8 MiB parts: 3


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "engine.plan"
    path.write_bytes(os.urandom(BIG))
    return path


def test_big_file_goes_up_in_parts(emulator: Emulator, big_file: Path) -> None:
    prefix = f"big-{uuid.uuid4().hex[:8]}"
    store, sent_chunks = _store_observing_parts(emulator, prefix)
    digest = sha(big_file.read_bytes())
    store.put_file("engine.plan", big_file, sha256=digest)

    assert _parts_of(emulator, store, "engine.plan", sent_chunks) == PARTS
    assert store.stored_sha256("engine.plan") == digest
    assert sha(store.get_bytes("engine.plan") or b"") == digest


def test_big_object_copy_is_whole_and_in_parts_on_s3(emulator: Emulator, big_file: Path) -> None:
    """Above multipart_threshold S3 copies in UploadPartCopy parts: the path objects over 5 GB need."""
    store = emulator.open(BUCKET, f"copy-{uuid.uuid4().hex[:8]}")
    digest = sha(big_file.read_bytes())
    store.put_file("m/1/engine.plan", big_file, sha256=digest)
    store.copy("m/1/engine.plan", "m/2/engine.plan", sha256=digest)
    assert store.sha256_and_size("m/2/engine.plan") == (digest, BIG)
    assert store.stored_sha256("m/2/engine.plan") == digest
    if emulator.kind == "s3":
        assert isinstance(store, S3Store)
        whole = store.s3.head_object(Bucket=store.bucket, Key=store.full_key("m/2/engine.plan"))
        assert str(whole["ETag"]).endswith(f'-{PARTS}"'), whole["ETag"]


def test_sha256_and_size_memory_does_not_grow_with_the_object(
    emulator: Emulator, big_file: Path, tmp_path: Path
) -> None:
    """Hashing twice the bytes takes no more memory: the object streams through, whatever its size.

    (Absolute peaks are each SDK's buffering of one range; Azure's is about 50 MiB for 4 MiB ranges.)
    """
    store = emulator.open(BUCKET, f"digest-{uuid.uuid4().hex[:8]}")
    double = tmp_path / "double.plan"
    double.write_bytes(big_file.read_bytes() * 2)
    peaks = {}
    for path in (big_file, double):
        data = path.read_bytes()
        store.put_file(path.name, path, sha256=sha(data))
        expected = (sha(data), len(data))
        del data
        tracemalloc.start()
        try:
            assert store.sha256_and_size(path.name) == expected
            peaks[path.stat().st_size] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    grown = peaks[2 * BIG] - peaks[BIG]
    assert grown < BIG // 4, (
        f"peak {peaks[BIG] / MiB:.0f} MiB for {BIG // MiB} MiB, +{grown / MiB:.0f} MiB for twice that"
    )


def test_progress_of_a_big_upload_moves_part_by_part_and_adds_up_to_its_size(
    emulator: Emulator, big_file: Path
) -> None:
    store = emulator.open(BUCKET, f"progress-{uuid.uuid4().hex[:8]}")
    increments = Increments()
    store.put_file("engine.plan", big_file, sha256=sha(big_file.read_bytes()), progress=increments)
    assert sum(increments.seen) == BIG
    # At least one report per part, each smaller than the file: the bar moves while it goes up.
    assert len([n for n in increments.seen if n > 0]) >= PARTS
    assert max(increments.seen) < BIG
    assert store.sha256_and_size("engine.plan") == (sha(big_file.read_bytes()), BIG)


def _store_observing_parts(emulator: Emulator, prefix: str) -> tuple[ObjectStore, list[str]]:
    """GCS's chunked upload leaves no trace on the object: count the chunk requests instead."""
    if emulator.kind != "gcs":
        return emulator.open(BUCKET, prefix), []
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from gpufleet.objectstore.gcs import GcsStore

    sent: list[str] = []

    class CountingSession(requests.Session):
        def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            if method == "PUT" and "upload_id=" in str(url):
                sent.append(str(url))
            return super().request(method, url, *args, **kwargs)

    client = storage.Client(
        project="gpufleet-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.endpoint},
        _http=CountingSession(),
    )
    store = GcsStore(
        emulator.url(BUCKET, prefix), client, BUCKET, prefix, TransferSettings(), parallel_chunks=False
    )
    return store, sent


def _parts_of(emulator: Emulator, store: Any, key: str, sent_chunks: list[str]) -> int:
    if emulator.kind == "s3":
        whole = store.s3.head_object(Bucket=store.bucket, Key=store.full_key(key))
        assert str(whole["ETag"]).endswith(f'-{PARTS}"'), whole["ETag"]  # S3's multipart ETag: md5-N
        part = store.s3.head_object(Bucket=store.bucket, Key=store.full_key(key), PartNumber=1)
        return int(part["PartsCount"])
    if emulator.kind == "blob":
        committed, _ = store.container.get_blob_client(store.full_key(key)).get_block_list("committed")
        return len(committed)
    return len(sent_chunks)


@pytest.mark.parametrize("emulator", ["gcs"], indirect=True)
def test_gcs_emulator_lacks_the_xml_multipart_api(emulator: Emulator, big_file: Path) -> None:
    """Why GCS against the emulator uses resumable chunks: the parallel (XML multipart) path gets 501.

    Turns red when the emulator gains the API; then parallel chunks can be tested here too.
    """
    from gpufleet.objectstore.gcs import GcsStore

    store = emulator.open(BUCKET, "xml-mpu")
    assert isinstance(store, GcsStore)
    store.parallel_chunks = True
    with pytest.raises(StoreError, match="HTTP 501"):
        store.put_file("engine.plan", big_file, sha256="0" * 64)


# --- conditional writes ---------------------------------------------------------------------------


@pytest.mark.usefixtures("strict_conditions")
def test_create_if_absent_refuses_an_existing_key(store: ObjectStore) -> None:
    assert store.create_if_absent("locks/rollout", b"owner-a") is True
    assert store.create_if_absent("locks/rollout", b"owner-b") is False
    assert store.get_bytes("locks/rollout") == b"owner-a"


def test_create_if_absent_counts_its_own_bytes_as_won(store: ObjectStore) -> None:
    """A retry after a lost response finds its own bytes there: that is a win, not a refusal."""
    assert store.create_if_absent("locks/rollout", b"owner-a") is True
    assert store.create_if_absent("locks/rollout", b"owner-a") is True


@pytest.mark.usefixtures("strict_conditions")
def test_racing_creates_have_exactly_one_winner(store: ObjectStore) -> None:
    racers = 8
    start = threading.Barrier(racers)
    won: list[bytes] = []

    def race(owner: bytes) -> None:
        start.wait()
        if store.create_if_absent("versions/7", owner):
            won.append(owner)

    threads = [threading.Thread(target=race, args=(f"pusher-{i}".encode(),)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1, won
    assert store.get_bytes("versions/7") == won[0]


@pytest.mark.usefixtures("strict_conditions")
def test_compare_and_swap_refuses_a_stale_token(store: ObjectStore) -> None:
    store.put_file("state.json", b"{}", sha256=sha(b"{}"))
    seen = store.read("state.json")
    assert seen is not None and seen.data == b"{}"
    assert store.replace_if_unchanged("state.json", b'{"wave": 1}', seen.token) is True
    # Someone else's swap already happened: the token read before it is stale now.
    assert store.replace_if_unchanged("state.json", b'{"wave": 2}', seen.token) is False
    assert store.get_bytes("state.json") == b'{"wave": 1}'
    now = store.read("state.json")
    assert now is not None and now.token != seen.token
    assert store.replace_if_unchanged("state.json", b'{"wave": 2}', now.token) is True


@pytest.mark.usefixtures("strict_conditions")
def test_compare_and_swap_on_a_missing_key_is_refused(store: ObjectStore) -> None:
    store.put_file("state.json", b"{}", sha256=sha(b"{}"))
    token = store.read("state.json").token  # type: ignore[union-attr]
    store.delete("state.json")
    assert store.replace_if_unchanged("state.json", b"{}x", token) is False
    assert store.get_bytes("state.json") is None


# --- failures: one StoreError line ------------------------------------------------------------------


def test_missing_bucket_is_one_line_naming_store_key_and_operation(emulator: Emulator) -> None:
    store = emulator.open("no-such-bucket", "models", NO_RETRY)
    with pytest.raises(StoreError) as caught:
        store.put_file("m/1/model.plan", b"x", sha256=sha(b"x"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"object store {store.url}: put_file 'm/1/model.plan' failed: ")
    assert "'no-such-bucket' does not exist" in message
    with pytest.raises(StoreError, match="list_keys .* does not exist"):
        store.list_keys("m/")


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_server_is_one_line(kind: EmulatorKind) -> None:
    # A port nobody listens on: what a stopped emulator looks like to its clients.
    down = Emulator(kind=kind, endpoint=f"http://{LOOPBACK}:{free_port()}")
    store = down.open(BUCKET, "models", NO_RETRY)
    with pytest.raises(StoreError) as caught:
        store.get_bytes("m/1/manifest.json")
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"object store {store.url}: read 'm/1/manifest.json' failed: "
        f"cannot connect to {down.endpoint}: Connection refused"
    )

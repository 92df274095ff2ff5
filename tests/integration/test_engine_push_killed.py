"""A real `gpufleet engine push` process SIGKILLed at random moments mid-upload, against a moto server,
while a reader polls the store the way `gpufleet up` does: no version is ever listed whose files are
missing or differ from its manifest, and running the push again completes the same version.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS
from gpufleet.objectstore import MiB
from gpufleet.objectstore.emulators import Emulator
from tests.objectstore_servers import emulator_or_skip
from tests.store_reader import StoreReader
from tests.unit.test_engine_push import ENGINE_CLI, FLEET, make_package, stored_version_problem

pytestmark = pytest.mark.integration

BUCKET = "engine-kill"
KILLS = 8
# ~30 MB in several files: six below the multipart threshold, one in parts.
EXTRA_FILES = {**{f"shard-{i}.bin": 3 * MiB for i in range(6)}, "big.bin": 12 * MiB}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator_or_skip("s3", tmp_path_factory.mktemp("moto")) as server:
        server.open(BUCKET).ensure_bucket()
        yield server


class Watcher(threading.Thread):
    """Polls versions() and each listed version's files (HEAD: size and the sha256 stored with it)."""

    def __init__(self, reader: StoreReader, model: str) -> None:
        super().__init__(daemon=True)
        self.reader, self.model = reader, model
        self.stop = threading.Event()
        self.polls = 0
        self.violations: list[str] = []
        self.seen_listed: set[int] = set()

    def run(self) -> None:
        s3 = self.reader.s3
        while not self.stop.is_set():
            for version in self.reader.versions(self.model):
                self.seen_listed.add(version)
                manifest = self.reader.manifest(self.model, version) or {}
                for name, entry in manifest.get("files", {}).items():
                    key = self.reader.key(self.model, version, name)
                    try:
                        head = s3.head_object(Bucket=self.reader.bucket, Key=key)
                    except s3.exceptions.ClientError:
                        self.violations.append(f"version {version} listed, {name} missing")
                        continue
                    if (
                        head["ContentLength"] != entry["size"]
                        or head["Metadata"].get("sha256") != entry["sha256"]
                    ):
                        self.violations.append(f"version {version} listed, {name} differs from its manifest")
            self.polls += 1


def upload_window(argv: list[str], cwd: Path, env: dict[str, str], moto: Emulator) -> tuple[float, float]:
    s3 = StoreReader(BUCKET, "calibration", moto.endpoint, credentials=LOCAL_S3_CREDENTIALS).s3
    reserved = published = 0.0
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    while not published:
        exited = proc.poll() is not None
        keys = {
            o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="calibration/").get("Contents", [])
        }
        now = time.monotonic() - started
        reserved = reserved or (now if "calibration/mlp/1/.reservation.json" in keys else 0.0)
        published = now if "calibration/mlp/1/manifest.json" in keys else 0.0
        if exited:
            break
        time.sleep(0.01)
    _, stderr = proc.communicate()
    assert proc.returncode == 0 and reserved and published, stderr
    return reserved, published


def test_killed_pushes_never_show_a_partial_version_and_a_rerun_completes_it(
    tmp_path: Path, moto: Emulator
) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    folder = make_package(tmp_path / "pkg", {name: os.urandom(size) for name, size in EXTRA_FILES.items()})
    file_count = len(list(folder.iterdir()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")} | LOCAL_S3_CREDENTIALS

    def command(prefix: str) -> list[str]:
        store = ("--store", f"s3://{BUCKET}/{prefix}", "--endpoint", moto.endpoint)
        return [*ENGINE_CLI, "engine", "push", "mlp", "--from", str(folder), *store, "--home", "home"]

    # One whole push elsewhere, watched: when its upload starts (the reservation appears) and ends (the
    # manifest appears) after the process starts. The kills land in that window.
    window = upload_window(command("calibration"), tmp_path, env, moto)

    reader = StoreReader(BUCKET, "killed", moto.endpoint, credentials=LOCAL_S3_CREDENTIALS)
    watcher = Watcher(reader, "mlp")
    watcher.start()
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    kills, files_after_kill = 0, []
    try:
        for _ in range(KILLS):
            proc = subprocess.Popen(
                command("killed"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(*window))
            if proc.poll() is not None:
                break  # it finished before its kill: nothing left to interrupt
            proc.kill()
            proc.wait()
            kills += 1
            files_after_kill.append(
                len(reader.s3.list_objects_v2(Bucket=BUCKET, Prefix="killed/").get("Contents", []))
            )
        final = subprocess.run(command("killed"), cwd=tmp_path, env=env, capture_output=True, text=True)
        checked = watcher.polls + 2  # it also looks at the finished version, whole polls after it
        while watcher.polls < checked and watcher.is_alive():
            time.sleep(0.01)
    finally:
        watcher.stop.set()
        watcher.join()

    context = (
        f"seed {seed}, kills {kills}, objects after each kill {files_after_kill}, "
        f"upload window {window[0]:.2f}-{window[1]:.2f} s"
    )
    assert final.returncode == 0, f"{final.stderr} ({context})"
    assert watcher.violations == [], context
    assert watcher.polls > 10 and 1 in watcher.seen_listed, context
    assert kills >= 1, context
    assert reader.versions("mlp") == [1], context  # the re-runs completed the same version
    assert stored_version_problem(reader, "mlp", 1) is None, context
    manifest = reader.manifest("mlp", 1)
    assert manifest is not None and len(manifest["files"]) == file_count
    assert not list((tmp_path / "home/push-journal").glob("*.json")), context

"""Local servers that speak each cloud's object-store API, for tests and benchmarks.

moto's server (S3), gcp-storage-emulator (GCS, PyPI) and Azurite (Blob, npm, in node_modules after
`make setup-all`). Each binds 127.0.0.1 on a free port, keeps its data in memory, and is stopped when
its `running_emulator` block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import requests

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.local.ports import LOOPBACK, free_port
from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS, moto_server_spec
from gpufleet.objectstore import ObjectStore, TransferSettings

EmulatorKind = Literal["s3", "gcs", "blob"]
KINDS: tuple[EmulatorKind, ...] = ("s3", "gcs", "blob")
_REPO = Path(__file__).resolve().parents[2]


class EmulatorMissing(UserError):
    """The emulator's program is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Emulator:
    kind: EmulatorKind
    endpoint: str  # http://127.0.0.1:PORT

    def url(self, bucket: str, prefix: str = "") -> str:
        """The store URL `open_store` and the CLI take for this bucket on this emulator."""
        tail = f"{bucket}/{prefix}".rstrip("/")
        if self.kind == "blob":
            from gpufleet.objectstore.azure_blob import AZURITE_ACCOUNT

            return f"{self.endpoint}/{AZURITE_ACCOUNT}/{tail}"
        return f"{'s3' if self.kind == 's3' else 'gs'}://{tail}"

    def open(self, bucket: str, prefix: str = "", settings: TransferSettings | None = None) -> ObjectStore:
        transfer = settings or TransferSettings()
        url = self.url(bucket, prefix)
        if self.kind == "s3":
            from gpufleet.objectstore.s3 import S3Store

            return S3Store.connect(
                url, endpoint_url=self.endpoint, settings=transfer, credentials=LOCAL_S3_CREDENTIALS
            )
        if self.kind == "gcs":
            from gpufleet.objectstore.gcs import GcsStore

            return GcsStore.connect(url, emulator=self.endpoint, settings=transfer)
        from gpufleet.objectstore.azure_blob import BlobStore

        return BlobStore.connect(url, settings=transfer)


def emulator_command(kind: EmulatorKind, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment that run `kind` on 127.0.0.1:port; EmulatorMissing if absent."""
    if kind == "s3":
        spec = moto_server_spec(port)
        return spec.argv, spec.env
    if kind == "gcs":
        exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent))
        if not exe:
            raise EmulatorMissing("gcp-storage-emulator is not installed: pip install -e '.[dev]'")
        return [exe, "start", "--host", LOOPBACK, "--port", str(port), "--in-memory", "--quiet"], {}
    exe = str(_REPO / "node_modules/.bin/azurite-blob")
    if not Path(exe).exists():
        exe = shutil.which("azurite-blob") or ""
    if not exe or not shutil.which("node"):
        raise EmulatorMissing("Azurite is not installed: run `make setup-all` (npm puts it in node_modules)")
    argv = [exe, "--blobHost", LOOPBACK, "--blobPort", str(port), "--inMemoryPersistence"]
    # No telemetry (no network here); any API version the installed SDK sends is accepted.
    return [*argv, "--skipApiVersionCheck", "--disableTelemetry", "--silent"], {}


@contextlib.contextmanager
def running_emulator(
    kind: EmulatorKind, log_dir: Path, *, start_timeout_s: float = 60.0
) -> Iterator[Emulator]:
    """Start `kind`, wait until it answers HTTP, yield it, stop it (and its children) afterwards."""
    port = free_port()
    argv, env = emulator_command(kind, port)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{kind}-emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: stopping it reaches moto's and node's children
        )
    try:
        emulator = Emulator(kind=kind, endpoint=f"http://{LOOPBACK}:{port}")
        _wait_until_answering(emulator, proc, log, start_timeout_s)
        yield emulator
    finally:
        _stop(proc)


def _wait_until_answering(
    emulator: Emulator, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FleetRuntimeError(
                f"the {emulator.kind} emulator exited ({proc.returncode}) at start: {_tail(log)} (log: {log})"
            )
        try:
            requests.get(f"{emulator.endpoint}/", timeout=2)
            return  # any HTTP answer (Azurite says 400 to `/`) means it is serving
        except requests.RequestException:
            time.sleep(0.2)
    raise FleetRuntimeError(
        f"the {emulator.kind} emulator did not answer on {emulator.endpoint} within "
        f"{timeout_s:.0f} s (log: {log})"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The whole group, even when the leader is gone: moto and node may leave children behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    if proc.poll() is None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) if text else "(no output)"

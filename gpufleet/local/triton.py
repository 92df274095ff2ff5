"""tritonserver replicas from the nvidia-pytriton wheel, CPU only, python backend, EXPLICIT mode."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import UserError
from gpufleet.local.ports import LOOPBACK
from gpufleet.local.processes import ProcessSpec
from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - the core install always has it
        raise UserError("nvidia-pytriton is not installed; run `make setup`") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backends(home: Path) -> Path:
    """A backend directory with the python backend and the stub built for this interpreter.

    The wheel keeps one stub per Python version apart from the backend; Triton looks for the stub
    next to libtriton_python.so, so we assemble our own directory instead of editing site-packages.
    """
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise UserError(f"nvidia-pytriton has no python backend stub for Python {version}; use Python 3.11")
    target = home / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for item in (root / "backends" / "python").iterdir():
        if item.is_file():
            _copy_if_changed(item, target / item.name)
    _copy_if_changed(stub, target / stub.name)
    return target.parent


def _copy_if_changed(src: Path, dst: Path) -> None:
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        shutil.copy2(src, dst)


def triton_spec(
    name: str,
    cluster: str,
    ports: TritonPorts,
    repository_url: str,
    backend_dir: Path,
) -> ProcessSpec:
    root = pytriton_root()
    libs = Path(root).parent.parent / "nvidia_pytriton.libs"
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **LOCAL_S3_CREDENTIALS,
        # The python backend stub embeds the interpreter found first on PATH: put this venv first so
        # model.py can import numpy and onnxruntime.
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": ":".join(p for p in (os.environ.get("LD_LIBRARY_PATH"), str(libs)) if p),
    }
    argv = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={repository_url}",
        "--model-control-mode=explicit",
        f"--backend-directory={backend_dir}",
        f"--http-address={LOOPBACK}",
        f"--http-port={ports.http}",
        f"--grpc-address={LOOPBACK}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={LOOPBACK}",
        f"--metrics-port={ports.metrics}",
        # Per-version latency quantiles (nv_inference_request_summary_us) for the canary judge.
        "--metrics-config=summary_latencies=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=false",
        f"--id={name}",
        "--exit-timeout-secs=5",
    ]
    return ProcessSpec(
        name=name,
        argv=argv,
        health_url=f"http://{LOOPBACK}:{ports.http}/v2/health/ready",
        role="triton",
        cluster=cluster,
        env=env,
    )

"""The model store of the local fleet: moto's S3 server on loopback (a real S3 API over HTTP)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from gpufleet.local.ports import LOOPBACK
from gpufleet.local.processes import ProcessSpec

# Any non-empty keys work against moto; Triton and boto3 both need some to sign requests.
LOCAL_S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "gpufleet-local",
    "AWS_SECRET_ACCESS_KEY": "gpufleet-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def moto_server_spec(port: int) -> ProcessSpec:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    argv = [exe] if exe else [sys.executable, "-m", "moto.server"]
    return ProcessSpec(
        name="store",
        argv=[*argv, "-H", LOOPBACK, "-p", str(port)],
        health_url=f"http://{LOOPBACK}:{port}/moto-api/",
        role="store",
        env=LOCAL_S3_CREDENTIALS,
    )

"""`gpufleet configure` end to end: ansible-runner runs playbooks/site.yml for real.

No running fleet is needed: a local cluster is localhost in check mode (the host roles find no GPU, the
cluster roles no Kubernetes API). A failure comes from a cloud cluster whose stack outputs point at a
TCP listener on loopback: reachable, so the playbook runs, but no Kubernetes API answers there, so the
first cluster task that talks to it fails.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import REPO, mlp_fleet, run_cli

pytestmark = pytest.mark.integration

LOCAL_FLEET = mlp_fleet("cfgtest", [("local-a", 1, 1), ("local-b", 2, 1)])
SUMMARY_COLUMNS = ("host", "ok", "changed", "failed", "skipped", "unreachable")


def configure(tmp_path: Path, fleet_text: str, *args: str) -> tuple[int, str, str]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(fleet_text)
    result = run_cli("configure", *args, "--file", str(fleet), "--home", str(tmp_path / "home"), timeout=240)
    return result.returncode, result.stdout, result.stderr


def test_local_cluster_check_mode_runs_and_summarises(tmp_path: Path) -> None:
    code, out, err = configure(tmp_path, LOCAL_FLEET, "local-a", "--check")
    assert code == 0, out + err
    assert "per-host summary" in out and all(c in out for c in SUMMARY_COLUMNS)
    (row,) = [ln for ln in out.splitlines() if ln.strip("│ ").startswith("localhost ")]
    ok, changed, failed, skipped, unreachable = (int(c) for c in row.strip("│ ").split("│")[1:])
    assert ok > 0 and skipped > 0  # the host and cluster roles ran and skipped what needs a GPU or an API
    assert (changed, failed, unreachable) == (0, 0, 0)
    assert "no NVIDIA driver" in out  # the driver role says why it installs nothing
    # ansible-runner's artifacts of the run are under the home.
    artifacts = list((tmp_path / "home" / "configure" / "local-a" / "artifacts").iterdir())
    assert len(artifacts) == 1 and (artifacts[0] / "stdout").is_file()


def test_unknown_cluster_exits_2_in_one_line(tmp_path: Path) -> None:
    code, out, err = configure(tmp_path, LOCAL_FLEET, "nope", "--check")
    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert err.startswith("error: CLUSTER: no cluster named 'nope'") and "local-a, local-b" in err


# --- a cloud cluster whose API does not answer as one ---------------------------------------------


def ca_data() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


@pytest.fixture
def not_an_api() -> Iterator[int]:
    """A loopback port that accepts TCP connections and closes them: reachable, but no Kubernetes API."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


GKE_FLEET = (REPO / "fleet.yaml").read_text()


def gke_outputs(tmp_path: Path, endpoint: str) -> Path:
    """`cdktf deploy --outputs-file` content for the example fleet's GKE stack (stacks/gcp.py names)."""
    outputs = {
        "prod-gke-usc1": {
            "cluster_name": "gke-usc1-prod",
            "cluster_endpoint": endpoint,
            "cluster_ca_certificate": ca_data(),
            "region": "us-central1",
            "project": "gpufleet-demo",
            "triton_service_account_email": "triton@gpufleet-demo.iam.gserviceaccount.com",
            "node_pool_name": "gpu-l4",
            "node_pool_names": ["gpu-l4"],
            "system_node_pool_name": "system",
            "store_url": "gs://gpufleet-demo-models-prod/models",
        }
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return path


def test_failing_task_names_host_task_message_and_exits_1(tmp_path: Path, not_an_api: int) -> None:
    if shutil.which("gke-gcloud-auth-plugin") is None:
        pytest.skip("gke-gcloud-auth-plugin not on PATH: configure refuses a GKE cluster without it")
    outputs = gke_outputs(tmp_path, f"127.0.0.1:{not_an_api}")
    code, out, err = configure(tmp_path, GKE_FLEET, "gke-usc1", "--check", "--outputs", str(outputs))
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("failed: gke-usc1: task '") and "' failed: " in lines[0], lines[0]
    message = lines[0].split("' failed: ", 1)[1]
    assert message and message != "no message"
    row = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith("gke-usc1 "))
    failed = int(row.strip("│ ").split("│")[3])
    assert failed >= 1


def test_unreachable_api_exits_2_naming_both_ways(tmp_path: Path) -> None:
    if shutil.which("gke-gcloud-auth-plugin") is None:
        pytest.skip("gke-gcloud-auth-plugin not on PATH: configure refuses a GKE cluster without it")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outputs = gke_outputs(tmp_path, f"127.0.0.1:{port}")
    code, out, err = configure(tmp_path, GKE_FLEET, "gke-usc1", "--check", "--outputs", str(outputs))
    assert code == 2, out + err
    assert err.strip().count("\n") == 0
    assert "inside the cluster's network" in err and "endpoint_public_access: true" in err
    assert "ansible-runner artifacts" not in out  # nothing ran

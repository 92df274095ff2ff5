"""The synthesized stacks through Terraform itself, offline, with providers from a local filesystem mirror.

- `terraform validate` on every synthesized stack, when the machine's mirror has the exact provider
  versions the stacks pin (skipped with the versions found otherwise).
- The EKS control-plane log group's down -> up sequence against a moto CloudWatch Logs endpoint: the
  group EKS recreates after a destroy is adopted on the next deploy instead of failing it.

The mirror is found at $GPUFLEET_TF_MIRROR or at the usual locations below (a machine image may carry
one, e.g. /opt/tf-plugins/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.conftest import Synthesized

TERRAFORM = shutil.which("terraform")
MIRROR_CANDIDATES = (
    os.environ.get("GPUFLEET_TF_MIRROR", ""),
    "/opt/tf-plugins",
    str(Path.home() / ".terraform.d" / "plugins"),
    "/usr/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
)
REGISTRY = "registry.terraform.io"
PLATFORM = "linux_amd64"


def mirror() -> Path | None:
    for candidate in MIRROR_CANDIDATES:
        if candidate and (Path(candidate) / REGISTRY).is_dir():
            return Path(candidate)
    return None


def mirrored_versions(root: Path, source: str) -> list[str]:
    """Versions of `namespace/name` the mirror holds for this platform."""
    folder = root / REGISTRY / source
    return sorted(v.name for v in folder.iterdir() if (v / PLATFORM).is_dir()) if folder.is_dir() else []


def provider_source(source: str) -> str:
    return source if "/" in source else f"hashicorp/{source}"


def cli_config(tmp_path: Path, root: Path) -> Path:
    config = tmp_path / "terraform.rc"
    config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{root}"\n  }}\n}}\n'
        # Nothing from the network: the mirror is the only installation method.
    )
    return config


def terraform(args: list[str], cwd: Path, config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM
    environment = {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1", **env}
    environment["CHECKPOINT_DISABLE"] = "1"
    return subprocess.run(
        [TERRAFORM, *args, "-no-color"], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


needs_terraform = pytest.mark.skipif(
    TERRAFORM is None or mirror() is None,
    reason="no terraform binary or no provider filesystem mirror on this machine (see module docstring)",
)


@needs_terraform
def test_terraform_validates_every_synthesized_stack(synthesized: Synthesized, tmp_path: Path) -> None:
    root = mirror()
    assert root is not None
    wanted: dict[str, str] = {}
    for stack in synthesized.stacks().values():
        for entry in stack["terraform"]["required_providers"].values():
            wanted[provider_source(entry["source"])] = entry["version"]
    missing = {s: v for s, v in wanted.items() if v not in mirrored_versions(root, s)}
    if missing:
        found = {s: mirrored_versions(root, s) or ["none"] for s in missing}
        pytest.skip(
            f"provider mirror {root} lacks the pinned versions: "
            + "; ".join(f"{s} {v} (mirror has {', '.join(found[s])})" for s, v in sorted(missing.items()))
        )
    config = cli_config(tmp_path, root)
    for name in synthesized.stack_names():
        workdir = tmp_path / name
        workdir.mkdir()
        shutil.copy(synthesized.outdir / "stacks" / name / "cdk.tf.json", workdir / "cdk.tf.json")
        init = terraform(["init", "-backend=false", "-input=false"], workdir, config)
        assert init.returncode == 0, f"{name}: {init.stderr[-2000:]}"
        result = terraform(["validate"], workdir, config)
        assert result.returncode == 0, f"{name}: {result.stdout[-2000:]}{result.stderr[-2000:]}"


# --- EKS control-plane log group: down, EKS recreates it, up again -----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def moto_logs() -> Iterator[str]:
    """A moto server on a free loopback port, stopped after the test."""
    pytest.importorskip("moto.server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def control_plane_log_group(stack: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((logical, group),) = [
        (k, g)
        for k, g in stack["resource"]["aws_cloudwatch_log_group"].items()
        if g["name"].startswith("/aws/eks/")
    ]
    return logical, group


def log_group_config(stack: dict[str, Any], endpoint: str, aws_version: str, adopt: bool) -> dict[str, Any]:
    """The synthesized control-plane log group, its lookup and its import block, in a config of their own
    with the AWS provider pointed at moto (the KMS key reference is left out: no key in this test)."""
    log_group_id, log_group = control_plane_log_group(stack)
    group = {k: v for k, v in log_group.items() if k not in ("kms_key_id", "//")}
    config: dict[str, Any] = {
        "terraform": {"required_providers": {"aws": {"source": "hashicorp/aws", "version": aws_version}}},
        "provider": {
            "aws": [
                {
                    "region": "us-east-1",
                    "access_key": "testing",
                    "secret_key": "testing",
                    "skip_credentials_validation": True,
                    "skip_requesting_account_id": True,
                    "skip_metadata_api_check": True,
                    "endpoints": [{"logs": endpoint}],
                }
            ]
        },
        "data": {"aws_cloudwatch_log_groups": stack["data"]["aws_cloudwatch_log_groups"]},
        "resource": {"aws_cloudwatch_log_group": {log_group_id: group}},
    }
    if adopt:
        config["import"] = stack["import"]
    return config


@needs_terraform
@pytest.mark.parametrize("preview", [False, True], ids=["prod", "preview"])
def test_preview_up_after_down_adopts_the_log_group_eks_recreated(
    synthesized: Synthesized,
    synthesized_preview: Synthesized,
    moto_logs: str,
    tmp_path: Path,
    preview: bool,
) -> None:
    import boto3

    root = mirror()
    assert root is not None
    versions = mirrored_versions(root, "hashicorp/aws")
    if not versions:
        pytest.skip(f"provider mirror {root} has no hashicorp/aws")
    synth = synthesized_preview if preview else synthesized
    (name,) = [n for n in synth.stack_names() if n.endswith("-aws-use1")]
    stack = synth.stack(name)
    config = cli_config(tmp_path, root)
    logs = boto3.client(
        "logs",
        endpoint_url=moto_logs,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )

    def workdir(adopt: bool) -> Path:
        folder = tmp_path / ("adopting" if adopt else "without-import")
        folder.mkdir()
        config_json = log_group_config(stack, moto_logs, versions[-1], adopt)
        (folder / "main.tf.json").write_text(json.dumps(config_json))
        assert terraform(["init", "-input=false"], folder, config).returncode == 0
        return folder

    adopting = workdir(adopt=True)
    first_up = terraform(["apply", "-auto-approve", "-input=false"], adopting, config)
    assert first_up.returncode == 0, first_up.stderr[-2000:]  # no group yet: created
    assert "1 added" in first_up.stdout
    down = terraform(["destroy", "-auto-approve", "-input=false"], adopting, config)
    assert down.returncode == 0, down.stderr[-2000:]
    # EKS, still deleting the cluster, writes one more log line: the group is back, without retention.
    _, group = control_plane_log_group(stack)
    logs.create_log_group(logGroupName=group["name"])

    # Without the import block this is the reported failure ...
    plain = terraform(["apply", "-auto-approve", "-input=false"], workdir(adopt=False), config)
    assert plain.returncode != 0 and "already exists" in plain.stderr
    # ... with it, the next up adopts the group and gives it the stack's retention.
    second_up = terraform(["apply", "-auto-approve", "-input=false"], adopting, config)
    assert second_up.returncode == 0, second_up.stderr[-2000:]
    assert "1 imported" in second_up.stdout
    (found,) = logs.describe_log_groups(logGroupNamePrefix=group["name"])["logGroups"]
    assert found["retentionInDays"] == group["retention_in_days"]
    again = terraform(["plan", "-detailed-exitcode", "-input=false"], adopting, config)
    assert again.returncode == 0, again.stdout[-2000:]  # adopted once; nothing left to do

"""Shared fixtures: the real local fleet, started once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# The rollout tests' two-wave fleet (session fixture `rollout_fleet`), shared by their modules.
pytest_plugins = ["tests.rollout_fleet"]

REPO = Path(__file__).resolve().parent.parent
GPUFLEET = [sys.executable, "-m", "gpufleet"]


def mlp_fleet(name: str, clusters: list[tuple[str, int, int]], extra: str = "") -> str:
    """A fleet file for tests: local clusters (name, wave, replicas), the builtin mlp model, `extra` YAML."""
    lines = "".join(
        f"  - {{name: {cluster}, cloud: local, wave: {wave}, replicas: {replicas}}}\n"
        for cluster, wave, replicas in clusters
    )
    return f"""
name: {name}
clusters:
{lines}model_store: {{bucket: {name}-models, prefix: models}}
models:
  - name: mlp
    source: builtin:mlp
    inputs: [{{name: INPUT, dtype: FP32, dims: [16]}}]
    outputs: [{{name: OUTPUT, dtype: FP32, dims: [4]}}]
    triton: {{max_batch_size: 8, dynamic_batching: true}}
{extra}"""


TEST_FLEET = mlp_fleet("itest", [("local-a", 1, 2), ("local-b", 2, 2)])


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    # A developer's own exported GPUFLEET_HOME / GPUFLEET_FILE must not leak into the tests.
    environ = {k: v for k, v in os.environ.items() if k not in ("GPUFLEET_HOME", "GPUFLEET_FILE")}
    environ |= {"COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [*GPUFLEET, *args], capture_output=True, text=True, timeout=timeout, env=environ, cwd=cwd
    )


@dataclass(frozen=True)
class RunningFleet:
    file: Path
    home: Path

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(
            *args, env={"GPUFLEET_HOME": str(self.home), "GPUFLEET_FILE": str(self.file)}, timeout=timeout
        )


def local_fleet_available() -> str | None:
    missing = [
        b for b in ("haproxy", "prometheus") if not (shutil.which(b) or Path(f"/usr/sbin/{b}").exists())
    ]
    return f"missing {', '.join(missing)} (make setup installs them)" if missing else None


@contextmanager
def own_fleet(tmp_path_factory: pytest.TempPathFactory, name: str, text: str) -> Iterator[RunningFleet]:
    """A local fleet of its own (own home, own ports) from fleet file `text`: up, yielded, down."""
    reason = local_fleet_available()
    if reason:
        pytest.fail(f"the local fleet cannot run: {reason}")
    root = tmp_path_factory.mktemp(name)
    fleet = RunningFleet(file=root / "fleet.yaml", home=root / "home")
    fleet.file.write_text(text)
    try:
        result = fleet.cli("up", timeout=600)
        assert result.returncode == 0, f"gpufleet up failed:\n{result.stdout}\n{result.stderr}"
        yield fleet
    finally:
        fleet.cli("down")


@pytest.fixture(scope="session")
def local_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with own_fleet(tmp_path_factory, "fleet", TEST_FLEET) as fleet:
        yield fleet

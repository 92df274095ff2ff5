"""`gpufleet synth --out DIR` never deletes what it did not write, and a failed synth keeps the last output.

The per-cloud synth processes are replaced by a writer of cdktf-shaped output (the real synth is
covered in tests/cloud); what is under test is how the output folder is checked, staged and swapped.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import stacks.synth as synth
from gpufleet.errors import FleetRuntimeError, UserError
from tests.conftest import REPO, run_cli
from tests.unit.test_cli import assert_clean_error

OPTIONS = synth.SynthOptions(REPO / "fleet.yaml", "prod")


def fake_cloud_synth(stacks_per_cloud: dict[str, list[str]], failing: str | None = None):  # type: ignore[no-untyped-def]
    def run(cloud: str, _options: synth.SynthOptions, outdir: Path, final_outdir: Path) -> None:
        assert final_outdir.is_absolute() and outdir != final_outdir
        if cloud == failing:
            raise FleetRuntimeError(f"synth of {cloud} stacks failed: boom")
        manifest = {"version": "test", "stacks": {}}
        for name in stacks_per_cloud[cloud]:
            (outdir / "stacks" / name).mkdir(parents=True)
            (outdir / "stacks" / name / "cdk.tf.json").write_text(json.dumps({"stack": name, "cloud": cloud}))
            manifest["stacks"][name] = {"synthesizedStackPath": f"stacks/{name}/cdk.tf.json"}
        (outdir / "manifest.json").write_text(json.dumps(manifest))

    return run


def test_synth_out_dot_in_the_repo_is_refused_and_touches_nothing() -> None:
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert_clean_error(run_cli("synth", "--out", "."), "--out", "neither empty nor an earlier synth output")
    assert (REPO / "stacks" / "synth.py").exists()
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == before


def test_a_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="neither empty nor an earlier synth output"):
        synth.synth_fleet(["aws"], OPTIONS, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_new_or_empty_folder_or_an_earlier_output_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        synth, "synth_cloud_subprocess", fake_cloud_synth({"aws": ["prod-a"], "gcp": ["prod-g"]})
    )
    out = tmp_path / "new" / "cdktf.out"
    manifest = synth.synth_fleet(["gcp", "aws"], OPTIONS, out)
    assert list(manifest["stacks"]) == ["prod-a", "prod-g"]  # type: ignore[call-overload]
    assert json.loads((out / "stacks" / "prod-g" / "cdk.tf.json").read_text())["cloud"] == "gcp"
    (tmp_path / "empty").mkdir()
    synth.synth_fleet(["aws"], OPTIONS, tmp_path / "empty")
    synth.synth_fleet(["aws"], OPTIONS, out)  # an earlier output: replaced
    assert json.loads((out / "manifest.json").read_text())["stacks"].keys() == {"prod-a"}
    assert not (out / "stacks" / "prod-g").exists()
    assert [p.name for p in out.parent.iterdir()] == ["cdktf.out"]  # no staging folder left behind


def test_a_failed_synth_keeps_the_last_good_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cdktf.out"
    monkeypatch.setattr(
        synth, "synth_cloud_subprocess", fake_cloud_synth({"aws": ["prod-a"], "gcp": ["prod-g"]})
    )
    synth.synth_fleet(["aws", "gcp"], OPTIONS, out)
    good = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(
        synth, "synth_cloud_subprocess", fake_cloud_synth({"aws": ["prod-a"], "gcp": []}, failing="gcp")
    )
    with pytest.raises(FleetRuntimeError, match="gcp"):
        synth.synth_fleet(["aws", "gcp"], OPTIONS, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == good
    assert [p.name for p in tmp_path.iterdir()] == ["cdktf.out"]


def test_terraform_working_files_and_local_state_survive_a_new_synth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cdktf.out"
    monkeypatch.setattr(synth, "synth_cloud_subprocess", fake_cloud_synth({"aws": ["prod-shared-aws"]}))
    synth.synth_fleet(["aws"], OPTIONS, out)
    stack = out / "stacks" / "prod-shared-aws"
    (stack / ".terraform").mkdir()
    (stack / ".terraform" / "providers.txt").write_text("init")
    (stack / "terraform.prod-shared-aws.tfstate").write_text('{"serial": 7}')
    synth.synth_fleet(["aws"], OPTIONS, out)
    assert (stack / "terraform.prod-shared-aws.tfstate").read_text() == '{"serial": 7}'
    assert (stack / ".terraform" / "providers.txt").read_text() == "init"
    assert json.loads((stack / "cdk.tf.json").read_text())["stack"] == "prod-shared-aws"

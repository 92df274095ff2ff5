"""CLI habits of infrastructure tools, as a user meets them (subprocess runs of `gpufleet`)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from tests.conftest import REPO, run_cli
from tests.unit.test_cli import assert_clean_error


def test_version_is_the_packaged_one() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"gpufleet {declared}"


def test_status_with_nothing_running_exits_1(tmp_path: Path) -> None:
    result = run_cli("status", "--home", str(tmp_path / "home"))
    assert result.returncode == 1 and "gpufleet up" in result.stdout
    assert not (tmp_path / "home").exists()  # looking creates nothing


def test_status_json_with_nothing_running(tmp_path: Path) -> None:
    result = run_cli("status", "--json", "--home", str(tmp_path))
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"running": False, "ready": False, "processes": [], "endpoints": None}


def test_validate_takes_file_option_and_env(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.yaml"
    assert_clean_error(run_cli("validate", "-f", str(missing)), "elsewhere.yaml: file not found")
    assert_clean_error(run_cli("validate", env={"GPUFLEET_FILE": str(missing)}), "elsewhere.yaml")
    assert run_cli("validate", "-f", str(REPO / "fleet.yaml")).returncode == 0


def test_validate_names_sections_no_command_acts_on_yet() -> None:
    out = run_cli("validate", str(REPO / "fleet.yaml")).stdout
    assert "dr is declared but no command acts on it yet" in out
    assert "previews is declared" not in out  # the preview commands act on it
    assert "rollout is declared" not in out  # `gpufleet rollout` acts on it


def test_validate_notes_only_sections_the_file_declares(tmp_path: Path) -> None:
    minimal = tmp_path / "fleet.yaml"
    minimal.write_text(
        "name: x\nclusters: [{name: local-a, cloud: local}]\nmodel_store: {bucket: good-bucket}\n"
    )
    result = run_cli("validate", str(minimal))
    assert result.returncode == 0, result.stderr
    assert "declared but no command acts on it" not in result.stdout  # defaults are not declarations


def test_home_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("")
    result = run_cli("up", "-f", str(REPO / "fleet.yaml"), "--home", str(home))
    assert_clean_error(result, "--home", "is a file")
    assert len(result.stderr.strip().splitlines()) == 1


def test_home_that_cannot_be_created_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_cli("up", "-f", str(REPO / "fleet.yaml"), "--home", str(tmp_path / "file" / "home"))
    assert_clean_error(result, "--home", "cannot write there")


def test_infer_and_load_without_a_running_fleet_say_so_even_without_fleet_yaml(tmp_path: Path) -> None:
    # cwd has no fleet.yaml: the useful message is about the fleet not running, not the missing file.
    for args in (("infer", "local-a", "mlp"), ("load", "mlp")):
        result = run_cli(*args, "--home", str(tmp_path / "home"), cwd=tmp_path)
        assert_clean_error(result, "no local fleet is running", "gpufleet up")


def test_logs_prints_the_end_of_a_process_log(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "triton-local-a-0.log").write_text("".join(f"line {i}\n" for i in range(100)))
    result = run_cli("logs", "triton-local-a-0", "-n", "3", "--home", str(tmp_path))
    assert result.returncode == 0 and result.stdout.splitlines() == ["line 97", "line 98", "line 99"]
    unknown = run_cli("logs", "nosuch", "--home", str(tmp_path))
    assert_clean_error(unknown, "nosuch", "triton-local-a-0")


def test_usage_mistakes_exit_2_with_clicks_message() -> None:
    result = run_cli("up", "--no-such-option")
    assert result.returncode == 2 and "No such option" in result.stderr and "Traceback" not in result.stderr


def test_synth_refuses_preview_environment_names(tmp_path: Path) -> None:
    result = run_cli("synth", "--env", "pv-feature-x", "--out", str(tmp_path / "out"))
    assert_clean_error(result, "--env", "pv-", "preview up")
    assert not (tmp_path / "out").exists()

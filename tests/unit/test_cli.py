"""The CLI as a user runs it (a subprocess): user mistakes end in one line and exit 2."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, run_cli


def assert_clean_error(result: object, *needles: str) -> None:
    import subprocess

    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_validate_example_fleet_prints_summary() -> None:
    result = run_cli("validate", str(REPO / "fleet.yaml"))
    assert result.returncode == 0, result.stderr
    for name in ("local-a", "local-b", "aws", "gcp", "azure"):
        assert name in result.stdout


def test_validate_missing_file(tmp_path: Path) -> None:
    assert_clean_error(run_cli("validate", str(tmp_path / "nope.yaml")), "not found")


def test_validate_bad_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("name: x\nclusters: [\n  - {name: a\n")
    assert_clean_error(run_cli("validate", str(bad)), "invalid YAML")


def test_validate_wrong_field_names_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text(
        "name: x\nclusters:\n  - {name: local-a, cloud: local, replicas: many}\n"
        "model_store: {bucket: good-bucket}\n"
    )
    result = run_cli("validate", str(bad))
    assert_clean_error(result, "clusters[0].replicas")
    assert len(result.stderr.strip().splitlines()) == 1


def test_up_with_broken_file_creates_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("name: x\nclusters: []\nmodel_store: {bucket: good-bucket}\nsurprise: 1\n")
    home = tmp_path / "home"
    assert_clean_error(run_cli("up", "-f", str(bad), "--home", str(home)), "surprise")
    assert not home.exists()


def test_up_without_local_cluster_is_a_user_error(tmp_path: Path) -> None:
    text = (REPO / "fleet.yaml").read_text()
    import yaml

    doc = yaml.safe_load(text)
    doc["clusters"] = [c for c in doc["clusters"] if c["cloud"] != "local"]
    for i, c in enumerate(doc["clusters"]):
        c["wave"] = 1 + (i > 0)
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump(doc))
    # Models with a relative source resolve against the original repo: only builtin sources here.
    result = run_cli("up", "-f", str(f), "--home", str(tmp_path / "home"))
    assert_clean_error(result, "cloud: local")


def test_infer_without_running_fleet_says_how_to_start(tmp_path: Path) -> None:
    result = run_cli("infer", "local-a", "mlp", "-f", str(REPO / "fleet.yaml"), "--home", str(tmp_path))
    assert_clean_error(result, "gpufleet up")


def test_unknown_model_lists_known_ones(tmp_path: Path) -> None:
    result = run_cli("infer", "local-a", "nosuch", "-f", str(REPO / "fleet.yaml"), "--home", str(tmp_path))
    assert_clean_error(result, "nosuch", "mlp")


def test_each_error_stays_on_one_line_in_a_narrow_terminal(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text(
        "name: Bad_Name\nclusters:\n  - {name: Local_A, cloud: local}\nmodel_store: {bucket: 'My..Bucket'}\n"
    )
    result = run_cli("validate", str(bad), env={"COLUMNS": "40"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 2 and all(line.startswith("error: ") for line in lines), lines


def test_preview_up_above_cost_cap_is_refused_before_anything_runs(tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load((REPO / "fleet.yaml").read_text())
    doc["previews"]["cost_cap_usd_per_day"] = 5
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = tmp_path / "previews"
    result = run_cli("preview", "up", "--branch", "feature/x", "-f", str(f), "--out", str(out))
    assert_clean_error(result, "previews.cost_cap_usd_per_day")
    assert "estimated preview cost" in result.stdout  # the estimate is shown before the refusal
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_preview_up_without_credentials_names_what_is_missing(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    result = run_cli("preview", "up", "--branch", "feature/x", "-f", str(REPO / "fleet.yaml"), env=env)
    assert_clean_error(result, "terraform", "aws: no credentials", "gcp:", "azure:")

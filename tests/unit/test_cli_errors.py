"""The top-level handler: every error class to one line and its exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from gpufleet.cli import errors
from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.spec import FleetSpecError


def ending(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    def app(**_: object) -> None:
        raise exc

    with pytest.raises(SystemExit) as done:
        errors.run(app)
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines)
    return int(done.value.code or 0), lines


@pytest.mark.parametrize(
    ("exc", "code", "prefix"),
    [
        (UserError("--home x: is a file"), 2, "error: --home x"),
        (FleetSpecError(["fleet.yaml: a", "fleet.yaml: b"]), 2, "error: fleet.yaml: a"),
        (FleetRuntimeError("triton-a exited; see a.log"), 1, "failed: triton-a exited"),
        (
            ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "PutObject"),
            1,
            "failed: cloud API",
        ),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), 1, "failed: cloud API"),
        (
            PermissionError(13, "Permission denied", "/x/state.json"),
            1,
            "failed: Permission denied (/x/state.json)",
        ),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_each_error_class_has_its_exit_code_and_one_line(
    exc: BaseException, code: int, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, lines = ending(exc, capsys)
    assert got == code
    assert lines[0].startswith(prefix), lines
    assert len(lines) == (2 if isinstance(exc, FleetSpecError) else 1)


def test_a_bug_is_not_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    got, lines = ending(ZeroDivisionError("division by zero"), capsys)
    assert got == errors.EXIT_INTERNAL and got != 2
    assert len(lines) == 1 and "a bug in gpufleet" in lines[0]
    report = Path(lines[0].rsplit("details in ", 1)[1].rstrip(")"))
    assert "ZeroDivisionError" in report.read_text()  # the traceback is kept, in a file
    report.unlink()


def test_success_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        errors.run(lambda **_: None)
    assert done.value.code == 0


def test_a_bug_inside_validation_exits_70_not_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpufleet.cli import app
    from gpufleet.spec import Fleet
    from tests.conftest import REPO

    def broken(*_args: object, **_kwargs: object) -> Fleet:
        raise ZeroDivisionError("a validator divided by zero")

    monkeypatch.setattr(Fleet, "model_validate", broken)
    monkeypatch.setattr("sys.argv", ["gpufleet", "validate", str(REPO / "fleet.yaml")])
    with pytest.raises(SystemExit) as done:
        errors.run(app)
    err = capsys.readouterr().err
    assert done.value.code == errors.EXIT_INTERNAL, err
    assert "a bug in gpufleet" in err and "ZeroDivisionError" in err
    Path(err.rsplit("details in ", 1)[1].strip().rstrip(")")).unlink()

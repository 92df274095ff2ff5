"""`engine build --inject-*`: the faulty CPU package (fault.json, engine.json's injected_fault), the
refusals as one line naming the option, push carrying fault.json, and the runner's fault itself.

The runner is the file every CPU package ships, loaded here with the python-backend utilities that
come with the tritonserver wheel; what a real Triton counts of it is tests/integration/test_engine_fault.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from scipy import stats

from gpufleet.errors import UserError
from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS
from gpufleet.local.triton import pytriton_root
from gpufleet.spec import parse_fleet
from pipelines.engines.build import build_engine
from pipelines.engines.fault import InjectedFault, fault_from_options
from pipelines.engines.package import read_package
from pipelines.engines.push import push_package
from tests.conftest import GPUFLEET
from tests.objectstore_servers import emulator_or_skip
from tests.store_reader import StoreReader

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "gpufleet/data/triton_onnx_model.py"
FLEET = """
name: eng
clusters: [{name: local-a, cloud: local, wave: 1}]
model_store: {bucket: engine-fault}
models:
  - name: mlp
    source: builtin:mlp
    inputs: [{name: INPUT, dtype: FP32, dims: [16]}]
    outputs: [{name: OUTPUT, dtype: FP32, dims: [4]}]
    triton: {max_batch_size: 8}
    engine_targets: [{gpu_arch: sm80, precision: fp16}]
"""
TAIL_FAULT = ["--inject-error-rate", "0.2", "--inject-latency-ms", "30", "--inject-slow-share", "0.05"]


def build_cli(tmp_path: Path, *args: str, color: bool = False) -> subprocess.CompletedProcess[str]:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")} | {"COLUMNS": "300"}
    env = env | {"FORCE_COLOR": "1"} if color else {k: v for k, v in env.items() if k != "FORCE_COLOR"}
    return subprocess.run(
        [*GPUFLEET, "engine", "build", "mlp", "-f", "fleet.yaml", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=env,
    )


def package_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- the package -----------------------------------------------------------------------------------


def test_a_faulty_build_adds_fault_json_and_records_it_in_engine_json_and_warns(tmp_path: Path) -> None:
    done = build_cli(tmp_path, *TAIL_FAULT, "--inject-after", "40", "--out", "bad", color=True)
    assert done.returncode == 0, done.stderr
    # What was asked for, spelled out independently of the code that writes it.
    asked = {"error_rate": 0.2, "latency_ms": 30.0, "slow_share": 0.05, "after_calls": 40, "seed": 0}
    assert json.loads((tmp_path / "bad/fault.json").read_text()) == asked
    assert json.loads((tmp_path / "bad/engine.json").read_text())["injected_fault"] == asked
    warning = next(line for line in done.stdout.splitlines() if "warning: injected fault" in line)
    assert "\x1b[33m" in warning  # yellow
    assert "20.00% of execute() calls fail" in warning and "+30 ms on 5.00% of calls" in warning
    assert "after the first 40 calls" in warning

    # Everything but fault.json and engine.json is the package a build without a fault makes.
    good = build_cli(tmp_path, "--out", "good")
    assert good.returncode == 0 and "warning" not in good.stdout, good.stdout + good.stderr
    bad_files, good_files = package_files(tmp_path / "bad"), package_files(tmp_path / "good")
    assert set(bad_files) - set(good_files) == {"fault.json"}
    assert {n: b for n, b in bad_files.items() if n not in ("fault.json", "engine.json")} == {
        n: b for n, b in good_files.items() if n != "engine.json"
    }


def test_no_fault_means_no_file_no_key_and_the_same_bytes_twice(tmp_path: Path) -> None:
    spec = parse_fleet(FLEET).model("mlp")
    first = build_engine(spec, target="cpu", out=tmp_path / "a")
    build_engine(spec, target="cpu", out=tmp_path / "b")
    a, b = package_files(tmp_path / "a"), package_files(tmp_path / "b")
    assert sorted(a) == ["engine.json", "model.onnx", "model.py", "reference.npz"]
    assert "injected_fault" not in json.loads(a["engine.json"])
    assert "injected_fault" not in first.metadata.model_dump(mode="json")  # nor in the manifest's engine
    # engine.json differs between builds only where it records when they ran.
    built_at = [json.loads(x["engine.json"])["built_at"] for x in (a, b)]
    assert a["engine.json"].replace(built_at[0].encode(), built_at[1].encode()) == b["engine.json"]
    assert {n: v for n, v in a.items() if n != "engine.json"} == {
        n: v for n, v in b.items() if n != "engine.json"
    }
    # Options that inject nothing build the plain package.
    zero = build_cli(tmp_path, "--inject-error-rate", "0", "--inject-latency-ms", "0", "--out", "zero")
    assert zero.returncode == 0 and "warning" not in zero.stdout, zero.stdout + zero.stderr
    assert sorted(package_files(tmp_path / "zero")) == sorted(a)


OPTIONS = {
    "--inject-error-rate": "error_rate",
    "--inject-latency-ms": "latency_ms",
    "--inject-slow-share": "slow_share",
    "--inject-after": "after",
}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--inject-error-rate", "1.5"], "--inject-error-rate '1.5': use a number from 0 to 1"),
        (["--inject-error-rate", "-0.1"], "--inject-error-rate '-0.1': use a number from 0 to 1"),
        (["--inject-error-rate", "nan"], "--inject-error-rate 'nan': use a number from 0 to 1"),
        (["--inject-latency-ms", "-5"], "--inject-latency-ms '-5': use a number from 0 to 60000"),
        (["--inject-latency-ms", "inf"], "--inject-latency-ms 'inf': use a number from 0 to 60000"),
        (
            ["--inject-latency-ms", "30", "--inject-slow-share", "2"],
            "--inject-slow-share '2': use a number from 0 to 1",
        ),
        (["--inject-error-rate", "0.1", "--inject-after", "-1"], "--inject-after '-1': use a whole number"),
        (["--inject-error-rate", "0.1", "--inject-after", "2.5"], "--inject-after '2.5': use a whole number"),
        (["--inject-after", "10"], "--inject-after 10: there is no fault to start after"),
        (["--target", "SM80", "--inject-after", "3"], "--inject-after: only with --target cpu"),
    ],
)
def test_inject_mistakes_name_the_option(args: list[str], expected: str) -> None:
    target = args[args.index("--target") + 1] if "--target" in args else "cpu"
    given = {OPTIONS[k]: v for k, v in zip(args[::2], args[1::2], strict=True) if k in OPTIONS}
    values = {name: given.get(name) for name in OPTIONS.values()}
    with pytest.raises(UserError) as refused:
        fault_from_options(target=target, **values)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--inject-error-rate", "lots"], "--inject-error-rate 'lots': use a number from 0 to 1"),
        (["--inject-slow-share", "0.05"], "--inject-slow-share 0.05: it says which calls get the extra"),
        (
            ["--target", "sm80", "--inject-error-rate", "0.1"],
            "--inject-error-rate: only with --target cpu",
        ),
    ],
)
def test_cli_inject_mistakes_are_one_line_exit_2_and_build_nothing(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    done = build_cli(tmp_path, *args, "--out", "pkg")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "pkg").exists()


def test_build_engine_refuses_a_fault_for_a_tensorrt_target(tmp_path: Path) -> None:
    fault = InjectedFault(error_rate=0.1, latency_ms=0, slow_share=1, after_calls=0)
    with pytest.raises(UserError, match="--target sm80: faults are injected into CPU packages only"):
        build_engine(parse_fleet(FLEET).model("mlp"), target="sm80", out=tmp_path / "o", fault=fault)
    assert not (tmp_path / "o").exists()


def test_a_fault_file_engine_json_does_not_record_or_a_missing_one_is_refused(tmp_path: Path) -> None:
    spec = parse_fleet(FLEET).model("mlp")
    plain = tmp_path / "plain"
    build_engine(spec, target="cpu", out=plain)
    (plain / "fault.json").write_text('{"error_rate": 1}')  # slipped in by hand: nobody would see it
    with pytest.raises(UserError, match="has fault.json but engine.json records no injected_fault"):
        read_package(plain)
    faulty = tmp_path / "faulty"
    fault = InjectedFault(error_rate=0.5, latency_ms=0, slow_share=1, after_calls=0)
    build_engine(spec, target="cpu", out=faulty, fault=fault)
    (faulty / "fault.json").unlink()
    with pytest.raises(UserError, match="records an injected_fault but fault.json is missing"):
        read_package(faulty)


def test_push_stores_fault_json_as_a_file_of_the_version(tmp_path: Path) -> None:
    spec = parse_fleet(FLEET).model("mlp")
    fault = InjectedFault(error_rate=0.25, latency_ms=10, slow_share=0.5, after_calls=7)
    build_engine(spec, target="cpu", out=tmp_path / "pkg", fault=fault)
    with emulator_or_skip("s3", tmp_path / "moto") as moto:
        store = moto.open("engine-fault", "models")
        store.ensure_bucket()
        push_package(store, spec, read_package(tmp_path / "pkg"), journal_dir=tmp_path / "journal")
        reader = StoreReader("engine-fault", "models", moto.endpoint, credentials=LOCAL_S3_CREDENTIALS)
        manifest = reader.manifest("mlp", 1)
        assert manifest is not None and "fault.json" in manifest["files"]
        assert manifest["engine"]["injected_fault"] == json.loads((tmp_path / "pkg/fault.json").read_text())
        stored = reader.s3.get_object(Bucket="engine-fault", Key=reader.key("mlp", 1, "fault.json"))
        assert stored["Body"].read() == (tmp_path / "pkg/fault.json").read_bytes()


# --- the runner's fault ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner() -> Iterator[ModuleType]:
    """The shipped runner, importable with the python-backend utilities of the tritonserver wheel."""
    backend = str(pytriton_root() / "backends" / "python")
    sys.path.insert(0, backend)
    try:
        spec = importlib.util.spec_from_file_location("shipped_triton_onnx_model", RUNNER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(backend)


def outcomes(fault: object, calls: int) -> list[bool]:
    """Per execute() call: whether it raised."""
    failed = []
    for _ in range(calls):
        try:
            fault.apply()  # type: ignore[attr-defined]
            failed.append(False)
        except RuntimeError as exc:
            assert "injected fault (fault.json)" in str(exc)
            failed.append(True)
    return failed


def fault_json(**values: float) -> dict[str, float]:
    return {"error_rate": 0, "latency_ms": 0, "slow_share": 1, "after_calls": 0, "seed": 0} | values


def test_the_first_n_calls_are_clean_then_about_r_of_calls_fail(runner: ModuleType) -> None:
    after, rate, calls = 50, 0.2, 4000
    failed = outcomes(runner.InjectedFault(fault_json(error_rate=rate, after_calls=after), "mlp_0"), calls)
    assert not any(failed[:after])
    low, high = stats.binom.interval(0.9999, calls - after, rate)
    assert low <= sum(failed[after:]) <= high, sum(failed[after:])
    # Seeded per instance: the same instance name repeats its sequence, another name has its own.
    again = outcomes(runner.InjectedFault(fault_json(error_rate=rate, after_calls=after), "mlp_0"), calls)
    other = outcomes(runner.InjectedFault(fault_json(error_rate=rate, after_calls=after), "mlp_1"), calls)
    assert again == failed and other != failed
    assert not any(outcomes(runner.InjectedFault(fault_json(), "mlp_0"), 200))  # rate 0: never
    # The boundary: with every faulty call failing, call AFTER + 1 is the first to fail.
    always = runner.InjectedFault(fault_json(error_rate=1, after_calls=5), "mlp_0")
    assert outcomes(always, 8) == [False] * 5 + [True] * 3


def test_about_the_slow_share_of_calls_after_n_sleep_the_extra_latency(runner: ModuleType) -> None:
    after, share, latency_ms, calls = 20, 0.25, 5.0, 420
    fault = runner.InjectedFault(fault_json(latency_ms=latency_ms, slow_share=share, after_calls=after), "m")
    took_ms = []
    for _ in range(calls):
        began = time.perf_counter()
        fault.apply()
        took_ms.append((time.perf_counter() - began) * 1000)
    assert max(took_ms[:after]) < latency_ms
    slow = sum(ms >= latency_ms for ms in took_ms[after:])
    low, high = stats.binom.interval(0.9999, calls - after, share)
    assert low <= slow <= high, slow

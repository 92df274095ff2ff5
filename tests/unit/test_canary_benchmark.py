"""benchmarks/canary.py end to end on a handful of replays: what it prints and the report it writes."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_small_benchmark_run_prints_every_figure_and_writes_the_report(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "canary.py"), "--replays", "6", "--healthy-replays", "6"]
        + ["--seed", "3", "--reports", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"speed-up vs flagger-style: \d+(\.\d+)?", lines[-2]), lines[-2]
    assert re.fullmatch(r"false rollback rate: \d+(\.\d+)? %", lines[-1]), lines[-1]
    for regression in ("errors 0.1% -> 5%", "p99 +50% (tail only)"):
        for policy in ("ours", "flagger-style", "argo-style", "oracle SPRT"):
            assert any(line.startswith(regression) and policy in line for line in lines), (regression, policy)
    # The limit for a test that cannot know the baseline's error rate: only where error rates differ.
    conditional = [line for line in lines if " conditional " in line]
    assert len(conditional) == 1 and conditional[0].startswith("errors 0.1% -> 5%"), conditional
    for policy in ("ours", "flagger-style", "argo-style"):
        assert any(re.match(rf"healthy {policy} +false rollbacks \d+/6 = ", line) for line in lines), policy
    # A regression that rolls back in every replay: no misses, a finite median and p90 for ours.
    ours_errors = next(line for line in lines if line.startswith("errors 0.1% -> 5%") and " ours " in line)
    median, p90, miss = ours_errors.split()[5:8]
    assert int(median) <= int(p90) and float(miss) == 0.0
    page, png = tmp_path / "canary-benchmark.html", tmp_path / "canary-benchmark.png"
    assert f"report: {page}" in lines and f"png: {png}" in lines
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    assert "data:image/png;base64," in html and "speed-up vs flagger-style" in html
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")  # self-contained

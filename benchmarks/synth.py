"""Synth cost beside the bare provider imports it cannot avoid, measured side by side in one run.

Cases: 1 cluster (one cloud), 6 clusters on 3 clouds, 50 clusters on 3 clouds. For each: wall time
and peak RSS (whole process tree, sampled) of `synth_fleet`, next to two bare imports per provider,
each in a fresh process: the provider package as a plain `import` loads it (every resource module),
and exactly the provider modules that synth loaded, imported on demand as synth does
(stacks/provider_imports.py).
Targets: 3-cloud synth <= 1.3x the slowest single provider import; 50 clusters <= 1.5x one cluster.

    .venv/bin/python benchmarks/synth.py [--report reports/synth.html]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stacks.synth import QUIET_JSII, SynthOptions, synth_fleet  # noqa: E402

PROVIDER_PACKAGES = {
    "aws": "cdktf_cdktf_provider_aws",
    "gcp": "cdktf_cdktf_provider_google",
    "azure": "cdktf_cdktf_provider_azurerm",
}


@dataclass(frozen=True)
class Measure:
    wall_s: float
    peak_rss_mb: float


def measure(fn: Callable[[], object]) -> Measure:
    """Run fn; sample the RSS of this process and all its children every 50 ms."""
    me = psutil.Process()
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a child may exit between listing and reading
                    total += p.memory_info().rss
            peak = max(peak, total / 2**20)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    return Measure(wall, peak)


def fleet_with(clusters_per_cloud: dict[str, int], workdir: Path) -> Path:
    """The example fleet with N copies of its cluster for each cloud (waves kept contiguous)."""
    doc = yaml.safe_load((REPO / "fleet.yaml").read_text())
    templates = {c["cloud"]: c for c in doc["clusters"] if c["cloud"] != "local"}
    clusters = [c for c in doc["clusters"] if c["cloud"] == "local"]
    for cloud, count in clusters_per_cloud.items():
        for i in range(count):
            clusters.append({**templates[cloud], "name": f"{templates[cloud]['name'][:30]}-{i}", "wave": 3})
    doc["clusters"] = clusters
    path = workdir / ("fleet-" + "-".join(f"{c}{n}" for c, n in clusters_per_cloud.items()) + ".yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def provider_modules_used(cloud: str, fleet: Path, workdir: Path) -> list[str]:
    probe = (
        "import json, sys\nfrom stacks.__main__ import main\n"
        f"assert main(['--cloud', {cloud!r}, '--file', {str(fleet)!r}, "
        f"'--out', {str(workdir / ('probe-' + cloud))!r}]) == 0\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({PROVIDER_PACKAGES[cloud]!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        env={**os.environ, **QUIET_JSII},
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def bare_import(modules: list[str], workdir: Path, *, on_demand: bool) -> Measure:
    """A fresh process importing `modules`; on_demand=False is what a plain `import` of them costs
    (the provider package imports all its resource modules), True is what synth pays."""
    # A script file, not -c: hundreds of module names overflow the argument list.
    script = workdir / f"bare-import-{len(modules)}-{on_demand}.py"
    prelude = (
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from stacks.provider_imports import import_providers_on_demand\nimport_providers_on_demand()\n"
        if on_demand
        else ""
    )
    script.write_text(prelude + "import cdktf\n" + "\n".join(f"import {m}" for m in modules) + "\n")
    env = {**os.environ, **QUIET_JSII}
    # Output captured: jsii prints a Node end-of-life banner that no variable silences.
    return measure(
        lambda: subprocess.run(
            [sys.executable, str(script)], check=True, cwd=REPO, env=env, capture_output=True
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "synth.html")
    args = parser.parse_args()
    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="gpufleet-bench-") as tmp:
        work = Path(tmp)
        cases = {
            "1 cluster (aws)": {"aws": 1},
            "50 clusters (aws)": {"aws": 50},
            "6 clusters, 3 clouds": {"aws": 2, "gcp": 2, "azure": 2},
            "50 clusters, 3 clouds": {"aws": 17, "gcp": 17, "azure": 16},
        }
        fleets = {name: fleet_with(counts, work) for name, counts in cases.items()}
        package_imports: dict[str, Measure] = {}
        imports: dict[str, Measure] = {}
        for cloud in ("aws", "gcp", "azure"):
            modules = provider_modules_used(cloud, fleets["6 clusters, 3 clouds"], work)
            for label, on_demand, into in (
                (f"bare import {cloud} provider package", False, package_imports),
                (f"bare import {cloud}: the {len(modules)} modules synth uses", True, imports),
            ):
                into[cloud] = bare_import(modules, work, on_demand=on_demand)
                rows.append((label, cloud, into[cloud].wall_s, into[cloud].peak_rss_mb))
                print(f"{label}: {into[cloud].wall_s:.1f}s, {into[cloud].peak_rss_mb:.0f} MB", flush=True)
        synths: dict[str, Measure] = {}
        for name, counts in cases.items():
            out = work / name.replace(" ", "_").replace(",", "")
            clouds = [c for c in ("aws", "gcp", "azure") if counts.get(c)]
            synths[name] = measure(
                lambda f=fleets[name], o=out, c=clouds: synth_fleet(c, SynthOptions(f, "prod"), o)
            )
            rows.append((f"synth {name}", ",".join(clouds), synths[name].wall_s, synths[name].peak_rss_mb))
            print(f"synth {name}: {synths[name].wall_s:.1f}s, {synths[name].peak_rss_mb:.0f} MB", flush=True)
    slowest = max(imports.values(), key=lambda m: m.wall_s)
    slowest_package = max(package_imports.values(), key=lambda m: m.wall_s)
    one, fifty_aws = synths["1 cluster (aws)"].wall_s, synths["50 clusters (aws)"].wall_s
    three_clouds, fifty_three = synths["6 clusters, 3 clouds"].wall_s, synths["50 clusters, 3 clouds"].wall_s
    ratios = {
        "3-cloud synth (6 clusters) / slowest bare provider package import": (
            three_clouds / slowest_package.wall_s,
            1.3,
        ),
        "3-cloud synth (6 clusters) / slowest bare import of the modules synth uses": (
            three_clouds / slowest.wall_s,
            None,
        ),
        "1-cloud synth (1 cluster) / bare import of the aws modules synth uses": (
            one / imports["aws"].wall_s,
            None,
        ),
        "50 clusters (aws) / 1 cluster (aws)": (fifty_aws / one, 1.5),
        "50 clusters (3 clouds) / 1 cluster (aws)": (fifty_three / one, 1.5),
        "50 clusters (3 clouds) / 6 clusters (3 clouds)": (fifty_three / three_clouds, None),
    }
    print(f"\nmarginal cost of one more cluster (aws): {(fifty_aws - one) / 49 * 1000:.0f} ms")
    print("\nratios (same run, same machine):")
    for label, (ratio, target) in ratios.items():
        verdict = (
            "" if target is None else (" meets target" if ratio <= target else f" MISSES target {target}x")
        )
        print(f"  {label}: {ratio:.2f}x{(' (target <= ' + str(target) + 'x)') if target else ''}{verdict}")
    write_report(args.report, rows, ratios)
    print(f"\nreport: {args.report}")


def write_report(
    path: Path, rows: list[tuple[str, str, float, float]], ratios: dict[str, tuple[float, float | None]]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = max(r[2] for r in rows) or 1
    bars = "\n".join(
        f"<tr><td>{label}</td><td>{clouds}</td><td>{wall:.1f}s</td><td>{rss:.0f} MB</td>"
        f"<td><div style='background:#4a7;height:12px;width:{300 * wall / peak:.0f}px'></div></td></tr>"
        for label, clouds, wall, rss in rows
    )
    ratio_rows = "\n".join(
        f"<tr><td>{label}</td><td>{ratio:.2f}x</td><td>{'' if t is None else f'≤ {t}x'}</td>"
        f"<td>{'' if t is None else ('ok' if ratio <= t else 'missed')}</td></tr>"
        for label, (ratio, t) in ratios.items()
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>gpufleet synth benchmark</title>"
        "<style>body{font-family:sans-serif}td{padding:2px 8px}</style>"
        f"<h1>Synth benchmark</h1><p>{time.strftime('%Y-%m-%d %H:%M')}, {psutil.cpu_count()} cores</p>"
        "<table><tr><th>case</th><th>clouds</th><th>wall</th><th>peak RSS (tree)</th><th></th></tr>"
        f"{bars}</table>"
        f"<h2>Ratios</h2><table>{ratio_rows}</table>"
    )


if __name__ == "__main__":
    main()

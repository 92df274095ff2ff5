"""Generated HAProxy and Prometheus configs, checked by the real binaries' own config checkers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gpufleet.errors import FleetRuntimeError
from gpufleet.local.haproxy import ProxyPorts, haproxy_spec, render_haproxy_config
from gpufleet.local.processes import preflight
from gpufleet.local.prometheus import ScrapeTarget, prometheus_spec, render_prometheus_config


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make setup installs it)")
def test_haproxy_config_is_valid_and_lists_every_replica(tmp_path: Path) -> None:
    text = render_haproxy_config(
        "local-a", ProxyPorts(18080, 18081), {"local-a-0": 18000, "local-a-1": 18001}, tmp_path / "admin.sock"
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "server local-a-0 127.0.0.1:18000" in text and "server local-a-1 127.0.0.1:18001" in text
    assert "bind 127.0.0.1:18080" in text and "prometheus-exporter" in text


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (comes with prometheus)")
def test_prometheus_config_is_valid_and_labels_targets(tmp_path: Path) -> None:
    targets = [
        ScrapeTarget("triton", 19000, "local-a", "local-a-0"),
        ScrapeTarget("proxy", 19001, "local-a", "p"),
    ]
    text = render_prometheus_config(targets)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(text)
    check = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load(text)["scrape_configs"]}
    assert jobs["triton"]["static_configs"] == [
        {"targets": ["127.0.0.1:19000"], "labels": {"cluster": "local-a", "replica": "local-a-0"}}
    ]


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make setup installs it)")
def test_haproxy_config_check_names_the_broken_line(tmp_path: Path) -> None:
    # What `up` runs before it replaces a running proxy: a rejected config keeps the old one serving.
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_haproxy_config("local-a", ProxyPorts(18080, 18081), {"local-a-0": 18000}, tmp_path / "a.sock")
        + "    bogus-directive on\n"
    )
    spec = haproxy_spec("local-a", cfg, ProxyPorts(18080, 18081))
    with pytest.raises(
        FleetRuntimeError,
        match=r"^proxy-local-a: its config is rejected by .*unknown keyword 'bogus-directive'",
    ):
        preflight(spec)


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (comes with prometheus)")
def test_prometheus_config_check_names_the_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(render_prometheus_config([], scrape_interval_s=2).replace("2s", "soon", 1))
    spec = prometheus_spec(cfg, tmp_path / "data", 19090)
    with pytest.raises(
        FleetRuntimeError, match=r'^prometheus: its config is rejected .*not a valid duration string: "soon"'
    ):
        preflight(spec)

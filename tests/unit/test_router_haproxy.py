"""The HAProxy router against a real HAProxy started from the rendered config.

The replicas behind it are a tiny HTTP server that answers with the path it was asked for, so
these tests see exactly which URL the proxy sent each request to (the real Triton fleet is in
tests/integration/test_rollout_router.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.local.haproxy import ProxyPorts, render_haproxy_config, routes_map_path
from gpufleet.local.ports import LOOPBACK, free_port
from pipelines.rollout.router.base import checked_split
from pipelines.rollout.router.haproxy import HAProxyRouter

needs_haproxy = pytest.mark.skipif(
    not shutil.which("haproxy"), reason="haproxy not installed (make setup installs it)"
)
CLUSTER = "local-a"


class _EchoPath(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms wait between

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        pass


@dataclass
class Proxy:
    url: str
    metrics_url: str
    config: Path
    admin_socket: Path
    process: subprocess.Popen[str] | None = None

    def router(self) -> HAProxyRouter:
        return HAProxyRouter(CLUSTER, self.admin_socket)

    def paths(self, model: str, n: int) -> Counter[str]:
        with requests.Session() as s:  # one keep-alive connection: the split is per request
            return Counter(
                s.post(f"{self.url}/v2/models/{model}/infer", timeout=5).json()["path"] for _ in range(n)
            )

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[0]  # exited: its log
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=1).ok and self.admin_socket.exists():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("haproxy did not come up in 10 s")

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


def render(tmp_path: Path, replicas: dict[str, int]) -> tuple[Path, Path, ProxyPorts]:
    ports = ProxyPorts(free_port(), free_port())
    routes = routes_map_path(tmp_path, CLUSTER)
    routes.write_text("")
    socket_path = tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(CLUSTER, ports, replicas, socket_path, routes))
    return config, socket_path, ports


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    servers = [ThreadingHTTPServer((LOOPBACK, 0), _EchoPath) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    replicas = {f"{CLUSTER}-{i}": int(s.server_address[1]) for i, s in enumerate(servers)}
    config, socket_path, ports = render(tmp_path, replicas)
    p = Proxy(
        f"http://{LOOPBACK}:{ports.serve}", f"http://{LOOPBACK}:{ports.metrics}/metrics", config, socket_path
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()
        for server in servers:
            server.shutdown()
            server.server_close()


@needs_haproxy
def test_rendered_config_passes_haproxy_check_with_both_routed_backends(tmp_path: Path) -> None:
    config, _, _ = render(tmp_path, {"local-a-0": 18000, "local-a-1": 18001})
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    text = config.read_text()
    assert "backend local-a-stable" in text and "backend local-a-canary" in text
    # Both routed backends send to every replica, sharing the replicas backend's health checks.
    assert text.count("server local-a-1 127.0.0.1:18001 track local-a-replicas/local-a-1") == 2


def test_a_map_file_path_haproxy_cannot_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot name a map file holding ' '"):
        render_haproxy_config(
            CLUSTER, ProxyPorts(1, 2), {"a": 3}, tmp_path / "s", tmp_path / "my home" / "r.map"
        )


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ({}, r"give version -> percent"),
        ({1: 50, 2: 30, 3: 20}, r"3 versions .* at most 2"),
        ({1: 90, 2: 20}, r"percents sum to 110, not 100"),
        ({1: 90}, r"percents sum to 90"),
        ({1: 110, 2: -10}, r"version 1 has percent 110; use an integer 0..100"),
        ({0: 100}, r"version 0 is not a positive integer"),
        ({1: 99.5, 2: 0.5}, r"version 1 has percent 99.5"),
        ({True: 100}, r"version True is not a positive integer"),
    ],
)
def test_a_bad_weight_map_is_a_user_error_naming_the_problem(weights: dict[int, int], problem: str) -> None:
    with pytest.raises(UserError, match=rf"^weights for model mlp: {problem}"):
        checked_split("mlp", weights)


def test_a_checked_split_gives_back_the_weights_it_was_made_from() -> None:
    for weights in ({1: 100}, {1: 100, 2: 0}, {1: 90, 2: 10}, {3: 0, 2: 100}):
        assert checked_split("mlp", weights).as_weights() == weights
        assert list(checked_split("mlp", weights).as_weights()) == list(weights)  # stable first


def test_an_unreachable_proxy_is_a_fleet_runtime_error(tmp_path: Path) -> None:
    router = HAProxyRouter(CLUSTER, tmp_path / "no-such.sock")
    with pytest.raises(FleetRuntimeError, match=r"proxy of cluster local-a unreachable on its admin socket"):
        router.weights("mlp")
    with pytest.raises(FleetRuntimeError, match=r"unreachable"):
        router.set_weights("mlp", {1: 100})


@needs_haproxy
def test_weights_rewrite_the_path_to_each_version_and_read_back(proxy: Proxy) -> None:
    router = proxy.router()
    unrouted = "/v2/models/mlp/infer"
    assert router.weights("mlp") == {}
    assert proxy.paths("mlp", 20) == {unrouted: 20}  # nothing set: as without a rollout

    router.set_weights("mlp", {1: 100, 2: 0})
    assert proxy.paths("mlp", 40) == {"/v2/models/mlp/versions/1/infer": 40}
    router.set_weights("mlp", {1: 0, 2: 100})
    assert proxy.paths("mlp", 40) == {"/v2/models/mlp/versions/2/infer": 40}
    assert HAProxyRouter(CLUSTER, proxy.admin_socket).weights("mlp") == {1: 0, 2: 100}  # a fresh reader

    router.set_weights("my-model.v2", {7: 100})  # '-' and '.' need no mapping: the map is keyed by name
    assert proxy.paths("my-model.v2", 10) == {"/v2/models/my-model.v2/versions/7/infer": 10}
    assert router.weights("my-model.v2") == {7: 100}
    assert proxy.paths("other", 5) == {"/v2/models/other/infer": 5}  # a model not in rollout: untouched
    with requests.Session() as s:  # only the unversioned infer is routed
        assert s.get(f"{proxy.url}/v2/models/mlp", timeout=5).json()["path"] == "/v2/models/mlp"
        pinned = s.post(f"{proxy.url}/v2/models/mlp/versions/1/infer", timeout=5).json()["path"]
        assert pinned == "/v2/models/mlp/versions/1/infer"

    router.clear("mlp")
    router.clear("mlp")  # clearing what is not set is fine
    assert router.weights("mlp") == {}
    assert proxy.paths("mlp", 20) == {unrouted: 20}


@needs_haproxy
def test_a_restarted_proxy_says_nothing_is_set(proxy: Proxy) -> None:
    router = proxy.router()
    router.set_weights("mlp", {1: 90, 2: 10})
    assert router.weights("mlp") == {1: 90, 2: 10}
    proxy.stop()
    with pytest.raises(FleetRuntimeError, match="unreachable"):
        router.weights("mlp")
    proxy.start()
    assert router.weights("mlp") == {}
    assert proxy.paths("mlp", 10) == {"/v2/models/mlp/infer": 10}


@needs_haproxy
def test_a_model_name_that_would_break_the_admin_command_is_refused(proxy: Proxy) -> None:
    router = proxy.router()
    for name in ("mlp; clear map", "a b", ""):
        with pytest.raises(UserError, match="cannot be routed"):
            router.set_weights(name, {1: 100})
    assert router.weights("mlp") == {}

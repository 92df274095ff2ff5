"""The HAProxy admin socket path always fits a Unix socket address, whatever the cluster name and home."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gpufleet.local.fleet import LocalFleet
from gpufleet.local.haproxy import admin_socket_path
from gpufleet.local.ports import PortBook
from gpufleet.naming import cluster_name_problem
from gpufleet.spec import load_fleet

# Linux: struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; } and the path ends in NUL.
SUN_PATH_BYTES = 108
# HAProxy first binds `<path>.<pid>.tmp` (src/sock_unix.c); the longest Linux pid has 7 digits.
HAPROXY_TEMP_SUFFIX = ".4194304.tmp"
LONGEST_CLUSTER = "c" + "-x9" * 20 + "z9"  # 63 characters, a valid local cluster name


def fits(path: str | Path) -> bool:
    """HAProxy can bind it: its temporary name, NUL included, fits sun_path."""
    return len(os.fsencode(f"{path}{HAPROXY_TEMP_SUFFIX}")) + 1 <= SUN_PATH_BYTES


def test_the_longest_valid_cluster_name_is_63_characters() -> None:
    assert len(LONGEST_CLUSTER) == 63
    assert cluster_name_problem("local", LONGEST_CLUSTER) is None


def test_short_names_keep_the_readable_path_under_the_home() -> None:
    home = Path("/home/me/demo/.gpufleet")
    assert admin_socket_path(home, "local-a") == home / "run" / "proxy-local-a.sock"


def test_a_long_name_gets_a_short_hashed_path_still_under_the_home() -> None:
    home = Path("/home/" + "h" * 44)  # 50 bytes: room for a hashed name, not for 63 characters
    assert not fits(home / "run" / f"proxy-{LONGEST_CLUSTER}.sock")
    path = admin_socket_path(home, LONGEST_CLUSTER)
    assert fits(path) and path.parent == home / "run"
    assert path == admin_socket_path(home, LONGEST_CLUSTER)  # deterministic
    assert path != admin_socket_path(home, LONGEST_CLUSTER[:-1] + "8")  # one socket per cluster


def test_a_home_too_deep_for_any_socket_gets_a_private_dir_keyed_by_the_home() -> None:
    deep = Path("/srv/" + "/".join(["d" * 30] * 4))
    assert not fits(deep / "run" / "proxy-x.sock")
    path = admin_socket_path(deep, LONGEST_CLUSTER)
    assert fits(path)
    assert path == admin_socket_path(deep, LONGEST_CLUSTER)
    other_home = admin_socket_path(Path(str(deep) + "2"), LONGEST_CLUSTER)
    assert other_home.parent != path.parent  # two homes never share a socket dir
    assert path.parent.name.startswith(f"gpufleet-{os.getuid()}-")  # nor two users


needs_local_binaries = pytest.mark.skipif(
    not (shutil.which("haproxy") and shutil.which("prometheus")),
    reason="haproxy and prometheus not installed (make setup installs them)",
)


@pytest.fixture
def deep_home(tmp_path: Path) -> Path:
    home = tmp_path.joinpath(*["deep" * 8] * 4) / "home"
    assert not fits(home / "run" / "x.sock")
    return home


def plan_with_longest_cluster(home: Path) -> tuple[str, str]:
    """Plan a fleet whose cluster has the longest valid name; the socket in the endpoints and the
    one in the rendered HAProxy config."""
    fleet_file = home.parent / "fleet.yaml"
    fleet_file.parent.mkdir(parents=True, exist_ok=True)
    fleet_file.write_text(
        f"name: t\nclusters: [{{name: {LONGEST_CLUSTER}, cloud: local, replicas: 1}}]\n"
        "model_store: {bucket: t-models}\nmodels: []\n"
    )
    endpoints, _ = LocalFleet(home)._plan(load_fleet(fleet_file), fleet_file, PortBook())
    [cluster] = endpoints.clusters
    config = (home / "config" / f"haproxy-{LONGEST_CLUSTER}.cfg").read_text()
    [line] = [ln.split() for ln in config.splitlines() if ln.strip().startswith("stats socket")]
    return cluster.admin_socket, line[2]


@needs_local_binaries
def test_planned_fleet_records_and_renders_a_socket_path_that_fits(deep_home: Path) -> None:
    recorded, rendered = plan_with_longest_cluster(deep_home)
    try:
        assert recorded == rendered
        assert fits(rendered), f"{len(os.fsencode(rendered))} bytes: {rendered}"
    finally:
        shutil.rmtree(Path(rendered).parent, ignore_errors=True)


@needs_local_binaries
def test_haproxy_binds_the_planned_admin_socket(deep_home: Path) -> None:
    _, sock_path = plan_with_longest_cluster(deep_home)
    config = deep_home / "config" / f"haproxy-{LONGEST_CLUSTER}.cfg"
    proxy = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(sock_path).exists() and proxy.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.poll() is None, proxy.communicate()[0]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as admin:
            admin.settimeout(5)
            admin.connect(sock_path)
            admin.sendall(b"show info\n")
            reply = b""
            while chunk := admin.recv(65536):
                reply += chunk
        assert b"Name: HAProxy" in reply
    finally:
        proxy.terminate()
        proxy.wait(10)
        shutil.rmtree(Path(sock_path).parent, ignore_errors=True)

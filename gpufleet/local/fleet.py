"""Bring the local clusters of a fleet up, report on them, and take them down.

`up` converges: processes already running with the same command and config are kept, dead or
changed ones are (re)started, ones no longer in the fleet are stopped. Ports are recorded in
`<home>/state.json` and reused, so URLs stay the same across `up` calls.

Failure safety: a failed `up` stops the processes it started fresh and keeps the rest; `up` and
`down` take `<home>/fleet.lock` so two of them never work on one home at the same time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
from filelock import FileLock, Timeout

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.local.haproxy import (
    ProxyPorts,
    admin_socket_path,
    haproxy_spec,
    make_socket_dir,
    render_haproxy_config,
    routes_map_path,
)
from gpufleet.local.ports import LOOPBACK, PortBook
from gpufleet.local.processes import (
    ProcessSpec,
    ProcessTable,
    TrackedProcess,
    preflight,
    process_alive,
)
from gpufleet.local.prometheus import ScrapeTarget, prometheus_spec, render_prometheus_config
from gpufleet.local.store_server import LOCAL_S3_CREDENTIALS, moto_server_spec
from gpufleet.local.triton import TritonPorts, prepare_backends, triton_spec
from gpufleet.objectstore import TransferSettings
from gpufleet.objectstore.s3 import S3Store
from gpufleet.spec import Fleet
from gpufleet.triton_admin import repository_index

Report = Callable[[str], None]
StageHook = Callable[["FleetEndpoints"], None]
SERVED = "served"  # state.json: {cluster: {model: [versions]}}, what `engine load/unload` last set


@dataclass(frozen=True)
class ReplicaEndpoints:
    name: str
    http_url: str
    metrics_url: str


@dataclass(frozen=True)
class ClusterEndpoints:
    name: str
    proxy_url: str
    proxy_metrics_url: str
    admin_socket: str
    replicas: list[ReplicaEndpoints]


@dataclass(frozen=True)
class FleetEndpoints:
    """Where everything of a running local fleet answers; saved in the state file."""

    fleet_file: str
    store_url: str
    bucket: str
    prefix: str
    prometheus_url: str
    clusters: list[ClusterEndpoints]

    def cluster(self, name: str) -> ClusterEndpoints:
        for c in self.clusters:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.clusters)
        raise UserError(f"cluster '{name}' is not a running local cluster; use one of: {known}")

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> FleetEndpoints:
        clusters = []
        for c in raw["clusters"]:  # type: ignore[attr-defined]
            replicas = [ReplicaEndpoints(**r) for r in c["replicas"]]
            clusters.append(ClusterEndpoints(**{**c, "replicas": replicas}))
        return cls(**{**raw, "clusters": clusters})  # type: ignore[arg-type]


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class LocalFleet:
    def __init__(self, home: Path, report: Report | None = None) -> None:
        self.home = home.resolve()
        self.table = ProcessTable(self.home)
        self.report: Report = report or (lambda _msg: None)

    # -- reading -----------------------------------------------------------------------------
    def endpoints(self) -> FleetEndpoints | None:
        raw = self.table.read_state().get("endpoints")
        if not isinstance(raw, dict):
            return None
        try:
            return FleetEndpoints.from_dict(raw)
        except (KeyError, TypeError):
            return None

    def object_store(self, endpoints: FleetEndpoints) -> S3Store:
        """The fleet's model store (moto's S3 API on loopback) as the engine pipeline writes it."""
        return S3Store.connect(
            f"s3://{endpoints.bucket}/{endpoints.prefix}",
            endpoint_url=endpoints.store_url,
            settings=TransferSettings(),
            credentials=LOCAL_S3_CREDENTIALS,
        )

    def served(self, cluster: str, model: str) -> list[int] | None:
        """The versions `engine load/unload` last set for a model on a cluster; None if never set."""
        record = self.table.read_state().get(SERVED)
        versions = record.get(cluster, {}).get(model) if isinstance(record, dict) else None
        return [int(v) for v in versions] if isinstance(versions, list) and versions else None

    def record_served(self, cluster: str, model: str, versions: list[int]) -> None:
        with self.table.update_state() as state:
            record = state.get(SERVED)
            record = record if isinstance(record, dict) else {}
            record.setdefault(cluster, {})[model] = sorted(set(versions))
            state[SERVED] = record

    # -- planning ----------------------------------------------------------------------------
    def _plan(
        self, fleet: Fleet, fleet_file: Path, ports: PortBook
    ) -> tuple[FleetEndpoints, list[list[ProcessSpec]]]:
        clusters = fleet.local_clusters()
        if not clusters:
            raise UserError(
                f"{fleet_file.name}: clusters: no cluster has cloud: local; add one to run a local fleet"
            )
        store_port = ports.get("store")
        store_url = f"http://{LOOPBACK}:{store_port}"
        repo_url = f"s3://{store_url}/{fleet.model_store.bucket}/{fleet.model_store.prefix}"
        backends = prepare_backends(self.home)
        config_dir = self.home / "config"
        config_dir.mkdir(parents=True, exist_ok=True)

        tritons: list[ProcessSpec] = []
        proxies: list[ProcessSpec] = []
        targets: list[ScrapeTarget] = []
        cluster_endpoints: list[ClusterEndpoints] = []
        for cluster in clusters:
            replicas: list[ReplicaEndpoints] = []
            backend_ports: dict[str, int] = {}
            for i in range(cluster.replicas):
                name = f"{cluster.name}-{i}"
                tp = TritonPorts(
                    ports.get(f"{name}.http"), ports.get(f"{name}.grpc"), ports.get(f"{name}.metrics")
                )
                spec = triton_spec(f"triton-{name}", cluster.name, tp, repo_url, backends)
                tritons.append(_with_fingerprint(spec))
                replicas.append(
                    ReplicaEndpoints(
                        name, f"http://{LOOPBACK}:{tp.http}", f"http://{LOOPBACK}:{tp.metrics}/metrics"
                    )
                )
                backend_ports[name] = tp.http
                targets.append(ScrapeTarget("triton", tp.metrics, cluster.name, name))
            pp = ProxyPorts(
                ports.get(f"proxy-{cluster.name}.serve"), ports.get(f"proxy-{cluster.name}.metrics")
            )
            socket = admin_socket_path(self.home, cluster.name)
            make_socket_dir(socket)
            routes_map = routes_map_path(config_dir, cluster.name)
            routes_map.write_text("")  # canary routes are set at run time over the admin socket
            cfg_text = render_haproxy_config(cluster.name, pp, backend_ports, socket, routes_map)
            cfg_path = config_dir / f"haproxy-{cluster.name}.cfg"
            cfg_path.write_text(cfg_text)
            proxies.append(_with_fingerprint(haproxy_spec(cluster.name, cfg_path, pp), cfg_text))
            targets.append(ScrapeTarget("proxy", pp.metrics, cluster.name, f"proxy-{cluster.name}"))
            cluster_endpoints.append(
                ClusterEndpoints(
                    cluster.name,
                    f"http://{LOOPBACK}:{pp.serve}",
                    f"http://{LOOPBACK}:{pp.metrics}/metrics",
                    str(socket),
                    replicas,
                )
            )
        prom_port = ports.get("prometheus")
        prom_cfg = render_prometheus_config(targets)
        prom_path = config_dir / "prometheus.yml"
        prom_path.write_text(prom_cfg)
        prom = _with_fingerprint(
            prometheus_spec(prom_path, self.home / "prometheus-data", prom_port), prom_cfg
        )
        endpoints = FleetEndpoints(
            fleet_file=str(fleet_file.resolve()),
            store_url=store_url,
            bucket=fleet.model_store.bucket,
            prefix=fleet.model_store.prefix,
            prometheus_url=f"http://{LOOPBACK}:{prom_port}",
            clusters=cluster_endpoints,
        )
        store = _with_fingerprint(moto_server_spec(store_port))
        return endpoints, [[store], tritons, proxies, [prom]]

    # -- up ----------------------------------------------------------------------------------
    def up(
        self,
        fleet: Fleet,
        fleet_file: Path,
        timeout_s: float = 180.0,
        *,
        on_store_ready: StageHook | None = None,
        on_replicas_ready: StageHook | None = None,
    ) -> FleetEndpoints:
        """Converge the processes. The hooks put models in: `on_store_ready` once the store answers
        (publish), `on_replicas_ready` once every Triton does (load); a failing hook fails the `up`."""
        with self._exclusive("up"):
            return self._up(fleet, fleet_file, timeout_s, on_store_ready, on_replicas_ready)

    def _up(
        self,
        fleet: Fleet,
        fleet_file: Path,
        timeout_s: float,
        on_store_ready: StageHook | None,
        on_replicas_ready: StageHook | None,
    ) -> FleetEndpoints:
        with self.table.update_state() as state:
            recorded = state.get("ports")
            ports = PortBook(recorded if isinstance(recorded, dict) else None)
            endpoints, stages = self._plan(fleet, fleet_file, ports)
            state["ports"] = ports.ports
            state["endpoints"] = asdict(endpoints)

        wanted = {spec.name for stage in stages for spec in stage}
        leftovers = [name for name in self.table.tracked() if name not in wanted]
        if leftovers:
            self.report(f"stopping processes no longer in the fleet: {', '.join(leftovers)}")
            self.table.stop(leftovers)

        known_before = set(self.table.tracked())
        started: list[str] = []
        try:
            for i, stage in enumerate(stages):
                started += self._converge(stage, timeout_s)
                if i == 0:
                    self._ensure_bucket(endpoints)
                    if on_store_ready:
                        on_store_ready(endpoints)
                if i == 1 and on_replicas_ready:
                    on_replicas_ready(endpoints)
        except BaseException:
            # Leave nothing half-created by this call: stop what it started fresh. A process it
            # restarted (changed or crashed) and saw ready stays up: its old self is gone already,
            # and stopping the new one would only take more of the fleet down.
            self.table.stop([name for name in started if name not in known_before])
            if not any(process_alive(p) for p in self.table.tracked().values()):
                with self.table.update_state() as state:
                    state.pop("endpoints", None)  # nothing answers: no fleet is running
            raise
        return endpoints

    def _converge(self, stage: list[ProcessSpec], timeout_s: float) -> list[str]:
        """Start the processes of `stage` that are not running as specified; wait until all are
        ready. Returns the names started. On failure nothing this call started keeps running."""
        tracked = self.table.tracked()
        to_start = [spec for spec in stage if not _runs_as_specified(tracked.get(spec.name), spec)]
        # Everything knowable before touching a running process: its replacement's program exists
        # and its config passes the program's own check. A replacement that fails here leaves the
        # old process serving.
        for spec in to_start:
            try:
                preflight(spec)
            except FleetRuntimeError as exc:
                current = tracked.get(spec.name)
                kept = f"; the running {spec.name} is kept" if current and process_alive(current) else ""
                raise FleetRuntimeError(f"{exc}{kept}") from exc
        # A replacement cannot start before the old process stops: both bind the same recorded
        # ports (stable URLs are the point of recording them). So the old one stops first, and if
        # the new one then fails, the old record is put back: dead, so `status` shows the process
        # down with its log and the next `up` restarts it, instead of the process vanishing.
        replaced = {spec.name: tracked[spec.name] for spec in to_start if spec.name in tracked}
        stopped_for_restart = [name for name, old in replaced.items() if process_alive(old)]
        for name in stopped_for_restart:
            self.report(f"restarting {name}")
        self.table.stop(stopped_for_restart)
        started: list[TrackedProcess] = []
        try:
            for spec in to_start:
                self.report(f"starting {spec.name}")
                started.append(self.table.start(spec))
            self._wait_ready(started, to_start, timeout_s)
        except BaseException as exc:
            self.table.stop([p.name for p in started])
            for old in replaced.values():
                self.table.record(old)
            if stopped_for_restart and isinstance(exc, FleetRuntimeError):
                raise FleetRuntimeError(
                    f"{exc}; stopped for the restart, down until `gpufleet up` succeeds: "
                    + ", ".join(stopped_for_restart)
                ) from exc
            raise
        return [p.name for p in started]

    def _wait_ready(self, started: list[TrackedProcess], specs: list[ProcessSpec], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = {p.name: (p, spec) for p, spec in zip(started, specs, strict=True)}
        while pending:
            for name, (proc, spec) in list(pending.items()):
                if not process_alive(proc):
                    raise FleetRuntimeError(
                        f"{name} exited during start{_last_log_line(proc)}; see {proc.log}"
                    )
                if _healthy(spec.health_url):
                    self.report(f"{name} ready")
                    del pending[name]
            if pending and time.monotonic() > deadline:
                name, (proc, _) = next(iter(pending.items()))
                raise FleetRuntimeError(
                    f"{name} not ready after {timeout_s:.0f}s{_last_log_line(proc)}; see {proc.log}"
                )
            time.sleep(0.25)

    def _ensure_bucket(self, endpoints: FleetEndpoints) -> None:
        store = self.object_store(endpoints)
        store.ensure_bucket()

    # -- down --------------------------------------------------------------------------------
    def down(self) -> list[str]:
        with self._exclusive("down"):
            stopped = self.table.stop_all()
            with self.table.update_state() as state:
                state.pop("endpoints", None)
                state.pop(SERVED, None)  # the store (moto, in memory) is gone with its versions
            return stopped

    @contextlib.contextmanager
    def _exclusive(self, command: str) -> Iterator[None]:
        """Hold the home's operation lock for one `up` or `down`, or fail at once (like Terraform's
        state lock): two of them on one home would start the same processes on the same ports.
        The lock is an fcntl lock, so a crashed holder never leaves it stale."""
        self.home.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.home / "fleet.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise FleetRuntimeError(
                f"another `gpufleet up` or `gpufleet down` is running on {self.home}; "
                f"wait for it to finish, then run `gpufleet {command}` again"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def status(self) -> list[ProcessStatus]:
        """One row per tracked process: alive, answering its health check, models it serves."""
        endpoints = self.endpoints()
        health = {}
        if endpoints:
            for c in endpoints.clusters:
                for r in c.replicas:
                    health[f"triton-{r.name}"] = (f"{r.http_url}/v2/health/ready", r.http_url)
                health[f"proxy-{c.name}"] = (c.proxy_metrics_url.replace("/metrics", "/healthz"), c.proxy_url)
            health["store"] = (f"{endpoints.store_url}/moto-api/", endpoints.store_url)
            health["prometheus"] = (f"{endpoints.prometheus_url}/-/ready", endpoints.prometheus_url)

        def row(proc: TrackedProcess) -> ProcessStatus:
            alive = process_alive(proc)
            check, url = health.get(proc.name, ("", ""))
            ready = alive and bool(check) and _healthy(check)
            models: list[str] = []
            if ready and proc.role == "triton":
                try:
                    models = sorted(
                        f"{v.model}:{v.version}" for v in repository_index(url) if v.state == "READY"
                    )
                except Exception:  # a replica going away mid-check is "not ready", not a crash
                    ready = False
            return ProcessStatus(
                proc.name, proc.role, proc.cluster, proc.pid, alive, ready, models, url, proc.log
            )

        procs = sorted(self.table.tracked().values(), key=lambda p: (p.cluster or "", p.role, p.name))
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(row, procs))


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    role: str
    cluster: str | None
    pid: int
    alive: bool
    ready: bool
    models: list[str]
    url: str
    log: str


def _with_fingerprint(spec: ProcessSpec, config_text: str = "") -> ProcessSpec:
    # Only what we control: the inherited environment (PATH, ...) must not force restarts.
    return dataclasses.replace(spec, fingerprint=_fingerprint(*spec.argv, config_text))


def _runs_as_specified(current: TrackedProcess | None, spec: ProcessSpec) -> bool:
    return current is not None and process_alive(current) and current.fingerprint == spec.fingerprint


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _last_log_line(proc: TrackedProcess) -> str:
    try:
        lines = [ln.strip() for ln in Path(proc.log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f" (last log line: {lines[-1][:200]})" if lines else ""

"""The pre-rollout gate: the candidate version, called directly on every replica before any traffic moves.

On each replica, through the candidate's own versioned URL (`/v2/models/<m>/versions/<v>/infer`, not
the proxy, which would answer from whichever replica it picked):
1. outputs: the reference inputs stored with the candidate (`<model>/<v>/reference.npz`, written by
   `engine build`) must give the reference outputs within the tolerance of the candidate's precision
   (from its manifest; reference.mismatch);
2. latency: after a warm-up of both versions (a freshly loaded version's first request takes ~28 ms
   against ~0.8 ms steady on the local fleet), requests alternate between the stable and the candidate
   version on one connection, so both see the same machine at the same moments; the candidate's median
   must stay within `latency_ratio_limit` × the stable median + `latency_slack_ms` (the slack keeps a
   sub-millisecond model from failing on scheduling noise).

A problem with the candidate never raises: no manifest, a missing or unreadable reference, an error
response, a replica that does not answer, wrong outputs, too slow — each is a failed GateResult whose
reason names the replica and what. The store being unreachable is not a problem of the candidate: that
StoreError propagates, so the driver stops and a resumed rollout runs the gate again instead of rolling
a good candidate back.
"""

from __future__ import annotations

import statistics
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from gpufleet.errors import FleetRuntimeError, UserError, one_line
from gpufleet.objectstore import ObjectStore, StoreError
from gpufleet.spec import ModelSpec
from pipelines.engines.load import Replica, read_published
from pipelines.engines.reference import REFERENCE_FILE, Reference, mismatch


@dataclass(frozen=True)
class GateSettings:
    latency_requests: int = 40  # per version per replica, interleaved stable/candidate
    latency_ratio_limit: float = 1.5  # candidate median <= ratio * stable median + slack
    latency_slack_ms: float = 2.0
    timeout_s: float = 10.0  # per request (connect and answer)
    warmup_requests: int = 3  # per version per replica, before the latency test


@dataclass(frozen=True)
class ReplicaCheck:
    replica: str
    url: str
    outputs_ok: bool
    problem: str | None  # one line naming the replica; None when the replica passed
    stable_p50_ms: float | None = None
    candidate_p50_ms: float | None = None
    latency_limit_ms: float | None = None  # what the candidate's median had to stay under
    latency_requests: int = 0  # measured per version

    @property
    def passed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str  # one line: how it passed, or the first failure (and how many more)
    checks: tuple[ReplicaCheck, ...]
    model: str = ""
    stable: int = 0
    candidate: int = 0
    precision: str | None = None
    settings: GateSettings = field(default_factory=GateSettings)

    def to_dict(self) -> dict[str, object]:
        """JSON-able (plain dicts, lists, numbers, strings): goes into the rollout history."""
        return {
            "passed": self.passed,
            "reason": self.reason,
            "model": self.model,
            "stable": self.stable,
            "candidate": self.candidate,
            "precision": self.precision,
            "settings": asdict(self.settings),
            "checks": [asdict(check) for check in self.checks],
        }


class _CallFailed(Exception):
    """One request of the gate got no answer or an error answer; the message says which and why."""


def run_gate(
    model: ModelSpec,
    store: ObjectStore,
    stable: int,
    candidate: int,
    replicas: Sequence[Replica],
    settings: GateSettings = GateSettings(),
) -> GateResult:
    """Call `candidate` on every replica (outputs, then latency against `stable`); see the module doc."""

    def failed(reason: str, checks: Sequence[ReplicaCheck] = (), precision: str | None = None) -> GateResult:
        return GateResult(False, reason, tuple(checks), model.name, stable, candidate, precision, settings)

    try:
        precision: str = read_published(store, model.name, candidate).metadata.precision
    except StoreError:
        raise
    except (UserError, FleetRuntimeError) as exc:
        return failed(f"candidate {model.name} version {candidate}: {one_line(exc)}")
    reference, problem = _read_reference(store, model.name, candidate)
    if reference is None:
        return failed(str(problem), precision=precision)
    if not replicas:
        return failed(f"no replicas to call {model.name} version {candidate} on", precision=precision)

    # One replica at a time: the replicas share the machine's cores, and a latency test running
    # beside another replica's would measure both.
    checks = [
        _check_replica(model.name, stable, candidate, reference, precision, replica, settings)
        for replica in replicas
    ]
    failures = [c for c in checks if not c.passed]
    if failures:
        others = len(failures) - 1
        more = f" (and {others} more of {len(checks)} replicas failed)" if others else ""
        return failed(f"{failures[0].problem}{more}", checks, precision)
    reason = _passed_reason(checks, precision)
    return GateResult(True, reason, tuple(checks), model.name, stable, candidate, precision, settings)


def _read_reference(store: ObjectStore, model: str, candidate: int) -> tuple[Reference | None, str | None]:
    key = f"{model}/{candidate}/{REFERENCE_FILE}"
    again = (
        f"build and push it again with this gpufleet (`gpufleet engine build {model}`, "
        f"`gpufleet engine push {model}`)"
    )
    data = store.get_bytes(key)
    if data is None:
        return None, (
            f"candidate {model} version {candidate} has no reference data ({key} is not in {store.url}; "
            f"a gpufleet older than the gate pushed it): {again}"
        )
    try:
        reference = Reference.from_bytes(data)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        why = one_line(exc)
        return None, f"candidate {model} version {candidate}: {key} is not readable ({why}): {again}"
    if not reference.inputs or not reference.outputs:
        return None, (
            f"candidate {model} version {candidate}: {key} holds no reference "
            f"{'inputs' if not reference.inputs else 'outputs'}: {again}"
        )
    for name, array in reference.inputs.items():
        if np_to_triton_dtype(array.dtype) is None:
            return None, (
                f"candidate {model} version {candidate}: {key} input {name} has dtype {array.dtype}, "
                f"which Triton cannot take: {again}"
            )
    return reference, None


def _check_replica(
    model: str,
    stable: int,
    candidate: int,
    reference: Reference,
    precision: str,
    replica: Replica,
    settings: GateSettings,
) -> ReplicaCheck:
    host = replica.url.removeprefix("http://")
    timeout = settings.timeout_s
    try:
        client = triton_http.InferenceServerClient(host, connection_timeout=timeout, network_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a malformed replica URL fails that replica, not the gate
        problem = f"{replica.name}: no client for {replica.url}: {one_line(exc)}"
        return ReplicaCheck(replica.name, replica.url, outputs_ok=False, problem=problem)
    call = _Caller(client, model, reference, replica)
    try:
        try:
            wrong = mismatch(reference, call(candidate), precision)
        except _CallFailed as exc:
            return ReplicaCheck(replica.name, replica.url, outputs_ok=False, problem=str(exc))
        if wrong is not None:
            problem = (
                f"{replica.name}: {model} version {candidate} gives wrong outputs for the reference inputs: "
                f"{wrong}"
            )
            return ReplicaCheck(replica.name, replica.url, outputs_ok=False, problem=problem)
        try:
            stable_ms, candidate_ms = _interleaved_latency(call, stable, candidate, settings)
        except _CallFailed as exc:
            return ReplicaCheck(replica.name, replica.url, outputs_ok=True, problem=str(exc))
    finally:
        client.close()
    limit = settings.latency_ratio_limit * stable_ms + settings.latency_slack_ms
    slow = None
    if candidate_ms > limit:
        slow = (
            f"{replica.name}: {model} version {candidate} is too slow: median {candidate_ms:.1f} ms against "
            f"{stable_ms:.1f} ms for version {stable} over {settings.latency_requests} requests each "
            f"(limit {settings.latency_ratio_limit:g} × stable + {settings.latency_slack_ms:g} ms "
            f"= {limit:.1f} ms)"
        )
    return ReplicaCheck(
        replica.name,
        replica.url,
        outputs_ok=True,
        problem=slow,
        stable_p50_ms=stable_ms,
        candidate_p50_ms=candidate_ms,
        latency_limit_ms=limit,
        latency_requests=settings.latency_requests,
    )


class _Caller:
    """Sends the reference inputs to one version on one replica over one kept-alive connection."""

    def __init__(
        self, client: triton_http.InferenceServerClient, model: str, reference: Reference, replica: Replica
    ) -> None:
        self.client, self.model, self.replica = client, model, replica
        self.inputs = [_infer_input(name, array) for name, array in reference.inputs.items()]
        self.outputs = [triton_http.InferRequestedOutput(name) for name in reference.outputs]

    def __call__(self, version: int) -> dict[str, npt.NDArray[np.generic]]:
        try:
            result = self.client.infer(
                self.model, self.inputs, model_version=str(version), outputs=self.outputs
            )
            found = {o.name(): result.as_numpy(o.name()) for o in self.outputs}
        # Whatever the failure (refused, timed out, an error answer, a reply without outputs), the
        # version did not serve this replica's caller: a failed check naming both, never a traceback.
        except Exception as exc:  # noqa: BLE001
            raise _CallFailed(
                f"{self.replica.name}: {self.model} version {version} did not answer at {self.replica.url}: "
                f"{_why(exc)}"
            ) from exc
        return {name: value for name, value in found.items() if value is not None}


def _infer_input(name: str, array: npt.NDArray[np.generic]) -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(np.ascontiguousarray(array))
    return tensor


def _why(exc: BaseException) -> str:
    """Triton's own message for an error answer; the exception's kind too for a transport failure
    ("TimeoutError: timed out" says more than "timed out")."""
    if isinstance(exc, InferenceServerException):
        return one_line(exc.message())
    return f"{type(exc).__name__}: {one_line(exc)}"


def _interleaved_latency(
    call: _Caller, stable: int, candidate: int, settings: GateSettings
) -> tuple[float, float]:
    """Median milliseconds of (stable, candidate), requests alternating between them."""
    for _ in range(settings.warmup_requests):
        call(stable)
        call(candidate)
    stable_ms: list[float] = []
    candidate_ms: list[float] = []
    pairs = ((stable, stable_ms), (candidate, candidate_ms))
    for i in range(max(1, settings.latency_requests)):
        # ABBA order: neither version is always the one sent right after the other.
        for version, times in pairs if i % 2 == 0 else pairs[::-1]:
            began = time.perf_counter()
            call(version)
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(stable_ms), statistics.median(candidate_ms)


def _passed_reason(checks: Sequence[ReplicaCheck], precision: str) -> str:
    # The replica whose candidate came closest to its limit stands for all in the one line.
    closest = max(checks, key=lambda c: (c.candidate_p50_ms or 0.0) / (c.latency_limit_ms or 1.0))
    return (
        f"passed on {len(checks)} replica{'s' if len(checks) != 1 else ''}: outputs within {precision} "
        f"tolerance, p50 {closest.candidate_p50_ms:.1f} ms vs {closest.stable_p50_ms:.1f} ms stable "
        f"(on {closest.replica}; limit {closest.latency_limit_ms:.1f} ms)"
    )

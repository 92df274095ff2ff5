"""Kill -9 at any moment: the rollout driver dies in the write-ahead gap, a new one finishes the job
(issue 11, point 6).

Write-ahead (pipelines/rollout/driver.py) means the stored state may be one transition ahead of the
fleet: persisted, not yet applied. Each case opens exactly that gap. The first driver's RolloutStore
raises Crash right after its k-th write of one transition landed in the store, before the driver
could apply it (Crash is a BaseException: no `except Exception` on the way out can swallow it, as
nothing catches a kill -9). The case first checks that the fleet really lags the stored state (what
Triton serves, what HAProxy splits), then a new RolloutDriver built from fresh objects, as a new
process would build them, resumes the rollout (`resume(force=True)`, or a plain `resume()` once the
dead driver's lease is stale) and must finish it correctly:
- the right final phase (promoted, or rolled_back for a latency-regressed candidate);
- every replica serves exactly the right version (Triton's repository index);
- the routes are removed from both proxies; while the test ran (a thread reads both HAProxy maps
  every ~50 ms) a split was only ever absent or the candidate at 0, a declared step, or 100;
- not one client request failed (real traffic through both proxies the whole time; the regressed
  candidate is slow, not failing);
- each transition persisted once (the crashed one included), the journal's indices contiguous, and
  no window after the resume found the router off its stored split (reconciled before judging).

Shorter settings keep a case within ~40 s: steps [50, 100], 3 s windows, 3 s minimum bake.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.objectstore import ObjectStore
from pipelines.rollout.driver import RolloutDriver, Update, plan_rollout, plan_waves, settings_from_spec
from pipelines.rollout.journal import WindowJournal
from pipelines.rollout.router.haproxy import HAProxyRouter
from pipelines.rollout.state import Claim, RolloutState, RolloutStore
from tests.rollout_fleet import MODEL, WAVES, WINDOW_S, Harness

pytestmark = pytest.mark.integration

STEPS = [50, 100]
MIN_BAKE_S = 3.0
FIRST, SECOND = WAVES[0][0], WAVES[1][0]
CLUSTERS = [FIRST, SECOND]
FINISH = "finish"  # not an event: the driver entering RolloutStore.finish (splits gone, lock still held)


class Crash(BaseException):
    """The driver process dies here (a BaseException: as uncatchable for the driver as a kill -9)."""


class CrashingRolloutStore(RolloutStore):
    """The real store; its `nth` landed write of transition `event` (or its `nth` finish) kills the driver."""

    def __init__(self, store: ObjectStore, event: str, nth: int) -> None:
        super().__init__(store)
        self.event = event
        self.nth = nth
        self.seen = 0

    def write(self, claim: Claim, state: RolloutState) -> Claim:
        written = super().write(claim, state)
        # A heartbeat adds no transition to the history: it is not a crash point.
        if len(state.history) > len(claim.state.history) and state.history[-1].event == self.event:
            self._count()
        return written

    def finish(self, claim: Claim) -> None:
        # After a landed finish there is no rollout left to resume: die just before it instead.
        if self.event == FINISH:
            self._count()
        super().finish(claim)

    def _count(self) -> None:
        self.seen += 1
        if self.seen == self.nth:
            raise Crash(f"{self.event} #{self.nth}")


# What a cluster shows at the moment of the crash: the versions its replicas serve ("S" stable,
# "C" candidate) and the candidate's share in its HAProxy split (None: no split at all).
Fleet = dict[str, tuple[str, int | None]]


@dataclass(frozen=True)
class CrashPoint:
    event: str  # the transition's event name in the stored history (or FINISH)
    nth: int  # its nth write in this rollout
    regressed: bool  # the candidate is slow: the rollout must end rolled_back
    # The fleet at the crash: the stored transition is not applied yet.
    fleet_at_crash: Fleet
    # The stored state at the crash (phase, and this cluster's stored weight).
    phase_at_crash: str
    stored_weight: tuple[str, int]
    stale_lease: bool  # resume without force once the dead driver's lease is stale

    @property
    def id(self) -> str:
        return f"{self.event.replace(' ', '_')}-{self.nth}{'-regressed' if self.regressed else ''}"


UNTOUCHED = ("S", None)
CRASH_POINTS = [
    # Wave 1 marked "canary" (both versions to load), nothing loaded, no split yet.
    CrashPoint("loading", 1, False, {FIRST: UNTOUCHED, SECOND: UNTOUCHED}, "gate", (FIRST, 0), True),
    # The gate passed and is stored; no traffic moved yet.
    CrashPoint("gate", 1, False, {FIRST: ("SC", 0), SECOND: UNTOUCHED}, "gate", (FIRST, 0), False),
    # Wave 1's first step stored at 50 %, the proxy still at 0.
    CrashPoint("weight", 1, False, {FIRST: ("SC", 0), SECOND: UNTOUCHED}, "canary", (FIRST, 50), True),
    # Wave 1 promoted (stored 100 %, wave 2 at its gate), the proxy still at 50.
    CrashPoint("weight", 2, False, {FIRST: ("SC", 50), SECOND: UNTOUCHED}, "gate", (FIRST, 100), False),
    # The whole rollout stored as promoted; wave 2's proxy still at 50, the old version loaded everywhere.
    CrashPoint("weight", 4, False, {FIRST: ("SC", 100), SECOND: ("SC", 50)}, "promoted", (SECOND, 100), True),
    # Old version unloaded and splits removed everywhere; the lock not released.
    CrashPoint(FINISH, 1, False, {FIRST: ("C", None), SECOND: ("C", None)}, "promoted", (SECOND, 100), False),
    # The judge's rollback stored; wave 1 still at 50 with both versions loaded.
    CrashPoint(
        "rollback", 1, True, {FIRST: ("SC", 50), SECOND: UNTOUCHED}, "rolling_back", (FIRST, 50), True
    ),
]


class SplitWatch:
    """Every split either proxy holds while the test runs, read from HAProxy about every 50 ms."""

    def __init__(self, harness: Harness) -> None:
        self.routers = {
            c: HAProxyRouter(c, Path(harness.endpoints.cluster(c).admin_socket)) for c in CLUSTERS
        }
        self.seen: set[tuple[str, tuple[tuple[int, int], ...]]] = set()
        self.reads = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> SplitWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for cluster, router in self.routers.items():
                try:
                    self.seen.add((cluster, tuple(sorted(router.weights(MODEL).items()))))
                except FleetRuntimeError as exc:
                    self.failures.append(str(exc))
            self.reads += 1
            self._stop.wait(0.05)


@pytest.fixture
def harness(rollout_fleet: Harness) -> Harness:
    return rollout_fleet


_regressed: list[int] = []


def regressed_version(harness: Harness, stable: int) -> int:
    """A candidate 25 ms slower per request after its first 60 calls (so the gate passes), pushed once
    and rolled out again by each regressed case (a reload starts its call count over)."""
    if not _regressed or _regressed[-1] < stable:
        _regressed.append(harness.push("--inject-latency-ms", "25", "--inject-after", "60"))
    return _regressed[-1]


def split_of(weights: dict[int, int], stable: int, candidate: int) -> int | None:
    """The candidate's percent in a split of exactly these two versions; None for no split."""
    if not weights:
        return None
    if weights == {stable: 100}:  # the stable-only split the driver sets before loading or unloading
        return 0
    assert set(weights) == {stable, candidate}, weights
    return weights[candidate]


def fleet_now(harness: Harness, stable: int, candidate: int) -> Fleet:
    names = {stable: "S", candidate: "C"}
    served = harness.served()
    routed = harness.router_weights()
    return {
        c: (
            "".join(sorted((names[v] for v in served[c]), key="SC".index)),
            split_of(routed[c], stable, candidate),
        )
        for c in CLUSTERS
    }


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("point", CRASH_POINTS, ids=lambda p: p.id)
def test_a_driver_dying_before_it_applies_a_transition_is_finished_by_a_new_one(
    harness: Harness, point: CrashPoint
) -> None:
    began = time.monotonic()
    stable = harness.stable()
    candidate = regressed_version(harness, stable) if point.regressed else harness.push()
    assert harness.router_weights() == {c: {} for c in CLUSTERS}
    settings = settings_from_spec(harness.fleet.rollout, window_seconds=WINDOW_S, min_bake_seconds=MIN_BAKE_S)
    loads = harness.loads()
    replica_errors_before = _replica_errors(SplitWatch(harness).routers)

    with SplitWatch(harness) as watch:
        for generator in loads:
            generator.start()
        try:
            clusters = harness.clusters()
            waves, _ = plan_waves(harness.fleet, clusters)
            planned = plan_rollout(
                harness.model, candidate, STEPS, settings, waves, clusters, harness.store, time.time()
            )
            dying = CrashingRolloutStore(harness.store, point.event, point.nth)
            with pytest.raises(Crash):
                RolloutDriver(dying, harness.model, clusters).start(planned)
            crashed_at = time.monotonic()

            # The gap: the transition is stored, the fleet does not show it yet.
            stored = harness.rollouts.active(MODEL)
            assert stored is not None and stored.state.rollout_id == planned.rollout_id
            events = [t.event for t in stored.state.history]
            if point.event != FINISH:
                assert events[-1] == point.event and events.count(point.event) == point.nth, events
            assert stored.state.phase == point.phase_at_crash
            cluster, weight = point.stored_weight
            assert stored.state.clusters[cluster].weight == weight
            assert fleet_now(harness, stable, candidate) == point.fleet_at_crash

            # A new process: fresh store, clusters and driver objects.
            rollouts = RolloutStore(harness.store)
            # What the fleet shows when the new driver first reports (it has reconciled by then).
            first_report: list[Fleet] = []

            def on_update(update: Update) -> None:
                if not first_report:
                    first_report.append(fleet_now(harness, stable, candidate))

            resumer = RolloutDriver(rollouts, harness.model, harness.clusters(), on_update=on_update)
            if point.stale_lease:
                with pytest.raises(UserError, match="is being driven by pid"):
                    resumer.resume()  # the dead driver's pid is this live one: refused without force
                claim = rollouts.active(MODEL)
                assert claim is not None and claim.state.driver is not None
                lease = claim.state.driver.model_copy(update={"pid": dead_pid()})
                rollouts.write(
                    claim, claim.state.model_copy(update={"driver": lease, "seq": claim.state.seq + 1})
                )
                final = resumer.resume()
            else:
                final = resumer.resume(force=True)
        finally:
            outcome = [generator.stop() for generator in loads]
    resumed_s = time.monotonic() - crashed_at

    expected = stable if point.regressed else candidate
    assert final.rollout_id == planned.rollout_id
    assert final.phase == ("rolled_back" if point.regressed else "promoted"), final.reason
    assert harness.rollouts.active(MODEL) is None
    assert harness.served() == {c: {expected} for c in CLUSTERS}
    assert harness.router_weights() == {c: {} for c in CLUSTERS}
    promoted = harness.rollouts.promoted(MODEL)
    if point.regressed:
        assert promoted is None or promoted.version != candidate
        assert final.reason and "latency" in final.reason or "p9" in (final.reason or ""), final.reason
        assert final.clusters[SECOND].status == "waiting"
    else:
        assert promoted is not None
        assert (promoted.version, promoted.previous, promoted.rollout_id) == (
            candidate,
            stable,
            planned.rollout_id,
        )

    # Only ever no split, the stable version alone, or both with the candidate at 0, a declared step or 100.
    allowed = {(), ((stable, 100),)}
    allowed |= {tuple(sorted({stable: 100 - w, candidate: w}.items())) for w in {0, *STEPS, 100}}
    assert watch.reads > 20 and not watch.failures, watch.failures[:3]
    assert {split for _, split in watch.seen} <= allowed, sorted(watch.seen)
    sent = sum(s for s, _ in outcome)
    failed = sum(e for _, e in outcome)
    assert sent > 100
    # No request was sent to a version its replica did not serve: Triton answers those itself (404
    # unknown version, 503 "not at ready state"), counted by HAProxy per server. (While a replica
    # loads a version set its health check fails for a moment; with one replica HAProxy then answers
    # 503 itself, counted in no server's row: those are most of the client's `failed`.)
    assert _replica_errors(watch.routers) == replica_errors_before

    # Each transition persisted once (the resumed driver re-runs an interrupted gate: it moved nothing).
    events = [t.event for t in final.history]
    assert events.count("driver took over") == 1
    weights = [
        (c, int(t.detail["weight"]))
        for t in final.history
        if t.event == "weight"
        for c in t.detail["clusters"]
    ]
    if point.regressed:
        assert weights == [(FIRST, STEPS[0])] and events.count("rollback") == 1
    else:
        assert weights == [(c, w) for c in CLUSTERS for w in STEPS]
        assert events.count("gate") == len(CLUSTERS) + (point.event == "gate")
    # Reconciled before anything else: every cluster the stored state had touched held its stored
    # split when the new driver first reported (skipped when it was ending: it removes the splits).
    if point.phase_at_crash in ("gate", "canary"):
        touched = {
            c: p.weight for c, p in stored.state.clusters.items() if p.status in ("canary", "promoted")
        }
        assert {c: first_report[0][c][1] for c in touched} == touched, first_report
    windows = WindowJournal(harness.store, MODEL, planned.rollout_id).records()
    for cluster in CLUSTERS:
        indices = [r.index for r in windows if r.cluster == cluster]
        assert indices == list(range(len(indices))), (cluster, indices)
    assert [r.index for r in windows if r.cluster == FIRST], "no window judged on the first wave"
    assert not [r for r in windows if "did not apply the stored split" in str(r.evidence)]
    print(
        f"\n{point.id}: crash after {crashed_at - began:.1f} s, resumed rollout {resumed_s:.1f} s, "
        f"{sent} requests ({failed} failed), {watch.reads} split reads, "
        f"splits seen {sorted({s for _, s in watch.seen})}"
    )


def _replica_errors(routers: dict[str, HAProxyRouter]) -> dict[str, int]:
    """Error responses (4xx, 5xx) the replicas themselves sent so far, per proxy backend and server,
    from HAProxy's own statistics (`show stat` CSV). A server's row counts only what that server
    answered: HAProxy's own 503 when no server is up is in the BACKEND row alone."""
    found = {}
    for cluster, router in routers.items():
        lines = router._command("show stat").splitlines()  # noqa: SLF001 - the proxy's own statistics
        columns = lines[0].removeprefix("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(columns, line.split(","), strict=False))
            if row.get("svname") not in (None, "BACKEND", "FRONTEND"):
                errors = int(row.get("hrsp_4xx") or 0) + int(row.get("hrsp_5xx") or 0)
                found[f"{cluster}/{row['pxname']}/{row['svname']}"] = errors
    return found

"""The rollout driver: takes one model from its stable version to a candidate, wave by wave, safely.

Write-ahead: every transition is persisted in the model store (state.py) BEFORE it is applied to a
router or a replica; the stored state is the truth. Whatever the driver was doing when it died
(kill -9 included), the next driver (`rollout resume`, or `rollout start` of the same version)
reconciles every touched cluster to the stored state — versions loaded, router weights — and goes
on from there; a cluster's judge gets its evidence back from the window journal (journal.py).

One rollout, in phases (RolloutState.phase):
  gate          the wave's clusters get the stable-only split ({stable: 100}, so the unversioned URL
                cannot reach the candidate: Triton would serve the highest loaded version), then both
                versions are loaded on every replica and the pre-rollout gate calls the candidate on
                each replica; a failed gate moves no traffic and rolls back (unloads the candidate).
  canary        the wave's split is at a declared step; every window the metrics of both versions are
                read, each cluster's judge and policy decide (waves.py), and the wave stays, moves to
                the next step, is promoted (100 %: the next wave starts at its gate) or rolls back.
                At both ends of a window the router's weights are compared with the stored ones; a
                proxy that lost them (restart) gets them again and that window counts as no data.
  rolling_back  every touched cluster returns to the stable version alone (split to stable first,
                then the candidate unloaded, then the split removed); ends rolled_back, or aborted.
  promoted      the old version is unloaded everywhere, the splits removed, the promotion recorded.
Router weights are only ever a declared step, 0 (stable alone) or 100.

Abort: `rollout abort` sets abort_requested in the stored state (a compare-and-swap, keeping the
driver's lease). The running driver sees it at its next window (its own next write fails the swap
and it re-reads) and rolls back; with no live driver the aborting command drives the rollback itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.objectstore import ObjectStore
from gpufleet.spec import ModelSpec, Rollout
from pipelines.engines.load import Replica, read_published
from pipelines.rollout.clusters import RolloutCluster
from pipelines.rollout.evidence import NoData, VersionWindow, WindowPair
from pipelines.rollout.gate import GateResult, run_gate
from pipelines.rollout.journal import WindowJournal, WindowRecord
from pipelines.rollout.judge import Verdict
from pipelines.rollout.policy import ActionKind, default_max_bake_seconds
from pipelines.rollout.router.base import Weights
from pipelines.rollout.state import (
    Claim,
    ClusterProgress,
    LostClaim,
    RolloutInProgress,
    RolloutSettings,
    RolloutState,
    RolloutStore,
    lease_is_live,
    new_rollout_id,
    this_driver,
)
from pipelines.rollout.waves import (
    ClusterJudgement,
    StepStart,
    WaveJudges,
    judge_settings,
    plan_waves,
    policy_settings,
)

HEARTBEAT_S = 10.0
# How long `abort` waits for a live driver to roll back by itself before it says so.
ABORT_WAIT_S = 60.0


# The pre-rollout gate (gate.run_gate), as a parameter so tests can count its calls.
Gate = Callable[[ModelSpec, ObjectStore, int, int, Sequence[Replica]], GateResult]


@dataclass(frozen=True)
class Update:
    """What the live view shows after each step of the driver."""

    state: RolloutState
    message: str
    judged: dict[str, ClusterJudgement] = field(default_factory=dict)


def settings_from_spec(rollout: Rollout, **overrides: float | None) -> RolloutSettings:
    base = {
        "min_bake_seconds": float(rollout.min_bake_seconds),
        "min_samples": rollout.min_samples,
        "no_data_deadline_seconds": float(rollout.no_data_deadline_seconds),
        "false_rollback_rate": rollout.false_rollback_rate,
        "max_error_rate": rollout.slo.max_error_rate,
        "p99_latency_ms": rollout.slo.p99_latency_ms,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "max_bake_seconds" not in base:
        base["max_bake_seconds"] = default_max_bake_seconds(float(base["min_bake_seconds"]))
    return RolloutSettings.model_validate(base)


def plan_rollout(
    model: ModelSpec,
    candidate: int,
    steps: list[int],
    settings: RolloutSettings,
    waves: list[list[str]],
    clusters: Mapping[str, RolloutCluster],
    store: ObjectStore,
    now: float,
) -> RolloutState:
    """The rollout's first state, after every check that needs no change anywhere (UserError)."""
    read_published(store, model.name, candidate)  # an unpublished version is refused here
    if not waves:
        raise UserError(
            "the fleet has no cluster this rollout can reach; start the local fleet with `gpufleet up`"
        )
    served = {name: clusters[name].served(model.name) for wave in waves for name in wave}
    odd = {name: versions for name, versions in served.items() if len(versions) != 1}
    if odd:
        name, versions = next(iter(odd.items()))
        shown = ", ".join(map(str, versions)) or "none"
        raise UserError(
            f"{model.name} on {name} serves versions [{shown}]; a rollout starts from one stable version "
            f"everywhere: `gpufleet engine load {name} {model.name} N --only` first"
        )
    stables = {versions[0] for versions in served.values()}
    if len(stables) > 1:
        shown = ", ".join(f"{n}: {v[0]}" for n, v in served.items())
        raise UserError(
            f"{model.name}: the clusters serve different versions ({shown}); load one stable version "
            "everywhere first (`gpufleet engine load CLUSTER MODEL N --only`)"
        )
    stable = stables.pop()
    if stable == candidate:
        raise UserError(
            f"{model.name} version {candidate} is already what every cluster serves; nothing to roll out"
        )
    for wave in waves:
        for name in wave:
            problem = clusters[name].refusal(model.name, [stable, candidate])
            if problem:
                raise UserError(problem)
    return RolloutState(
        rollout_id=new_rollout_id(model.name, candidate, now),
        model=model.name,
        stable=stable,
        candidate=candidate,
        steps=steps,
        waves=waves,
        clusters={name: ClusterProgress() for wave in waves for name in wave},
        started_at=now,
        updated_at=now,
        driver=this_driver(now),
        settings=settings,
    )


class _AbortArrived(Exception):
    """The stored state now asks for an abort (written by `rollout abort`): start over from it."""


class RolloutDriver:
    def __init__(
        self,
        rollouts: RolloutStore,
        model: ModelSpec,
        clusters: Mapping[str, RolloutCluster],
        *,
        gate: Gate = run_gate,
        on_update: Callable[[Update], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rollouts = rollouts
        self.model = model
        self.clusters = clusters
        self.gate = gate
        self.on_update = on_update or (lambda update: None)
        self.clock = clock
        self.sleep = sleep
        self.claim: Claim | None = None
        # (wave index, its judges, each cluster's next journal index) of the wave being baked.
        self._wave: tuple[int, WaveJudges, dict[str, int]] | None = None
        self._last_heartbeat = 0.0

    # --- entry points ---------------------------------------------------------------------------

    def start(self, state: RolloutState) -> RolloutState:
        """Take the model's lock with a new rollout and drive it to its end."""
        self.claim = self.rollouts.begin(state)
        self._persist("started", {"stable": state.stable, "candidate": state.candidate, "waves": state.waves})
        return self.run()

    def resume(self, *, force: bool = False) -> RolloutState:
        """Become the driver of the model's active rollout (its driver died) and drive it to its end."""
        claim = self.rollouts.active(self.model.name)
        if claim is None:
            raise UserError(
                f"model {self.model.name} has no rollout in progress; start one with `gpufleet rollout start`"
            )
        self.claim = self.rollouts.take_over(claim, self.clock(), force=force)
        return self.run()

    def run(self) -> RolloutState:
        while True:
            try:
                self._reconcile()
                while True:
                    state = self._state
                    if state.finished:
                        self._finish()
                        return self._state
                    if state.abort_requested and state.phase != "rolling_back":
                        self._persist(
                            "rollback",
                            {"reason": "aborted"},
                            phase="rolling_back",
                            reason="aborted by `gpufleet rollout abort`",
                        )
                    elif state.phase == "rolling_back":
                        self._roll_back()
                    elif state.phase == "gate":
                        self._gate_wave()
                    else:
                        self._bake_wave()
            except _AbortArrived:
                continue

    # --- phases ---------------------------------------------------------------------------------

    def _gate_wave(self) -> None:
        state = self._state
        wave = state.waves[state.wave_index]
        for name in wave:
            if state.clusters[name].status == "waiting":
                self._persist(
                    "loading",
                    {"cluster": name, "versions": [state.stable, state.candidate]},
                    clusters=self._state.with_cluster(name, status="canary", weight=0),
                )
            if not self._apply(name):
                return
        replicas = [r for name in wave for r in self.clusters[name].replicas()]
        self._update(f"gate: calling version {state.candidate} on {len(replicas)} replicas")
        result = self.gate(self.model, self.rollouts.store, state.stable, state.candidate, replicas)
        detail = {
            "clusters": wave,
            "passed": result.passed,
            "reason": result.reason,
            "result": result.to_dict(),
        }
        if not result.passed:
            self._persist("gate", detail, phase="rolling_back", reason=f"gate failed: {result.reason}")
            return
        self._persist("gate", detail)
        self._set_step(0, "gate passed")

    def _set_step(self, index: int, reason: str, judges: WaveJudges | None = None) -> None:
        """Persist the wave's move to step `index` (promotion at 100 %), then apply it."""
        state = self._state
        wave = state.waves[state.wave_index]
        weight = state.steps[index]
        now = self.clock()
        clusters = dict(state.clusters)
        for name in wave:
            start = judges.step_start(name) if judges else StepStart(now, 0)
            clusters[name] = clusters[name].model_copy(
                update={
                    "weight": weight,
                    "status": "promoted" if weight == 100 else "canary",
                    "step_started_at": start.at_s,
                    "canary_requests_at_step_start": start.canary_requests,
                }
            )
        changes: dict[str, Any] = {"step_index": index, "clusters": clusters, "phase": "canary"}
        if weight == 100:
            last = state.wave_index == len(state.waves) - 1
            changes.update(
                {"phase": "promoted", "reason": reason}
                if last
                else {"phase": "gate", "wave_index": state.wave_index + 1, "step_index": -1}
            )
        self._persist("weight", {"clusters": wave, "weight": weight, "reason": reason}, **changes)
        for name in wave:
            self._apply(name)

    def _bake_wave(self) -> None:
        state = self._state
        wave = state.waves[state.wave_index]
        journal = WindowJournal(self.rollouts.store, state.model, state.rollout_id)
        # The wave's judges live across its steps; a driver new to the wave rebuilds them from the journal.
        if self._wave is None or self._wave[0] != state.wave_index:
            self._wave = (state.wave_index, *self._wave_judges(state, wave, journal))
        _, judges, next_index = self._wave
        window = state.settings.window_seconds
        start = self.clock()
        while True:
            self._wait_until(start + window)
            end = self.clock()
            self._refresh()
            disturbed = {name: self._router_drifted(name) for name in wave}
            evidence = {name: self._evidence(name, start, end, disturbed[name]) for name in wave}
            judged, move = judges.judge(evidence, end)
            current = self._state
            for name in wave:
                journal.append(
                    WindowRecord(
                        cluster=name,
                        index=next_index[name],
                        start_s=start,
                        end_s=end,
                        weight=current.clusters[name].weight,
                        step_index=current.step_index,
                        evidence=evidence[name],
                        verdict=judged[name].verdict.to_dict(),
                        action={
                            "kind": judged[name].action.kind.value,
                            "weight": judged[name].action.weight,
                            "reason": judged[name].action.reason,
                        },
                    )
                )
                next_index[name] += 1
            self._update(move.reason, judged)
            if move.kind is ActionKind.ROLLBACK:
                verdict = judged[move.cluster or wave[0]].verdict
                self._persist(
                    "rollback",
                    {"cluster": move.cluster, "reason": move.reason, "verdict": _verdict_summary(verdict)},
                    phase="rolling_back",
                    reason=f"{move.cluster}: {move.reason}",
                )
                return
            if move.kind in (ActionKind.SET_WEIGHT, ActionKind.PROMOTE):
                self._set_step(current.step_index + 1, f"{move.reason}", judges)
                return
            self._heartbeat_if_due()
            start = end

    def _roll_back(self) -> None:
        state = self._state
        touched = [
            name for name, progress in state.clusters.items() if progress.status in ("canary", "promoted")
        ]
        for name in touched:  # stable alone first everywhere: seconds, before the slower unloads
            self._set_router(name, {state.stable: 100})
        for name in touched:
            self.clusters[name].serve(state.model, [state.stable])
            self.clusters[name].router.clear(state.model)
        clusters = {
            n: (p.model_copy(update={"status": "restored", "weight": 0}) if n in touched else p)
            for n, p in state.clusters.items()
        }
        phase = "aborted" if state.abort_requested else "rolled_back"
        self._persist(phase, {"restored": touched}, phase=phase, clusters=clusters)

    def _finish(self) -> None:
        state = self._state
        if state.phase == "promoted":
            for name in (n for wave in state.waves for n in wave):
                # The candidate takes every request before the old version goes: a driver that died
                # between persisting the promotion and applying it left the last wave's split below 100.
                self._set_router(name, self._weights(state, 100))
                self.clusters[name].serve(state.model, [state.candidate])
                self.clusters[name].router.clear(state.model)
            self._update(f"promoted version {state.candidate}; version {state.stable} unloaded everywhere")
        assert self.claim is not None
        self.rollouts.finish(self.claim)

    # --- reconciling ----------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Make every touched cluster match the stored state (after a crash: whatever was half done)."""
        state = self._state
        if state.finished:
            return
        for name, progress in state.clusters.items():
            if progress.status in ("canary", "promoted") and state.phase != "rolling_back":
                self._apply(name)

    def _apply(self, name: str) -> bool:
        """The cluster serves both versions with its stored split. False when that failed (the rollout
        is then rolling back)."""
        state = self._state
        progress = state.clusters[name]
        cluster = self.clusters[name]
        try:
            # The stable-only split goes in BEFORE the candidate is loaded: unsplit traffic would go to
            # the highest loaded version.
            if sorted(cluster.served(state.model)) != sorted({state.stable, state.candidate}):
                self._set_router(name, {state.stable: 100})
                cluster.serve(state.model, [state.stable, state.candidate])
            self._set_router(name, self._weights(state, progress.weight))
        except FleetRuntimeError as exc:
            self._persist(
                "rollback",
                {"cluster": name, "reason": str(exc)},
                phase="rolling_back",
                reason=f"{name}: could not apply the rollout state: {exc}",
            )
            return False
        return True

    @staticmethod
    def _weights(state: RolloutState, weight: int) -> Weights:
        return {state.stable: 100 - weight, state.candidate: weight}

    def _set_router(self, name: str, weights: Weights) -> None:
        self.clusters[name].router.set_weights(self._state.model, weights)

    def _router_drifted(self, name: str) -> bool:
        """True when the router no longer applies the stored split (it is set again at once)."""
        state = self._state
        expected = self._weights(state, state.clusters[name].weight)
        router = self.clusters[name].router
        try:
            actual = router.weights(state.model)
        except FleetRuntimeError:
            return True
        if {v: p for v, p in actual.items() if p} == {v: p for v, p in expected.items() if p}:
            return False
        self._update(f"{name}: router had {actual or 'no split'}; setting {expected} again")
        with contextlib.suppress(FleetRuntimeError):  # the next window checks again
            router.set_weights(state.model, expected)
        return True

    def _evidence(self, name: str, start: float, end: float, disturbed: bool) -> WindowPair | NoData:
        state = self._state
        if disturbed:
            return NoData(f"{name}: the router did not apply the stored split during the window")
        windows = self.clusters[name].metrics.windows(
            name, state.model, [state.stable, state.candidate], start, end
        )
        baseline, canary = windows[state.stable], windows[state.candidate]
        if isinstance(baseline, NoData):
            return baseline
        if isinstance(canary, NoData):
            return canary
        assert isinstance(baseline, VersionWindow) and isinstance(canary, VersionWindow)
        return WindowPair(baseline=baseline, canary=canary)

    def _wave_judges(
        self, state: RolloutState, wave: list[str], journal: WindowJournal
    ) -> tuple[WaveJudges, dict[str, int]]:
        """Fresh judges for the wave, given back every window the journal holds for its clusters."""
        records = {name: journal.records(name) for name in wave}
        now = self.clock()
        firsts = [r[0].start_s for r in records.values() if r]
        starts = {
            name: StepStart(
                state.clusters[name].step_started_at or now,
                state.clusters[name].canary_requests_at_step_start,
            )
            for name in wave
        }
        judges = WaveJudges(
            judge_settings(state.settings, len(state.clusters)),
            policy_settings(state.settings, state.steps),
            wave,
            state.step_index,
            starts,
            min(firsts) if firsts else now,
        )
        for name, found in records.items():
            for record in found:
                judges.replay(name, record.evidence, record.end_s)
        return judges, {name: len(found) for name, found in records.items()}

    # --- state ----------------------------------------------------------------------------------

    @property
    def _state(self) -> RolloutState:
        assert self.claim is not None
        return self.claim.state

    def _persist(self, event: str, detail: dict[str, Any], **changes: Any) -> None:
        assert self.claim is not None
        now = self.clock()
        lease = self._state.driver
        if lease is not None:
            changes["driver"] = lease.model_copy(update={"heartbeat_at": now})
        new = self._state.with_transition(event, now, detail, **changes)
        try:
            self.claim = self.rollouts.write(self.claim, new)
        except LostClaim:
            self._adopt_abort_or_stop()
            raise _AbortArrived() from None
        self._last_heartbeat = now
        self._update(event)

    def _refresh(self) -> None:
        """Read the stored state: an abort written by `rollout abort` is taken up here."""
        assert self.claim is not None
        current = self.rollouts.active(self.model.name)
        if current is None or current.token != self.claim.token:
            self._adopt_abort_or_stop()
            raise _AbortArrived()

    def _adopt_abort_or_stop(self) -> None:
        assert self.claim is not None
        mine = self._state.driver.id if self._state.driver else None
        current = self.rollouts.active(self.model.name)
        if (
            current is not None
            and current.state.rollout_id == self._state.rollout_id
            and current.state.driver is not None
            and current.state.driver.id == mine
            and current.state.abort_requested
        ):
            self.claim = current
            return
        raise LostClaim(f"rollout {self._state.rollout_id}: another driver took it over; this one stops")

    def _heartbeat_if_due(self) -> None:
        if self.clock() - self._last_heartbeat < HEARTBEAT_S:
            return
        assert self.claim is not None
        try:
            self.claim = self.rollouts.heartbeat(self.claim, self.clock())
        except LostClaim:
            self._adopt_abort_or_stop()
            raise _AbortArrived() from None
        self._last_heartbeat = self.clock()

    def _wait_until(self, moment: float) -> None:
        while (left := moment - self.clock()) > 0:
            self.sleep(min(left, 1.0))

    def _update(self, message: str, judged: dict[str, ClusterJudgement] | None = None) -> None:
        self.on_update(Update(self._state, message, judged or {}))


def _verdict_summary(verdict: Verdict) -> dict[str, object]:
    return {
        "decision": verdict.decision.value,
        "reason": verdict.reason,
        "canary_requests": verdict.canary_requests_total,
        "canary_errors": verdict.canary_errors_total,
        "baseline_requests": verdict.baseline_requests_total,
        "baseline_errors": verdict.baseline_errors_total,
    }


def request_abort(rollouts: RolloutStore, model: str, now: float) -> tuple[Claim, bool]:
    """Ask for the model's rollout to be aborted. Returns the stored claim and whether a live driver
    holds it (that driver rolls back by itself; otherwise the caller drives the rollback)."""
    claim = rollouts.active(model)
    if claim is None:
        raise UserError(f"model {model} has no rollout in progress")
    state = claim.state
    live = lease_is_live(state.driver, now)
    if not state.abort_requested and not state.finished:
        asked = state.with_transition("abort requested", now, {}, abort_requested=True)
        claim = rollouts.write(claim, asked)
    return claim, live


__all__ = [
    "ABORT_WAIT_S",
    "RolloutDriver",
    "RolloutInProgress",
    "Update",
    "plan_rollout",
    "plan_waves",
    "request_abort",
    "settings_from_spec",
]

"""Rollout state in the model store: write-ahead, one rollout per model, survives any crash.

Keys, under the store URL's prefix (`_rollouts` cannot be a model: model names start with a letter):

    _rollouts/<model>/active.json             the rollout in progress; its existence is the lock
    _rollouts/<model>/history/<rollout>.json  every finished rollout, as it ended
    _rollouts/<model>/promoted.json           the version the last successful rollout promoted

`begin` creates `active.json` with a conditional create (S3 `IfNoneMatch="*"`; moto 5.2 honours
it, DESIGN.md): a second rollout of the same model is refused. Every later transition is a
compare-and-swap on the token `begin`/`write` returned (S3 `IfMatch=<ETag>`), so a driver that lost
its claim (another one resumed the rollout) stops at its next write instead of overwriting. The
driver persists each transition *before* applying it to the router: after a kill -9 the stored
state is the truth the next driver reconciles the router to. `finish` archives the final state,
records a promotion, and only then deletes `active.json`; a crash in between leaves a terminal
`active.json` that the next `resume` finishes.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.objectstore import ObjectStore

ROLLOUTS_FOLDER = "_rollouts"
# A driver's lease goes stale when its heartbeat is this old: a driver on another host that stopped
# writing is presumed dead. On the same host a dead pid is known at once.
LEASE_STALE_S = 30.0

Phase = Literal["gate", "canary", "rolling_back", "promoted", "rolled_back", "aborted"]
TERMINAL: frozenset[str] = frozenset({"promoted", "rolled_back", "aborted"})
# waiting: untouched · canary: both versions loaded, the split is `weight` · promoted: the candidate
# takes 100 % (the stable version stays loaded until the whole rollout is promoted, so a later wave's
# failure can return it at once) · restored: back to the stable version alone.
ClusterStatus = Literal["waiting", "canary", "promoted", "restored"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriverLease(_Strict):
    id: str
    host: str
    pid: int
    heartbeat_at: float


class ClusterProgress(_Strict):
    # The canary's share on this cluster: always 0 or one of the declared steps.
    weight: int = 0
    status: ClusterStatus = "waiting"
    # Where the policy's current step began (persisted with the step, so a resumed driver keeps the bake).
    step_started_at: float | None = None
    canary_requests_at_step_start: int = 0


class RolloutSettings(_Strict):
    """What the driver judges with, fixed when the rollout starts (a resume uses the same)."""

    min_bake_seconds: float = 60.0
    min_samples: int = 200
    no_data_deadline_seconds: float = 300.0
    max_bake_seconds: float = 600.0
    window_seconds: float = 5.0
    false_rollback_rate: float = 0.05  # for the whole rollout: shared by the clusters' judges
    max_error_rate: float = 0.01
    p99_latency_ms: float = 200.0


class Transition(_Strict):
    seq: int
    at: float
    event: str  # "started", "gate passed", "step", "verdict", "rollback", "promoted", ...
    detail: dict[str, Any] = {}


class RolloutState(_Strict):
    rollout_id: str
    model: str
    stable: int
    candidate: int
    steps: list[int]
    waves: list[list[str]]
    phase: Phase = "gate"
    wave_index: int = 0
    step_index: int = -1  # -1: no canary traffic yet on the current wave
    clusters: dict[str, ClusterProgress]
    reason: str | None = None  # why it ended (or is rolling back)
    settings: RolloutSettings = RolloutSettings()
    abort_requested: bool = False  # `rollout abort` asked; the driver rolls back and ends "aborted"
    started_at: float
    updated_at: float
    driver: DriverLease | None = None
    seq: int = 0
    history: list[Transition] = []

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL

    def with_transition(
        self, event: str, now: float, detail: dict[str, Any] | None = None, **changes: Any
    ) -> RolloutState:
        """A copy with `changes` applied and the event appended to its history."""
        seq = self.seq + 1
        entry = Transition(seq=seq, at=now, event=event, detail=detail or {})
        return self.model_copy(
            update={**changes, "seq": seq, "updated_at": now, "history": [*self.history, entry]}
        )

    def with_cluster(self, cluster: str, **changes: Any) -> dict[str, ClusterProgress]:
        """The clusters map with one cluster's progress changed (for `with_transition(clusters=...)`)."""
        return {**self.clusters, cluster: self.clusters[cluster].model_copy(update=changes)}


class PromotedRecord(_Strict):
    model: str
    version: int
    previous: int
    rollout_id: str
    at: float
    clusters: list[str]


@dataclass(frozen=True)
class Claim:
    """The state as this driver last wrote or read it, and the token a next write must present."""

    state: RolloutState
    token: str


class RolloutInProgress(UserError):
    """Another rollout of the model holds the lock."""

    def __init__(self, active: RolloutState) -> None:
        self.active = active
        super().__init__(
            f"model {active.model}: rollout {active.rollout_id} "
            f"(version {active.stable} -> {active.candidate}, {active.phase}) is in progress; "
            f"wait for it, `gpufleet rollout abort {active.model}`, or "
            f"`gpufleet rollout resume {active.model}` if its driver died"
        )


class LostClaim(FleetRuntimeError):
    """Someone else wrote the rollout state since this driver's last write: this driver must stop."""


def new_rollout_id(model: str, candidate: int, now: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{model}-v{candidate}-{stamp}-{uuid.uuid4().hex[:6]}"


def this_driver(now: float) -> DriverLease:
    return DriverLease(id=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), heartbeat_at=now)


def lease_is_live(lease: DriverLease | None, now: float) -> bool:
    """Whether the driver holding the lease may still be running (then nobody else may drive)."""
    if lease is None:
        return False
    if lease.host == socket.gethostname():
        return _pid_alive(lease.pid) and now - lease.heartbeat_at < LEASE_STALE_S * 4
    return now - lease.heartbeat_at < LEASE_STALE_S


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RolloutStore:
    """Read and write rollout state for the models of one store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # --- keys ---------------------------------------------------------------------------------

    @staticmethod
    def active_key(model: str) -> str:
        return f"{ROLLOUTS_FOLDER}/{model}/active.json"

    @staticmethod
    def history_key(model: str, rollout_id: str) -> str:
        return f"{ROLLOUTS_FOLDER}/{model}/history/{rollout_id}.json"

    @staticmethod
    def promoted_key(model: str) -> str:
        return f"{ROLLOUTS_FOLDER}/{model}/promoted.json"

    # --- reads --------------------------------------------------------------------------------

    def active(self, model: str) -> Claim | None:
        found = self.store.read(self.active_key(model))
        if found is None:
            return None
        return Claim(state=self._parse(found.data, self.active_key(model)), token=found.token)

    def promoted(self, model: str) -> PromotedRecord | None:
        data = self.store.get_bytes(self.promoted_key(model))
        if data is None:
            return None
        try:
            return PromotedRecord.model_validate_json(data)
        except ValidationError as exc:
            raise FleetRuntimeError(
                f"{self.store.url}: {self.promoted_key(model)} is unreadable: {exc}"
            ) from None

    def history(self, model: str) -> list[RolloutState]:
        keys = self.store.list_keys(f"{ROLLOUTS_FOLDER}/{model}/history/")
        states = [self._parse(self.store.get_bytes(k) or b"", k) for k in keys]
        return sorted(states, key=lambda s: s.started_at)

    def find(self, model: str, rollout_id: str | None = None) -> RolloutState | None:
        """The active rollout, or a finished one by id (the newest when no id is given)."""
        claim = self.active(model)
        if claim and (rollout_id is None or claim.state.rollout_id == rollout_id):
            return claim.state
        finished = self.history(model)
        if rollout_id is None:
            return finished[-1] if finished else None
        return next((s for s in finished if s.rollout_id == rollout_id), None)

    # --- writes -------------------------------------------------------------------------------

    def begin(self, state: RolloutState) -> Claim:
        """Take the model's lock with this new rollout; RolloutInProgress when one exists."""
        key = self.active_key(state.model)
        if not self.store.create_if_absent(key, _dump(state)):
            claim = self.active(state.model)
            if claim is None:  # it finished between our create and our read: try once more
                return self.begin(state)
            raise RolloutInProgress(claim.state)
        return self._reread(state)

    def write(self, claim: Claim, state: RolloutState) -> Claim:
        """Persist the next state (compare-and-swap); LostClaim when someone wrote in between."""
        if state.seq <= claim.state.seq:
            raise ValueError(f"rollout state seq must grow ({claim.state.seq} -> {state.seq})")
        if not self.store.replace_if_unchanged(self.active_key(state.model), _dump(state), claim.token):
            current = self.active(state.model)
            holder = current.state.driver.id[:8] if current and current.state.driver else "nobody"
            raise LostClaim(
                f"rollout {state.rollout_id}: the stored state changed under this driver (now held by "
                f"driver {holder}); this driver stops, the other one carries on"
            )
        return self._reread(state)

    def take_over(self, claim: Claim, now: float, *, force: bool = False) -> Claim:
        """Make this process the rollout's driver, unless a live driver holds it (and not forced)."""
        state = claim.state
        if not force and lease_is_live(state.driver, now):
            lease = state.driver
            assert lease is not None
            raise UserError(
                f"rollout {state.rollout_id} is being driven by pid {lease.pid} on {lease.host} "
                f"(heartbeat {now - lease.heartbeat_at:.0f} s ago); stop it first or pass --force"
            )
        previous = state.driver.id[:8] if state.driver else None
        return self.write(
            claim,
            state.with_transition("driver took over", now, {"previous": previous}, driver=this_driver(now)),
        )

    def heartbeat(self, claim: Claim, now: float) -> Claim:
        state = claim.state
        if state.driver is None:
            return claim
        lease = state.driver.model_copy(update={"heartbeat_at": now})
        return self.write(claim, state.model_copy(update={"driver": lease, "seq": state.seq + 1}))

    def finish(self, claim: Claim) -> None:
        """Archive a terminal state, record a promotion, then release the lock (each step idempotent)."""
        state = claim.state
        if not state.finished:
            raise ValueError(f"rollout {state.rollout_id} is {state.phase}, not finished")
        data = _dump(state)
        history_key = self.history_key(state.model, state.rollout_id)
        if not self.store.create_if_absent(history_key, data) and self.store.get_bytes(history_key) != data:
            self.store.put_file(history_key, data, sha256=_sha256(data))
        if state.phase == "promoted":
            record = PromotedRecord(
                model=state.model,
                version=state.candidate,
                previous=state.stable,
                rollout_id=state.rollout_id,
                at=state.updated_at,
                clusters=[c for wave in state.waves for c in wave],
            )
            body = record.model_dump_json(indent=2).encode()
            self.store.put_file(self.promoted_key(state.model), body, sha256=_sha256(body))
        current = self.active(state.model)
        if current is not None and current.state.rollout_id == state.rollout_id:
            self.store.delete(self.active_key(state.model))

    # --- helpers ------------------------------------------------------------------------------

    def _reread(self, state: RolloutState) -> Claim:
        claim = self.active(state.model)
        if claim is None or claim.state != state:
            raise LostClaim(f"rollout {state.rollout_id}: the state just written is not what the store holds")
        return claim

    def _parse(self, data: bytes, key: str) -> RolloutState:
        try:
            return RolloutState.model_validate_json(data)
        except ValidationError as exc:
            raise FleetRuntimeError(
                f"{self.store.url}: {key} is not rollout state gpufleet can read "
                f"({exc.error_count()} problems); inspect it, and delete it only if no rollout is running"
            ) from None


def _dump(state: RolloutState) -> bytes:
    return json.dumps(state.model_dump(mode="json"), indent=1, sort_keys=True).encode()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()

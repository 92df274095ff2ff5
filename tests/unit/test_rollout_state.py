"""Rollout state in a real store API (moto's S3 server, Azurite): the lock, compare-and-swap, finish.

GCS is left out: its emulator ignores preconditions (see test_objectstore.py), so the lock could not
fail there; on real GCS the same code uses `if_generation_match`.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.errors import FleetRuntimeError, UserError
from gpufleet.objectstore import ObjectStore
from gpufleet.objectstore.emulators import Emulator, EmulatorKind
from pipelines.rollout import state as state_module
from pipelines.rollout.state import (
    ClusterProgress,
    LostClaim,
    RolloutInProgress,
    RolloutState,
    RolloutStore,
    new_rollout_id,
    this_driver,
)
from tests.objectstore_servers import emulator_or_skip

BUCKET = "rollout-state"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module", params=["s3", "blob"])
def emulator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    kind: EmulatorKind = request.param
    with emulator_or_skip(kind, tmp_path_factory.mktemp(f"{kind}-emulator")) as server:
        server.open(BUCKET).ensure_bucket()
        yield server


@pytest.fixture
def store(emulator: Emulator) -> ObjectStore:
    return emulator.open(BUCKET, f"t-{uuid.uuid4().hex[:8]}")


def new_state(model: str = "mlp", candidate: int = 2) -> RolloutState:
    return RolloutState(
        rollout_id=new_rollout_id(model, candidate, NOW),
        model=model,
        stable=1,
        candidate=candidate,
        steps=[1, 10, 50, 100],
        waves=[["local-a"], ["local-b"]],
        clusters={"local-a": ClusterProgress(), "local-b": ClusterProgress()},
        started_at=NOW,
        updated_at=NOW,
        driver=this_driver(NOW),
    )


def test_one_rollout_per_model(store: ObjectStore) -> None:
    rollouts = RolloutStore(store)
    first = rollouts.begin(new_state())
    with pytest.raises(RolloutInProgress) as refused:
        rollouts.begin(new_state(candidate=3))
    message = str(refused.value)
    assert first.state.rollout_id in message and "1 -> 2" in message and "rollout abort mlp" in message
    assert isinstance(refused.value, UserError)  # the CLI prints one line, exit 2
    rollouts.begin(new_state(model="other"))  # another model is not locked
    assert rollouts.active("mlp") == first


def test_each_write_is_a_compare_and_swap(store: ObjectStore) -> None:
    rollouts = RolloutStore(store)
    claim = rollouts.begin(new_state())
    moved = rollouts.write(
        claim,
        claim.state.with_transition(
            "step",
            NOW + 1,
            {"weight": 1},
            phase="canary",
            step_index=0,
            clusters=claim.state.with_cluster("local-a", weight=1, status="canary"),
        ),
    )
    assert rollouts.active("mlp") == moved
    assert moved.state.clusters["local-a"].weight == 1 and moved.state.history[-1].event == "step"
    # A driver still holding the older claim (it was resumed elsewhere) must not overwrite.
    with pytest.raises(LostClaim):
        rollouts.write(claim, claim.state.with_transition("step", NOW + 2, phase="canary", step_index=1))
    assert rollouts.active("mlp") == moved


def test_seq_must_grow(store: ObjectStore) -> None:
    rollouts = RolloutStore(store)
    claim = rollouts.begin(new_state())
    with pytest.raises(ValueError, match="seq must grow"):
        rollouts.write(claim, claim.state.model_copy(update={"phase": "canary"}))


def test_a_live_driver_is_not_taken_over_and_a_dead_one_is(store: ObjectStore) -> None:
    rollouts = RolloutStore(store)
    claim = rollouts.begin(new_state())  # this test process is the driver: alive
    with pytest.raises(UserError, match="is being driven by pid"):
        rollouts.take_over(claim, NOW + 1)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_lease = claim.state.driver.model_copy(update={"pid": int(dead.stdout)})  # type: ignore[union-attr]
    claim = rollouts.write(claim, claim.state.with_transition("killed", NOW + 1, driver=dead_lease))
    taken = rollouts.take_over(claim, NOW + 2)
    assert taken.state.driver is not None and taken.state.driver.id != dead_lease.id
    assert taken.state.history[-1].event == "driver took over"


def test_a_lease_from_another_host_goes_stale_after_its_heartbeat(store: ObjectStore) -> None:
    rollouts = RolloutStore(store)
    state = new_state()
    remote = state.driver.model_copy(update={"host": "elsewhere", "heartbeat_at": NOW})  # type: ignore[union-attr]
    claim = rollouts.begin(state.model_copy(update={"driver": remote}))
    with pytest.raises(UserError):
        rollouts.take_over(claim, NOW + state_module.LEASE_STALE_S - 1)
    assert rollouts.take_over(claim, NOW + state_module.LEASE_STALE_S + 1).state.driver.host != "elsewhere"  # type: ignore[union-attr]


def test_finish_archives_records_the_promotion_and_releases_the_lock(store: ObjectStore) -> None:
    rollouts = RolloutStore(store)
    claim = rollouts.begin(new_state())
    with pytest.raises(ValueError, match="not finished"):
        rollouts.finish(claim)
    done = rollouts.write(claim, claim.state.with_transition("promoted", NOW + 9, phase="promoted"))
    rollouts.finish(done)
    assert rollouts.active("mlp") is None
    promoted = rollouts.promoted("mlp")
    assert promoted is not None and (promoted.version, promoted.previous) == (2, 1)
    assert promoted.clusters == ["local-a", "local-b"]
    assert [s.rollout_id for s in rollouts.history("mlp")] == [done.state.rollout_id]
    assert rollouts.find("mlp") == done.state
    rollouts.finish(done)  # a rerun after a crash mid-finish changes nothing
    assert len(rollouts.history("mlp")) == 1
    rollouts.begin(new_state(candidate=3))  # the lock is free again


def test_a_rolled_back_rollout_records_no_promotion(store: ObjectStore) -> None:
    rollouts = RolloutStore(store)
    claim = rollouts.begin(new_state())
    done = rollouts.write(
        claim, claim.state.with_transition("rolled back", NOW + 5, phase="rolled_back", reason="errors")
    )
    rollouts.finish(done)
    assert rollouts.promoted("mlp") is None
    assert rollouts.history("mlp")[0].reason == "errors"


def test_unreadable_state_is_one_line_naming_the_key(store: ObjectStore, tmp_path: Path) -> None:
    rollouts = RolloutStore(store)
    store.put_file(RolloutStore.active_key("mlp"), b'{"not": "state"}', sha256="0" * 64)
    with pytest.raises(FleetRuntimeError, match=r"_rollouts/mlp/active.json is not rollout state"):
        rollouts.active("mlp")

"""`gpufleet rollout` on a real two-wave local fleet: every user mistake is one line, exit 2, no lock left.

Each mistake is checked where a user makes it, through the CLI in a subprocess; what it must leave
behind is read from the serving layer and the store themselves: the raw `active.json` key (its
existence is the model's rollout lock), each Triton's own repository index, the proxies' runtime
maps. No full rollout runs here: the state a rollout would have is written with RolloutStore.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.rollout.state import ClusterProgress, RolloutState, RolloutStore, new_rollout_id, this_driver
from tests.conftest import run_cli
from tests.rollout_fleet import FLEET, MODEL, STEPS, WAVES, Harness

pytestmark = pytest.mark.integration

CLUSTERS = [c for wave in WAVES for c in wave]


@pytest.fixture
def harness(rollout_fleet: Harness) -> Iterator[Harness]:
    """The shared fleet, checked to be as every rollout test expects it before and after."""
    stable = rollout_fleet.stable()
    assert no_lock(rollout_fleet)
    yield rollout_fleet
    assert no_lock(rollout_fleet)
    assert rollout_fleet.served() == {c: {stable} for c in CLUSTERS}
    assert rollout_fleet.router_weights() == {c: {} for c in CLUSTERS}


@pytest.fixture(scope="module")
def candidate(rollout_fleet: Harness) -> int:
    """A version published in the store and served nowhere."""
    return rollout_fleet.push()


def no_lock(harness: Harness) -> bool:
    return harness.store.get_bytes(RolloutStore.active_key(MODEL)) is None


def refused(result: subprocess.CompletedProcess[str], harness: Harness | None = None) -> str:
    """The one line a refused command printed (asserting it was one line on stderr, exit 2)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if harness is not None:
        assert no_lock(harness)
    return lines[0].removeprefix("error: ")


def test_an_unknown_model_is_refused_naming_the_known_ones(harness: Harness) -> None:
    line = refused(harness.cli("rollout", "start", "nosuch", "2"), harness)
    assert line == f"model 'nosuch' is not in the fleet file; use one of: {MODEL}"


def test_a_version_not_published_is_refused(harness: Harness) -> None:
    missing = harness.newest() + 10
    line = refused(harness.cli("rollout", "start", MODEL, str(missing)), harness)
    assert f"{MODEL} version {missing} is not published" in line
    assert "`gpufleet engine push mlp`" in line


def test_the_version_every_cluster_already_serves_is_refused(harness: Harness) -> None:
    stable = harness.stable()
    line = refused(harness.cli("rollout", "start", MODEL, str(stable)), harness)
    assert line == f"{MODEL} version {stable} is already what every cluster serves; nothing to roll out"


def test_a_max_bake_below_the_min_bake_is_refused(harness: Harness, candidate: int) -> None:
    given = harness.cli(
        "rollout", "start", MODEL, str(candidate), "--min-bake-seconds", "30", "--max-bake-seconds", "10"
    )
    assert refused(given, harness) == (
        "--max-bake-seconds 10 is below the minimum bake (30 s); give a larger one"
    )
    # Against the fleet file's own minimum bake (4 s) when only the maximum is given.
    spec_bake = harness.fleet.rollout.min_bake_seconds
    below = harness.cli("rollout", "start", MODEL, str(candidate), "--max-bake-seconds", str(spec_bake - 1))
    assert f"below the minimum bake ({spec_bake:g} s)" in refused(below, harness)


def test_clusters_serving_two_versions_or_different_ones_are_refused(
    harness: Harness, candidate: int
) -> None:
    stable = harness.stable()
    first = CLUSTERS[0]
    try:
        beside = harness.cli("engine", "load", first, MODEL, str(candidate))
        assert beside.returncode == 0, beside.stdout + beside.stderr
        assert harness.served()[first] == {stable, candidate}
        line = refused(harness.cli("rollout", "start", MODEL, str(candidate)), harness)
        assert line.startswith(
            f"{MODEL} on {first} serves versions [{min(stable, candidate)}, {max(stable, candidate)}]"
        )
        assert f"`gpufleet engine load {first} {MODEL} N --only`" in line

        unloaded = harness.cli("engine", "unload", first, MODEL, str(stable))
        assert unloaded.returncode == 0, unloaded.stdout + unloaded.stderr
        assert harness.served() == {first: {candidate}, CLUSTERS[1]: {stable}}
        line = refused(harness.cli("rollout", "start", MODEL, str(candidate)), harness)
        assert (
            f"the clusters serve different versions ({first}: {candidate}, {CLUSTERS[1]}: {stable})" in line
        )
        assert harness.served() == {first: {candidate}, CLUSTERS[1]: {stable}}  # nothing moved
    finally:
        restored = harness.cli("engine", "load", first, MODEL, str(stable), "--only")
        assert restored.returncode == 0, restored.stdout + restored.stderr


def test_resume_and_abort_with_no_rollout_in_progress(harness: Harness) -> None:
    line = refused(harness.cli("rollout", "resume", MODEL), harness)
    assert line == f"model {MODEL} has no rollout in progress; start one with `gpufleet rollout start`"
    assert (
        refused(harness.cli("rollout", "abort", MODEL), harness)
        == f"model {MODEL} has no rollout in progress"
    )


def test_a_report_of_an_unknown_rollout_is_refused(harness: Harness, tmp_path: Path) -> None:
    line = refused(harness.cli("rollout", "report", MODEL, "mlp-v9-nosuch", "--report-dir", str(tmp_path)))
    assert line == f"model {MODEL}: no rollout mlp-v9-nosuch in the store"
    assert list(tmp_path.iterdir()) == []


def test_status_of_a_model_never_rolled_out(harness: Harness, tmp_path: Path) -> None:
    # A model just added to the fleet file: the running fleet's store has nothing of it.
    fresh = "mlp-new"
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(_with_model(FLEET, fresh))
    shown = harness.cli("rollout", "status", fresh, "--json", "--file", str(fleet_file))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout) == {"rollout": None, "promoted": None}
    plain = harness.cli("rollout", "status", fresh, "--file", str(fleet_file))
    assert (plain.returncode, plain.stdout.strip(), plain.stderr) == (0, f"{fresh}: no rollout yet", "")


def _with_model(fleet: str, name: str) -> str:
    """The test fleet's file with a second model declared like the first."""
    head, models = fleet.split("models:\n", 1)
    declared, rest = models.split("rollout:\n", 1)
    return f"{head}models:\n{declared}{declared.replace(f'name: {MODEL}', f'name: {name}')}rollout:\n{rest}"


def _state(harness: Harness, candidate: int) -> RolloutState:
    now = time.time()
    return RolloutState(
        rollout_id=new_rollout_id(MODEL, candidate, now),
        model=MODEL,
        stable=harness.stable(),
        candidate=candidate,
        steps=STEPS,
        waves=WAVES,
        clusters={c: ClusterProgress() for c in CLUSTERS},
        started_at=now,
        updated_at=now,
        driver=this_driver(now),
    )


def test_status_shows_the_rollout_as_the_store_holds_it(harness: Harness, candidate: int) -> None:
    rollouts = harness.rollouts
    claim = rollouts.begin(_state(harness, candidate))
    ended = claim.state.with_transition(
        "rolled_back", time.time(), {"restored": []}, phase="rolled_back", reason="gate failed: a test"
    )
    rollouts.finish(rollouts.write(claim, ended))
    stored = next(s for s in rollouts.history(MODEL) if s.rollout_id == ended.rollout_id)
    promoted = rollouts.promoted(MODEL)

    shown = harness.cli("rollout", "status", MODEL, "--json")

    assert shown.returncode == 0, shown.stdout + shown.stderr
    found = json.loads(shown.stdout)
    assert found["rollout"] == stored.model_dump(mode="json")
    assert (found["rollout"]["phase"], found["rollout"]["reason"]) == ("rolled_back", "gate failed: a test")
    assert [t["event"] for t in found["rollout"]["history"]] == ["rolled_back"]
    assert found["promoted"] == (promoted.model_dump(mode="json") if promoted else None)
    plain = harness.cli("rollout", "status", MODEL)
    assert (
        plain.returncode == 0
        and f"rollout {stored.rollout_id}" in plain.stdout
        and "rolled_back" in plain.stdout
    )


def test_engine_load_is_refused_while_a_rollout_is_in_progress(harness: Harness, candidate: int) -> None:
    stable = harness.stable()
    rollouts = harness.rollouts
    claim = rollouts.begin(_state(harness, candidate))
    try:
        shown = harness.cli("rollout", "status", MODEL, "--json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert json.loads(shown.stdout)["rollout"] == claim.state.model_dump(mode="json")
        line = refused(harness.cli("engine", "load", CLUSTERS[0], MODEL, str(candidate)))
        assert line == (
            f"{MODEL}: rollout {claim.state.rollout_id} is in progress and decides which versions the "
            f"clusters serve; wait for it, or `gpufleet rollout abort {MODEL}`"
        )
        assert harness.served() == {c: {stable} for c in CLUSTERS}
        assert rollouts.active(MODEL) == claim  # the refusals wrote nothing either
    finally:
        harness.store.delete(RolloutStore.active_key(MODEL))


def test_with_no_fleet_running_start_says_to_run_up(tmp_path: Path, rollout_fleet: Harness) -> None:
    home = tmp_path / "fresh-home"
    result = run_cli("rollout", "start", MODEL, "2", "--home", str(home))
    assert refused(result) == f"no local fleet is running from {home}; start one with `gpufleet up`"
    assert not home.exists()  # nothing created where no fleet runs
    assert no_lock(rollout_fleet)  # and nothing reached the fleet that does run
